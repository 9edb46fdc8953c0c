"""VtD on 2 CPU processes (gloo) under DDP, DeepSpeed ZeRO-2 / ZeRO-3 and FSDP2 gives what 1 process gives.

Each mode launches tests/scripts/sharded_steps.py once with its accelerate config from recipes/accelerate/cpu/: two
optimizer steps of 2 accumulation steps each, on a fixed rollout split so that one process holds only DPO pairs and
the other only distillation rows. Under ZeRO-3 and FSDP2 the same processes then run the demo command.
"""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType
from conftest import arithmetic_rows, fixed_rollout, vtd_args
from datasets import Dataset
from test_trainer import K, mixed_completions
from torch.distributed.tensor import DTensor, Shard
from transformers import AutoModelForCausalLM, AutoTokenizer

from vtd_trl import VtDTrainer
from vtd_trl.setup import init_kwargs
from vtd_trl.train import allow_fsdp_on_cpu

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "accelerate" / "cpu"
DEMO_ARGS = ["--config", str(ROOT / "recipes" / "demo.yaml"), "--use_cpu", "false", "--ddp_backend", "gloo",
             "--max_steps", "1", "--per_device_train_batch_size", "16", "--demo_train_rows", "8",
             "--demo_eval_rows", "8"]  # fmt: skip


def split_completions(prompt_text: str, position: int, row: int) -> str:
    """Rows 0-7 of the generation batch of 16 all wrong, rows 8-15 all correct."""
    return mixed_completions(prompt_text, 2 * (position % 2) + (row < 8))


def train_two_steps(model_dirs, output_dir, per_device: int, sharded: bool = False, **overrides) -> VtDTrainer:
    """Two SGD steps, each one generation batch of 16 completions in 2 accumulation steps per process.

    `sharded`: under DeepSpeed or FSDP, which accelerate applies on CPU only with `use_cpu=False` and gloo.
    `overrides`: more `VtDConfig` fields (e.g. a teacher server, which replaces the local teacher).
    """
    args = vtd_args(
        output_dir,
        num_generations=K,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=2,
        max_steps=2,
        optim="sgd",
        learning_rate=1.0,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1e6,  # no clipping, but the norm is logged
        use_cpu=not sharded,
        ddp_backend="gloo" if sharded else None,
        **overrides,
    )
    if sharded:
        allow_fsdp_on_cpu(args)
    trainer = VtDTrainer(
        model=model_dirs["student"],
        teacher_model=None if args.teacher_server_base_url else model_dirs["teacher"],
        args=args,
        train_dataset=Dataset.from_list(arithmetic_rows(8)),
        rollout_func=fixed_rollout(split_completions),
    )
    trainer.train()
    return trainer


def full_state_dict(model) -> dict[str, torch.Tensor]:
    """Every parameter whole (a collective under ZeRO-3 and FSDP2: all processes call it)."""
    params = dict(model.named_parameters())
    if any(hasattr(p, "ds_id") for p in params.values()):
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(params.values())):
            return {name: p.detach().clone() for name, p in params.items()}
    return {name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone() for name, p in params.items()}


def sharding(model, trainer) -> dict:
    """How a prepared model holds its parameters on this process."""
    params = list(trainer.accelerator.unwrap_model(model).parameters())
    # ZeRO-3 keeps a parameter under `stage3_param_persistence_threshold` whole on every process (`ds_persist`)
    zero3 = [hasattr(p, "ds_tensor") and not p.ds_persist and p.ds_tensor.numel() < p.ds_numel for p in params]
    dtensor = [
        isinstance(p, DTensor) and p.placements == (Shard(0),) and p.to_local().numel() < p.numel() for p in params
    ]
    facts = {"wrapper": type(model).__name__, "parameters": len(params), "zero3": sum(zero3), "dtensor": sum(dtensor)}
    if hasattr(model, "zero_optimization_stage"):
        facts["zero_stage"] = model.zero_optimization_stage()
    partitions = getattr(getattr(model, "optimizer", None), "single_partition_of_fp32_groups", None)
    if partitions:  # ZeRO-1/2: this process's share of the fp32 master weights
        facts["optimizer_share"] = sum(p.numel() for p in partitions) / sum(p.numel() for p in params)
    return facts


