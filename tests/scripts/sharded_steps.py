"""VtD under the accelerate config this is launched with (2 CPU processes): what tests/test_distributed.py checks.

    accelerate launch --config_file recipes/accelerate/cpu/zero3.yaml tests/scripts/sharded_steps.py MODELS OUT \
        [--head-unit] [--teacher-server URL TOP_K | --top-k TOP_K] [--backend NAME] [--chosen-distill W]
        [--teacher-generation] [--demo DEMO_ARGS...]

Two optimizer steps on a fixed split rollout; rank 0 saves (OUT/result.pt) the loss and grad-norm of each step, how
each model is sharded, and the whole trained student, teacher and DPO reference; the student is also saved with
`save_model` (OUT/saved). `--head-unit` (FSDP2) repeats the run with every Linear, the LM head too, its own FSDP
unit. `--teacher-server` trains with that server as the teacher instead (top-k log-probs), `--top-k` with the local
teacher's top-k log-probs, `--backend` with that distillation backend, `--chosen-distill` with that
`vtd_chosen_distill_weight`, `--teacher-generation` with siblings as chosen sequences and the teacher's generation
where a prompt has none. `--demo` then runs scripts/vtd.py with the arguments that follow, in the same processes.

Under DeepSpeed, its shared-memory communication op is turned off: DeepSpeed JIT-compiles it when its process group
starts on CPU (70 s on 2 cores the first time, then cached in ~/.cache/torch_extensions), though only its inference
tensor parallelism uses it; ZeRO training communicates through torch.distributed (gloo) either way.
"""

import gc
import os
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False

import torch  # noqa: E402
from test_distributed import full_state_dict, sharding, train_two_steps  # noqa: E402
from torch.distributed.fsdp import FSDPModule  # noqa: E402


def head_unit_parameters(head) -> int | None:
    """Parameters in the FSDP2 unit of the LM head: 1 when it is its own unit, None outside FSDP2."""
    if not isinstance(head, FSDPModule):
        return None
    return len(head._get_fsdp_state()._fsdp_param_group.fsdp_params)


def run(model_dirs: dict, out: Path, **overrides) -> dict:
    sharded = any(os.environ.get(f"ACCELERATE_USE_{mode}") == "true" for mode in ("DEEPSPEED", "FSDP"))
    trainer = train_two_steps(model_dirs, out / "run", per_device=4, sharded=sharded, **overrides)
    unwrap = trainer.accelerator.unwrap_model
    models = {"student": trainer.model_wrapped, "teacher": trainer.teacher_model, "reference": trainer.reference_model}
    if trainer.teacher_model is None:  # a teacher server
        return {
            "num_processes": trainer.accelerator.num_processes,
            "steps": [(entry["loss"], entry["grad_norm"]) for entry in trainer.state.log_history if "loss" in entry],
            "student": full_state_dict(unwrap(trainer.model)),
        }
    result = {
        "distributed_type": str(trainer.accelerator.distributed_type),
        "num_processes": trainer.accelerator.num_processes,
        "top_k": trainer.teacher.top_k,
        "sharding": {role: sharding(model, trainer) for role, model in models.items()},
        "head_unit_parameters": head_unit_parameters(unwrap(trainer.model).get_output_embeddings()),
        "steps": [(entry["loss"], entry["grad_norm"]) for entry in trainer.state.log_history if "loss" in entry],
        "student": full_state_dict(unwrap(trainer.model)),
        "teacher": full_state_dict(unwrap(trainer.teacher_model)),
        "reference": full_state_dict(unwrap(trainer.reference_model)),
    }
    trainer.save_model(str(out / "saved"))
    del trainer, models
    gc.collect()
    return result


if __name__ == "__main__":
    models, out, options = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    demo_args = options[options.index("--demo") + 1 :] if "--demo" in options else None
    model_dirs = {"student": str(models / "student"), "teacher": str(models / "teacher")}
    overrides = {}
    if "--teacher-server" in options:
        url, top_k = options[options.index("--teacher-server") + 1 : options.index("--teacher-server") + 3]
        overrides = {"teacher_server_url": url, "vtd_distill_top_k": int(top_k)}
    elif "--top-k" in options:
        overrides = {"vtd_distill_top_k": int(options[options.index("--top-k") + 1])}
    if "--backend" in options:
        overrides["vtd_distill_backend"] = options[options.index("--backend") + 1]
    if "--teacher-generation" in options:
        overrides.update(vtd_chosen_source="sibling", vtd_chosen_teacher_generation=True)
    if "--chosen-distill" in options:
        overrides["vtd_chosen_distill_weight"] = float(options[options.index("--chosen-distill") + 1])
    result = run(model_dirs, out, **overrides)
    if "--head-unit" in options:
        os.environ["FSDP_TRANSFORMER_CLS_TO_WRAP"] = "Qwen3DecoderLayer,Linear"
        result["head_unit"] = run(model_dirs, out / "head_unit")
    if torch.distributed.get_rank() == 0:
        torch.save(result, out / "result.pt")
    if demo_args is not None:
        sys.argv = [str(ROOT / "scripts" / "vtd.py"), *demo_args]
        runpy.run_path(sys.argv[0], run_name="__main__")
