"""The cascade's stages: fast, the detectors (small, medium), thorough, zoom."""

from worker.engine.stages.detect import DetectorStage
from worker.engine.stages.fast import FastStage
from worker.engine.stages.thorough import ThoroughStage
from worker.engine.stages.zoom import ZoomStage

__all__ = ["DetectorStage", "FastStage", "ThoroughStage", "ZoomStage"]
