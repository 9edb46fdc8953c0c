"""Verification-then-Distillation (VtD) on TRL."""

__version__ = "0.1.0"