# ---------------------------------------------------------------------------------------------------- launches


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_launched: dict[str, dict] = {}


@pytest.fixture(scope="module")
def launch(model_dirs, tmp_path_factory):
    """`launch(mode)`: the result of sharded_steps.py on 2 processes under recipes/accelerate/cpu/{mode}.yaml, run
    once per mode (with the FSDP2 head-unit rerun and, under ZeRO-3 and FSDP2, the demo)."""

    def run(mode: str) -> dict:
        if mode not in _launched:
            out = tmp_path_factory.mktemp(mode)
            options = {"fsdp2": ["--head-unit", "--demo", *DEMO_ARGS, "--output_dir", str(out / "demo")],
                       "zero3": ["--demo", *DEMO_ARGS, "--output_dir", str(out / "demo")]}.get(mode, [])  # fmt: skip
            command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / f"{mode}.yaml"),
                       "--main_process_port", str(free_port()), str(ROOT / "tests" / "scripts" / "sharded_steps.py"),
                       str(Path(model_dirs["student"]).parent), str(out), *options]  # fmt: skip
            env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu"}
            result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            if result.returncode != 0:  # kept, so that the other tests of this mode fail at once
                _launched[mode] = {"error": result.stdout[-2000:] + result.stderr[-4000:]}
            else:
                _launched[mode] = {**torch.load(out / "result.pt"), "out": out, "stdout": result.stdout}
        if "error" in _launched[mode]:
            pytest.fail(f"The {mode} launch failed:\n{_launched[mode]['error']}")
        return _launched[mode]

    return run


@pytest.fixture(scope="module")
def one_process(model_dirs, tmp_path_factory) -> dict:
    trainer = train_two_steps(model_dirs, tmp_path_factory.mktemp("one"), per_device=8)
    steps = [(entry["loss"], entry["grad_norm"]) for entry in trainer.state.log_history if "loss" in entry]
    return {"steps": steps, "student": full_state_dict(trainer.model)}


def initial(path) -> dict[str, torch.Tensor]:
    return dict(AutoModelForCausalLM.from_pretrained(path).named_parameters())


# ---------------------------------------------------------------------------------------------------- tests

MODES = ["ddp", "zero2", "zero3", "fsdp2"]


def assert_matches_one_process(result, one_process, model_dirs):
    assert len(result["steps"]) == len(one_process["steps"]) == 2
    for step, ((loss, grad_norm), (loss_1, grad_norm_1)) in enumerate(zip(result["steps"], one_process["steps"])):
        assert loss == pytest.approx(loss_1, rel=1e-4), f"loss of step {step + 1}"
        assert grad_norm == pytest.approx(grad_norm_1, rel=1e-4), f"grad-norm of step {step + 1}"
    before = initial(model_dirs["student"])
    for name in before:
        update, update_1 = before[name] - result["student"][name], before[name] - one_process["student"][name]
        assert update_1.abs().max() > 1e-6, name  # every parameter learns, so a lost gradient shows
        torch.testing.assert_close(update, update_1, rtol=1e-4, atol=1e-7, msg=name)


def assert_mode_is_active(mode: str, result: dict) -> None:
    """A silent fallback to DDP (or to one process each) fails here."""
    assert result["num_processes"] == 2
    student, teacher, reference = (result["sharding"][role] for role in ("student", "teacher", "reference"))
    if mode == "ddp":
        assert result["distributed_type"] == str(DistributedType.MULTI_CPU)
        assert student["wrapper"] == "DistributedDataParallel"
    elif mode == "zero2":  # the optimizer's states are partitioned; TRL keeps frozen models whole (stage 0)
        assert result["distributed_type"] == str(DistributedType.DEEPSPEED)
        assert student["zero_stage"] == 2 and student["optimizer_share"] == pytest.approx(0.5, abs=0.01)
        assert teacher["wrapper"] == reference["wrapper"] == "DeepSpeedEngine"
    else:
        kind = "zero3" if mode == "zero3" else "dtensor"
        for role, facts in result["sharding"].items():
            assert facts[kind] == facts["parameters"] == 25, (role, facts)  # every parameter partitioned


