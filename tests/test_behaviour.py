"""Fixed-seed 3-step runs whose final parameters and logged metrics are recorded: a change that moves code without
changing the method must reproduce them bit for bit. Re-record (only for an intended change of behaviour) with
`VTD_RECORD_BEHAVIOUR=1 python -m pytest tests/test_behaviour.py`."""

import json
import math
import os
import re
from pathlib import Path

import pytest
import torch
from conftest import arithmetic_rows, fixed_rollout, vtd_args
from datasets import Dataset
from safetensors.torch import load_file, save_file

from vtd_trl import VtDTrainer

FIXTURES = Path(__file__).parent / "fixtures"
K = 4


def completions(prompt_text: str, position: int, row: int) -> str:
    """Right, wrong, cut and unanswered completions; every third prompt has no correct one."""
    a, b = (int(x) for x in re.findall(r"\d+", prompt_text))
    right, wrong = f"{a}+{b}={a + b}. \\boxed{{{a + b}}}", f"{a}+{b}={a + b + 1}. \\boxed{{{a + b + 1}}}"
    if (row // K) % 3 == 2:
        return [wrong, "7", f"{a}+{b}=...", "no idea"][position]
    return [right, wrong, f"\\boxed{{{a + b}}}", f"{a}+{b}={a}..."][position]


class Lopsided(VtDTrainer):
    """The first half of each generation batch is only distilled, the second half only contrasted."""

    def route(self, rewards, inputs):
        first_half = torch.arange(len(rewards), device=rewards.device) < len(rewards) // 2
        verified = ~torch.isnan(rewards)
        return verified & first_half, verified & (rewards < 0.5) & ~first_half


RUNS = {
    "tuned": (
        VtDTrainer,
        dict(
            vtd_distill_incorrect=True,
            vtd_contrast_beta=3.0,
            vtd_chosen_source="sibling_then_reference",
            vtd_chosen_nll_weight=1.0,
            vtd_chosen_nll_source="sibling",
        ),
    ),
    "lopsided": (Lopsided, {}),
}


def run(model_dirs, tmp_path, name):
    trainer_cls, overrides = RUNS[name]
    args = vtd_args(
        tmp_path / name,
        num_generations=K,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_completion_length=48,
        max_steps=3,
        **overrides,
    )
    trainer = trainer_cls(
        model=model_dirs["student"],
        teacher_model=model_dirs["teacher"],
        args=args,
        train_dataset=Dataset.from_list(arithmetic_rows(6)),
        rollout_func=fixed_rollout(completions),
    )
    trainer.train()
    parameters = {k: v.detach().clone().contiguous() for k, v in trainer.model.named_parameters()}
    timing = re.compile("runtime|per_second|time")
    logs = [{k: v for k, v in entry.items() if not timing.search(k)} for entry in trainer.state.log_history]
    return parameters, logs


@pytest.mark.parametrize("name", list(RUNS))
def test_a_fixed_seed_run_reproduces_its_recorded_parameters_and_metrics(model_dirs, tmp_path, name):
    parameters, logs = run(model_dirs, tmp_path, name)
    weights_file, logs_file = FIXTURES / f"behaviour_{name}.safetensors", FIXTURES / f"behaviour_{name}.json"
    if os.environ.get("VTD_RECORD_BEHAVIOUR") == "1":
        FIXTURES.mkdir(exist_ok=True)
        save_file(parameters, weights_file)
        logs_file.write_text(json.dumps(logs, indent=1) + "\n")
    recorded = load_file(weights_file)
    assert recorded.keys() == parameters.keys()
    for key, value in parameters.items():
        assert torch.equal(value, recorded[key]), f"{key}: max difference {(value - recorded[key]).abs().max()}"
    recorded_logs = json.loads(logs_file.read_text())
    assert len(logs) == len(recorded_logs)
    for entry, expected in zip(logs, recorded_logs):
        assert entry.keys() == expected.keys()
        for key, value in expected.items():
            same = value == entry[key] or (isinstance(value, float) and math.isnan(value) and math.isnan(entry[key]))
            assert same, f"{key}: {entry[key]} against the recorded {value}"
    # The runs exercise both loss terms
    assert any(entry.get("vtd/distill_loss", 0) > 0 for entry in logs)
    assert any(entry.get("vtd/contrast_loss", 0) > 0 for entry in logs)
