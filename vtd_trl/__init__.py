"""Verification-then-Distillation (VtD) on TRL."""

from .config import VtDConfig
from .trainer import VtDTrainer

__version__ = "0.1.0"

__all__ = ["VtDConfig", "VtDTrainer"]
