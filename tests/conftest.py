"""Shared fixtures: tiny Qwen3-architecture models with a tokenizer built in code, saved to a temp dir."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402

from vtd_trl.demo.models import tiny_qwen3  # noqa: E402
from vtd_trl.demo.tokenizer import build_char_tokenizer  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory, tokenizer):
    """Paths of a tiny student (hidden 32) and a wider tiny teacher (hidden 48), both with the tokenizer saved."""
    root = tmp_path_factory.mktemp("models")
    paths = {}
    for name, seed, hidden in (("student", 0, 32), ("teacher", 1, 48)):
        path = root / name
        tiny_qwen3(tokenizer, hidden_size=hidden, seed=seed).save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths[name] = str(path)
    return paths


def arithmetic_rows(n: int, start: int = 0) -> list[dict]:
    """Addition prompts in VtD's columns, with a reference solution ending in a boxed answer."""
    rows = []
    for i in range(start, start + n):
        a, b = 10 + i, 3 + 2 * i
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"What is {a}+{b}?"}],
                "answer": str(a + b),
                "reference": f"{a}+{b}={a + b}. \\boxed{{{a + b}}}",
            }
        )
    return rows


@pytest.fixture
def dataset():
    return Dataset.from_list(arithmetic_rows(8))


def vtd_args(output_dir, **overrides):
    """A VtDConfig sized for the tiny models on CPU."""
    from vtd_trl import VtDConfig

    defaults = dict(
        output_dir=str(output_dir),
        num_generations=4,
        per_device_train_batch_size=8,
        max_completion_length=16,
        max_steps=2,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        bf16=False,
        use_cpu=True,
        disable_dropout=True,
        gradient_checkpointing=False,
        seed=0,
    )
    defaults.update(overrides)
    return VtDConfig(**defaults)


def fixed_rollout(completion_text):
    """A GRPO `rollout_func` returning `completion_text(prompt_text, position_in_group, global_row)` for every row.

    Completions then depend only on the prompt, the position of the completion in its group and its row in the
    global generation batch, not on how the batch is split across processes, which makes runs with different
    layouts comparable. A text ending in "..." gets no EOS: a truncated completion.
    """

    def rollout(prompts, trainer):
        tokenizer = trainer.processing_class
        group_size = trainer.num_generations if trainer.model.training else trainer.num_generations_eval
        offset = trainer.accelerator.process_index * len(prompts)
        prompt_ids = tokenizer.apply_chat_template(prompts, add_generation_prompt=True, tokenize=True)
        if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "keys"):
            prompt_ids = prompt_ids["input_ids"]
        completion_ids = []
        for i, prompt in enumerate(prompts):
            text = completion_text(prompt[-1]["content"], (offset + i) % group_size, offset + i)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            completion_ids.append(ids if text.endswith("...") else ids + [tokenizer.eos_token_id])
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}

    return rollout
