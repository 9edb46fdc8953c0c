"""The GRPO internals VtD overrides or reads, pinned to the TRL series it was tested with (see pyproject.toml).

VtDTrainer overrides private methods of `GRPOTrainer` and reads attributes its `__init__` sets. A TRL release may
rename or re-sign them without notice; these tests say which one moved instead of failing deep inside a run.
"""

import inspect
from pathlib import Path

import pytest
import trl
from conftest import arithmetic_rows
from packaging.requirements import Requirement
from test_trainer import generation_batch, make_trainer
from trl import GRPOTrainer
from trl.kernels import ChunkedLogProbFunction

TESTED = "trl 1.16"

# name -> the parameters (after self) VtD's code relies on, in order
SIGNATURES = {
    (GRPOTrainer, "_generate_and_score_completions"): ["inputs"],
    (GRPOTrainer, "_calculate_rewards"): ["inputs", "prompts", "completions", "completion_ids_list"],
    (GRPOTrainer, "_get_per_token_logps_and_entropies"): ["model", "input_ids", "attention_mask", "logits_to_keep"],
    (GRPOTrainer, "_compute_loss"): ["model", "inputs"],
    # `_sequence_logps_from_hidden` calls it positionally
    (ChunkedLogProbFunction, "forward"): [
        "hidden",
        "weight",
        "bias",
        "targets",
        "temperature",
        "chunk_size",
        "final_logit_softcapping",
        "logit_scale",
        "outputs",
    ],
}

# Attributes GRPOTrainer.__init__ sets and VtDTrainer reads
ATTRIBUTES = [
    "_tokenizer",
    "eos_token_ids",
    "chat_template",
    "chat_template_kwargs",
    "tools",
    "_metrics",
    "max_completion_length",
    "num_generations",
    "num_generations_eval",
    "use_vllm",
    "vllm_importance_sampling_correction",
    "aux_loss_enabled",
    "router_aux_loss_coef",
]

# Keys of `_generate_and_score_completions`'s output that VtD reads
OUTPUT_KEYS = ["prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "num_items_in_batch"]


@pytest.mark.parametrize(("owner", "name"), list(SIGNATURES), ids=lambda x: getattr(x, "__name__", x))
def test_overridden_and_called_internals_keep_their_signatures(owner, name):
    expected = SIGNATURES[(owner, name)]
    method = getattr(owner, name, None)
    assert method is not None, (
        f"{owner.__name__}.{name} no longer exists in trl {trl.__version__} (VtD was tested with {TESTED}); "
        "VtDTrainer's override or call of it is dead. Port vtd_trl/trainer.py to the new TRL or pin trl."
    )
    params = [p for p in inspect.signature(method).parameters if p not in ("self", "ctx")]
    assert params[: len(expected)] == expected, (
        f"{owner.__name__}.{name} changed its signature in trl {trl.__version__} (VtD was tested with {TESTED}): "
        f"expected {expected} first, got {params}. Port vtd_trl/trainer.py to the new TRL or pin trl."
    )


def test_grpo_sets_the_attributes_and_outputs_vtd_reads(model_dirs, tmp_path):
    trainer = make_trainer(model_dirs, tmp_path)
    missing = [name for name in ATTRIBUTES if not hasattr(trainer, name)]
    assert not missing, (
        f"GRPOTrainer in trl {trl.__version__} no longer sets {missing} (VtD was tested with {TESTED}). Port "
        "vtd_trl/trainer.py to the new TRL or pin trl."
    )
    rows = arithmetic_rows(2)
    output = generation_batch(trainer, rows)
    missing = [key for key in OUTPUT_KEYS if key not in output]
    assert not missing, (
        f"GRPO's generation output in trl {trl.__version__} lacks {missing} (VtD was tested with {TESTED})."
    )
    assert output["completion_ids"].shape[0] == len(rows) * 4


def test_pyproject_bounds_trl_to_the_tested_series():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    (requirement,) = [Requirement(r) for r in pyproject["project"]["dependencies"] if r.startswith("trl")]
    major, minor = map(int, TESTED.split()[1].split("."))
    assert requirement.specifier.contains(f"{major}.{minor}.0")
    assert not requirement.specifier.contains(f"{major}.{minor + 1}.0"), f"{requirement} admits an untested series"
    assert requirement.specifier.contains(trl.__version__), f"installed trl {trl.__version__} is outside {requirement}"
