#!/usr/bin/env bash
# The GPU check, for one H200 (or any >= 80 GB GPU) with no hub access, within 8 minutes. Legs, in this order:
#   versions  the GPU, driver and package versions
#   smoke     VtD steps at Qwen3-1.7B / Qwen3-8B shapes with each distillation backend (trl, chunked, liger)
#   loss      the distillation loss at those shapes, 2,048 and 16,384 tokens in bf16, every backend and TRL's peer
#   step      one optimizer step of GRPOTrainer, DistillationTrainer and VtD's routes at 16 x 128, then
#             DistillationTrainer and VtD's heaviest route at 32 x 512 (generation and loss + backward apart)
#   vllm      with vLLM installed: a 4-layer teacher-shaped model under `vllm serve`, its top-64 log-probs against the
#             same local teacher's
# Estimated from the 2026-12-04 H200 figures (docs/performance.md): versions 10 s, smoke 105 s (a 5.9-7.4 s step,
# 3 steps a backend, model builds and imports), loss 70 s, step 105 s at 16 x 128 and 150 s at 32 x 512 (a 26 s
# generation at 512 tokens, a warm-up step and one timed step per setup): about 7 minutes 20 s before vllm, which
# then has about 40 s of the 8 minutes left and is skipped (it needs about 2: run it alone, `gpu_smoke.sh vllm`).
# Every leg has a cap, cut to what is left of the 8 minutes, and is skipped when that is under half its cap; a leg
# that fails or reaches its cap says so, and the next one runs.
#
#   bash scripts/bench/gpu_smoke.sh                 # every leg; results (JSON) and tables in $OUT, or here
#   bash scripts/bench/gpu_smoke.sh loss step       # only these legs
#
# Needs, beyond torch: the project's dependencies (pyproject.toml). Offline, install them from the wheelhouse that
# scripts/bench/gpu_wheelhouse.sh builds (docs/performance.md says how).
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1
out="${OUT:-.}"
legs="${*:-versions smoke loss step vllm}"
deadline=$((SECONDS + ${GPU_SMOKE_BUDGET_S:-480}))
failed=0

# `leg NAME CAP COMMAND...`: run COMMAND when NAME is asked for, within CAP seconds and what is left of the budget
# (skipped when that is under half of CAP)
leg() {
    local name=$1 cap=$2 left=$((deadline - SECONDS))
    shift 2
    [[ " $legs " == *" $name "* ]] || return 0
    if ((2 * left < cap)); then
        echo "== $name: skipped, ${left} s of the budget left" | tee -a "$out/gpu_smoke_legs.txt"
        return 0
    fi
    ((cap > left)) && cap=$left
    echo "== $name (at most ${cap} s)"
    local start=$SECONDS
    timeout "$cap" "$@"
    local rc=$?
    local verdict="ok"
    ((rc == 124)) && verdict="stopped at its ${cap} s cap"
    ((rc != 0 && rc != 124)) && verdict="failed (exit $rc)"
    ((rc != 0)) && failed=1
    echo "== $name: $verdict in $((SECONDS - start)) s" | tee -a "$out/gpu_smoke_legs.txt"
}

versions() {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "
import importlib.metadata, importlib.util, torch
names = ['transformers', 'trl', 'accelerate', 'peft', 'datasets', 'liger_kernel', 'triton', 'vllm']
found = [f'{name} {importlib.metadata.version(name)}' for name in names if importlib.util.find_spec(name)]
print(f'torch {torch.__version__} (CUDA {torch.version.cuda}),', ', '.join(found))"
}

vllm_leg() {
    local teacher
    teacher=$(mktemp -d)
    python3 scripts/bench/gpu_smoke.py --save-teacher "$teacher" --teacher-layers 4 || return 1
    vllm serve "$teacher" --port 8011 --max-logprobs 64 --logprobs-mode processed_logprobs --max-model-len 1024 \
        --gpu-memory-utilization 0.25 --enforce-eager > "$out/vllm_teacher.log" 2>&1 &
    local server=$!
    # The trainer waits for the server itself (teacher_server_timeout), so no polling here.
    python3 scripts/bench/gpu_smoke.py --teacher-dir "$teacher" --teacher-layers 4 --backends topk-local topk-server \
        --teacher-server http://127.0.0.1:8011 --output "$out/gpu_smoke_server.json"
    local rc=$?
    kill "$server" 2>/dev/null
    wait "$server" 2>/dev/null
    ((rc == 0)) || echo "server-teacher leg failed: see $out/vllm_teacher.log"
    return $rc
}

export out
export -f versions vllm_leg
leg versions 30 bash -c versions
leg smoke 150 python3 scripts/bench/gpu_smoke.py --backends trl chunked liger --output "$out/gpu_smoke.json"
leg loss 120 python3 scripts/bench/loss.py --device cuda --tokens 2048 16384 --student-hidden 2048 \
    --teacher-hidden 4096 --dtypes bfloat16 --configs naive chunked trl liger trl_chunked --repeats 5 \
    --output "$out/loss_gpu.json"
leg step 150 python3 scripts/bench/step.py --device cuda --prompts 2 --k 8 --length 128 --steps 1 \
    --output "$out/step_16x128.json"
leg step 200 python3 scripts/bench/step.py --device cuda --prompts 4 --k 8 --length 512 --steps 1 \
    --setups DistillationTrainer "VtDTrainer (distill all + DPO)" --output "$out/step_32x512.json"
if [[ " $legs " == *" vllm "* ]] && ! python3 -c "import vllm" 2>/dev/null; then
    echo "== vllm: skipped, vLLM is not installed" | tee -a "$out/gpu_smoke_legs.txt"
else
    leg vllm 150 bash -c vllm_leg
fi
exit $failed
