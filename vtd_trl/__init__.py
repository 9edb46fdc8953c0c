"""Verification-then-Distillation (VtD) on TRL: `VtDConfig` and `VtDTrainer`, loaded on first use."""

__version__ = "0.1.0"

__all__ = ["VtDConfig", "VtDTrainer"]


def __getattr__(name: str):
    # Lazy, so that `vtd_trl.verify` and `vtd_trl.data` load without torch and TRL (verifier worker processes).
    if name == "VtDConfig":
        from .config import VtDConfig

        return VtDConfig
    if name == "VtDTrainer":
        from .trainer import VtDTrainer

        return VtDTrainer
    raise AttributeError(f"module 'vtd_trl' has no attribute {name!r}")
