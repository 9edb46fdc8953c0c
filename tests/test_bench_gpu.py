"""The GPU check's code on CPU: `step.py --device cuda` and `gpu_smoke.py` dry runs at tiny shapes, `loss.py` in and
out of process, and `gpu_smoke.sh` running every leg within its budget whatever one of them does."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_bench_report import run_script

ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = ["--prompts", "1", "--k", "2", "--length", "4"]
GPU_SETUPS = ["GRPOTrainer", "DistillationTrainer", "VtDTrainer (half correct)", "VtDTrainer (distill all + DPO)"]


def table(lines: list[str], header: str) -> list[list[str]]:
    """The cells of the rows of the Markdown table whose header line starts with `header`."""
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_step_gpu_path_runs_the_trainers_at_equal_completions(tmp_path):
    lines, data = run_script("step", ["--device", "cuda", "--cpu-dry-run", *TINY_RUN, "--steps", "1"], tmp_path)
    results = data["results"]
    assert list(results) == GPU_SETUPS  # GRPOTrainer first: it needs no teacher
    assert all(t["generation"] > 0 and t["loss_backward"] > 0 for t in results.values())
    half, every = results["VtDTrainer (half correct)"], results["VtDTrainer (distill all + DPO)"]
    assert (half["distill_fraction"], half["contrast_fraction"]) == (0.5, 0.5)
    assert (every["distill_fraction"], every["contrast_fraction"]) == (1.0, 1.0)
    assert every["forward_positions"] > half["forward_positions"] > 0
    assert any(line.startswith("CPU dry run, tiny models, bf16 weights, gradient checkpointing") for line in lines)
    rows = table(lines, "| trainer |")
    assert [row[0] for row in rows] == GPU_SETUPS
    for row, t in zip(rows, results.values()):
        assert row[4] == f"{t['generation'] + t['loss_backward']:.2f}"
        assert row[5] == f"{t['generation'] / (t['generation'] + t['loss_backward']):.0%}"


def test_gpu_smoke_trains_with_every_distillation_backend(tmp_path):
    lines, rows = run_script("gpu_smoke", ["--cpu-dry-run", *TINY_RUN, "--steps", "2"], tmp_path)
    assert [row["backend"] for row in rows] == ["trl", "chunked", "liger"]
    assert all(len(row["loss"]) == 2 and row["step_s"] > 0 for row in rows)
    trl, chunked, liger = (row["loss"][0] for row in rows)  # the same completions and routes: only the kernel differs
    assert trl == pytest.approx(chunked, rel=1e-4)
    assert liger == pytest.approx(chunked, rel=0.1)  # Liger's CPU path keeps its softmaxes in the bf16 of the weights
    assert [cells[0] for cells in table(lines, "| backend |")] == ["trl", "chunked", "liger"]


@pytest.mark.parametrize("isolate", ["--isolate", "--no-isolate"])
def test_loss_bench_rows_per_token_count_and_backend(isolate, tmp_path):
    shapes = ["--vocab", "300", "--student-hidden", "16", "--teacher-hidden", "24", "--dtypes", "float32"]
    configs = ["naive", "chunked", "trl", "auto", "trl_chunked"]
    args = ["--tokens", "16", "24", *shapes, "--configs", *configs, "--repeats", "1", isolate]
    lines, data = run_script("loss", args, tmp_path)
    names = ["naive", "chunked", "trl", "auto (chunked)", "trl_chunked"]
    assert [(row["tokens"], row["config"]) for row in data["rows"]] == [(t, c) for t in (16, 24) for c in names]
    for row in data["rows"]:
        assert row["loss_rel_error"] < 1e-5 and row["grad_hidden_rel_error"] < 1e-5, row
        assert row["grad_weight_rel_error"] < 1e-5 and row["seconds"] > 0, row
    assert [cells[:2] for cells in table(lines, "| tokens |")] == [[str(t), c] for t in (16, 24) for c in names]


def run_gpu_smoke(tmp_path, *legs, budget_s=480) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(tmp_path), "GPU_SMOKE_BUDGET_S": str(budget_s), "OMP_NUM_THREADS": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # python3 is this interpreter
    command = ["bash", str(ROOT / "scripts" / "bench" / "gpu_smoke.sh"), *legs]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_gpu_smoke_sh_runs_every_leg_when_one_fails(tmp_path):
    """Without a GPU the loss and step legs fail at once; each says so and the next one runs."""
    result = run_gpu_smoke(tmp_path, "loss", "step")
    assert result.returncode == 1, result.stdout[-2000:]
    legs = (tmp_path / "gpu_smoke_legs.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in legs] == ["== loss", "== step", "== step"]
    assert all(" failed (exit 1) in " in line for line in legs[:3])
    assert "== loss (at most 120 s)" in result.stdout and "== step (at most 200 s)" in result.stdout


def test_gpu_smoke_sh_skips_what_its_budget_cannot_hold(tmp_path):
    result = run_gpu_smoke(tmp_path, "smoke", "loss", budget_s=5)
    assert result.returncode == 0
    legs = (tmp_path / "gpu_smoke_legs.txt").read_text()
    assert re.fullmatch(
        r"== smoke: skipped, [0-5] s of the budget left\n== loss: skipped, [0-5] s of the budget left\n", legs
    )