@pytest.mark.parametrize("mode", MODES)
def test_two_processes_match_one(mode, launch, one_process, model_dirs):
    """The mode is active, and the loss and grad-norm of each step and the student's update equal the 1-process
    run's (rel 1e-4)."""
    result = launch(mode)
    assert_mode_is_active(mode, result)
    assert_matches_one_process(result, one_process, model_dirs)


@pytest.mark.parametrize("mode", MODES)
def test_teacher_and_reference_stay_bit_identical(mode, launch, model_dirs):
    result = launch(mode)
    for role, path in (("teacher", model_dirs["teacher"]), ("reference", model_dirs["student"])):
        for name, p in initial(path).items():
            assert torch.equal(result[role][name], p.detach()), (role, name)


@pytest.mark.parametrize("mode", MODES)
def test_save_loads_with_from_pretrained(mode, launch):
    """`save_model` writes the whole trained student (ZeRO-3: gathered 16-bit weights; FSDP2: full state dict)."""
    result = launch(mode)
    saved = initial(result["out"] / "saved")
    assert saved.keys() == result["student"].keys()
    for name, p in saved.items():
        assert torch.equal(p.detach(), result["student"][name]), name


def test_fsdp2_lm_head_as_its_own_unit(launch, one_process, model_dirs):
    """With every Linear its own FSDP unit the LM head's unit never runs a forward; its gradient is still reduced
    over both processes (before the fix each process kept its own share: grad-norm 0.193 instead of 0.158).
    accelerate's default puts the head in one unit with the final norm, which runs."""
    result = launch("fsdp2")["head_unit"]
    assert result["head_unit_parameters"] == 1 and launch("fsdp2")["head_unit_parameters"] == 2
    assert_mode_is_active("fsdp2", result)
    assert_matches_one_process(result, one_process, model_dirs)


@pytest.mark.parametrize("mode", ["zero3", "fsdp2"])
def test_demo_command_under_sharding(mode, launch):
    """`scripts/vtd.py --config recipes/demo.yaml` on 2 processes: the held-out accuracies it prints are those of
    the shipped student and of its saved, trained student, each evaluated whole on the main process."""
    from vtd_trl.demo.evaluate import evaluate
    from vtd_trl.demo.models import demo_model_path
    from vtd_trl.demo.task import demo_dataset

    result = launch(mode)
    assert f"2 processes, {'DeepSpeed ZeRO-3' if mode == 'zero3' else 'FSDP'} on CPU" in result["stdout"]
    line = next(x for x in result["stdout"].splitlines() if x.startswith("Held-out greedy accuracy (8 problems)"))
    before, after, teacher = (float(v) / 100 for v in re.findall(r"([\d.]+)%", line))
    held_out = demo_dataset("test", 8)
    output_dir = result["out"] / "demo"
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    shipped = AutoModelForCausalLM.from_pretrained(demo_model_path("student"))
    trained = AutoModelForCausalLM.from_pretrained(output_dir)
    assert before == pytest.approx(evaluate(shipped, tokenizer, held_out).accuracy, abs=6e-4)
    assert after == pytest.approx(evaluate(trained, tokenizer, held_out).accuracy, abs=6e-4)
    assert teacher > before
    assert any(not torch.equal(a, b) for a, b in zip(shipped.state_dict().values(), trained.state_dict().values()))


@pytest.mark.parametrize("distributed_type", list(DistributedType))
def test_frozen_models_load_without_device_map_when_distributed(distributed_type):
    """Only a single process may let transformers place a teacher or reference with `device_map="auto"`."""
    args = SimpleNamespace(
        distributed_state=SimpleNamespace(distributed_type=distributed_type), trust_remote_code=False
    )
    kwargs = init_kwargs({"device_map": "auto"}, args)
    assert kwargs["device_map"] == ("auto" if distributed_type == DistributedType.NO else None)


