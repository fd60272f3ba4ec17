"""Training LCIRC adapters: stage 1 (language modelling) and stage 2 (QD question answering)."""

from .bptt import BPTT_MODES, compress_for_training, steps_with_gradient
from .config import TrainConfig
from .trainer import Trainer, TrainingDivergedError

__all__ = ["BPTT_MODES", "TrainConfig", "Trainer", "TrainingDivergedError", "compress_for_training", "steps_with_gradient"]
