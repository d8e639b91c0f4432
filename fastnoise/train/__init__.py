"""Training: Learn2Perturb, PNI, PGD-AT, RFGSM, NFGSM (+PNIL) and plain training.

``fit(TrainConfig.from_preset("pnil-mnist", epochs=5))`` or ``fastnoise train --preset
pnil-mnist --epochs 5``; ``torchrun --nproc_per_node=N -m fastnoise train ...`` for DDP.
"""

from fastnoise.train.checkpoint import atomic_save, load_checkpoint, load_model
from fastnoise.train.config import METHODS, PRESETS, TrainConfig
from fastnoise.train.methods import TrainingMethod
from fastnoise.train.registry import build_method
from fastnoise.train.run_folder import OutputFolderInUseError, ResumeMismatchError
from fastnoise.train.schedules import harmonic_tau, learning_rate, noise_enabled
from fastnoise.train.trainer import NonFiniteLossError, Trainer, TrainResult, fit, model_config_for

__all__ = [
    "METHODS",
    "PRESETS",
    "NonFiniteLossError",
    "OutputFolderInUseError",
    "ResumeMismatchError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingMethod",
    "atomic_save",
    "build_method",
    "fit",
    "harmonic_tau",
    "learning_rate",
    "load_checkpoint",
    "load_model",
    "model_config_for",
    "noise_enabled",
]