def test_two_processes_with_a_teacher_server_match_one(model_dirs, tmp_path, tokenizer):
    """DDP with a served teacher: each process sends its own distilled rows (here one process has none), and the
    loss, grad-norm and update equal one process's with the same server."""
    from vtd_trl.demo.teacher_server import load, serving

    vocab = str(len(tokenizer))
    with serving(load(model_dirs["teacher"], max_logprobs=len(tokenizer))) as server:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "ddp.yaml"),
                   "--main_process_port", str(free_port()), str(ROOT / "tests" / "scripts" / "sharded_steps.py"),
                   str(Path(model_dirs["student"]).parent), str(tmp_path / "two"), "--teacher-server", server.url,
                   vocab]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-4000:]
        # 2 start-up probes, then per step one request from the process that holds the distilled rows
        assert server.requests.count("/v1/completions") == 2 + 2
        one = train_two_steps(model_dirs, tmp_path / "one", per_device=8, teacher_server_url=server.url,
                              vtd_distill_top_k=int(vocab))  # fmt: skip
    two = torch.load(tmp_path / "two" / "result.pt")
    assert two["num_processes"] == 2
    steps = [(entry["loss"], entry["grad_norm"]) for entry in one.state.log_history if "loss" in entry]
    assert_matches_one_process(two, {"steps": steps, "student": full_state_dict(one.model)}, model_dirs)


def zero3_steps(model_dirs, out, *options) -> dict:
    """sharded_steps.py under ZeRO-3 with `options`; its result."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "zero3.yaml"),
               "--main_process_port", str(free_port()), str(ROOT / "tests" / "scripts" / "sharded_steps.py"),
               str(Path(model_dirs["student"]).parent), str(out), *options]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return torch.load(out / "result.pt")


def test_zero3_with_the_local_teachers_top_k_matches_one_process(model_dirs, tmp_path, tokenizer, one_process):
    """ZeRO-3 with the local teacher's top-k signal (its head gathered for the top-k at generation): at k = the
    vocabulary it matches the dense one-process run."""
    result = zero3_steps(model_dirs, tmp_path, "--top-k", str(len(tokenizer)))
    assert result["top_k"] == len(tokenizer)
    assert_mode_is_active("zero3", result)
    assert_matches_one_process(result, one_process, model_dirs)


def test_zero3_with_trls_kernel_matches_one_process(model_dirs, tmp_path, one_process):
    """The `trl` backend (CUDA's `auto`) under ZeRO-3, one process holding only DPO pairs: TRL's kernel gathers the
    LM heads again in its backward, which would wait on that process; run inside the forward call, it matches."""
    result = zero3_steps(model_dirs, tmp_path, "--backend", "trl")
    assert_mode_is_active("zero3", result)
    assert_matches_one_process(result, one_process, model_dirs)


def test_zero3_with_chosen_sequence_distillation_matches_one_process(model_dirs, tmp_path):
    """The teacher scores the chosen sequences in the loss, a collective under ZeRO-3: the process holding only DPO
    pairs has chosen sequences, the other none, and both must join its forward and head gather."""
    result = zero3_steps(model_dirs, tmp_path / "two", "--chosen-distill", "0.5")
    assert_mode_is_active("zero3", result)
    one = train_two_steps(model_dirs, tmp_path / "one", per_device=8, vtd_chosen_distill_weight=0.5)
    steps = [(entry["loss"], entry["grad_norm"]) for entry in one.state.log_history if "loss" in entry]
    assert_matches_one_process(result, {"steps": steps, "student": full_state_dict(one.model)}, model_dirs)


def test_zero3_teacher_generation_for_chosen_sequences_matches_one_process(model_dirs, tmp_path):
    """The teacher generates for the prompts without a correct sibling, all on one process: the other joins the
    gathered generation with a dummy prompt, and the run matches one process."""
    result = zero3_steps(model_dirs, tmp_path / "two", "--teacher-generation")
    assert_mode_is_active("zero3", result)
    one = train_two_steps(
        model_dirs, tmp_path / "one", per_device=8, vtd_chosen_source="sibling", vtd_chosen_teacher_generation=True
    )
    steps = [(entry["loss"], entry["grad_norm"]) for entry in one.state.log_history if "loss" in entry]
    assert_matches_one_process(result, {"steps": steps, "student": full_state_dict(one.model)}, model_dirs)
