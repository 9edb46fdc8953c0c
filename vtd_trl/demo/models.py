"""Tiny Qwen3-architecture models, built from a config (no download), and the shipped demo teacher and student."""

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase, Qwen3Config

from vtd_trl.demo.task import TASKS

ASSETS_DIR = Path(__file__).parent / "assets"
DEMO = "vtd-demo"  # dataset name and model prefix (`vtd-demo/student`, `vtd-demo/teacher`) of the offline demo
DEMO_ROLES = ("student", "teacher", "teacher_imperfect")


def tiny_qwen3(
    tokenizer: PreTrainedTokenizerBase,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int | None = None,
    seed: int = 0,
    **config_kwargs,
) -> torch.nn.Module:
    """A randomly initialised `Qwen3ForCausalLM` whose vocabulary matches `tokenizer`."""
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=hidden_size // num_attention_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        **config_kwargs,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def demo_model_path(role: str, task: str = "additions") -> str:
    """Path of the shipped demo `role` (`"student"`, `"teacher"` or `"teacher_imperfect"`) of `task`: a model
    directory with its tokenizer.

    `task` is `"additions"` (the demo's task) or `"groups"` (the held-out task, `assets/groups/`). All were made by
    `python -m vtd_trl.demo.pretrain` (see `vtd_trl/demo/README.md`) and load with `from_pretrained`, e.g.
    `VtDTrainer(model=demo_model_path("student"), teacher_model=demo_model_path("teacher"))`.
    """
    if role not in DEMO_ROLES:
        raise ValueError(f"role={role!r} is not a demo model; use one of {DEMO_ROLES}.")
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not a demo task; use one of {TASKS}.")
    assets = ASSETS_DIR if task == "additions" else ASSETS_DIR / task
    path = assets / role
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"The demo {role} is missing from {path}; reinstall vtd-trl, or rebuild it with "
            f"`python -m vtd_trl.demo.pretrain --task {task} --output-dir {assets}`."
        )
    return str(path)


def resolve_model(name: str) -> str:
    """`vtd-demo/<role>` (e.g. `vtd-demo/student`) is the shipped demo model's path; any other name, or a value that
    is not a string (an instantiated model), is returned as is."""
    if isinstance(name, str) and name.startswith(f"{DEMO}/"):
        return demo_model_path(name.split("/", 1)[1])
    return name
