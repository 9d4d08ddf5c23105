"""The classical stages of the cascade; the neural detector stage joins them later."""

from worker.engine.stages.fast import FastStage
from worker.engine.stages.thorough import ThoroughStage

__all__ = ["FastStage", "ThoroughStage"]
