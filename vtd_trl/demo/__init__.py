"""Offline demo: a toy reasoning task, a tokenizer built in code and tiny Qwen3-architecture models."""
