"""The cascade's stages: fast, the detectors (small, medium), thorough."""

from worker.engine.stages.detect import DetectorStage
from worker.engine.stages.fast import FastStage
from worker.engine.stages.thorough import ThoroughStage

__all__ = ["DetectorStage", "FastStage", "ThoroughStage"]
