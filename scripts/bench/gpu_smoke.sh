#!/usr/bin/env bash
# GPU smoke test for one H200 (or any >= 80 GB GPU) with no hub access: VtD steps at Qwen3-1.7B / Qwen3-8B shapes
# with the Liger and chunked backends, then the loss benchmark at those shapes, then the sharded tests (DDP, ZeRO-2,
# ZeRO-3, FSDP2 on 2 processes against 1) on this machine's CPUs, which needs no second GPU; with vLLM installed, a
# server-teacher leg (a 4-layer teacher-shaped model under `vllm serve`, its top-64 log-probs against the same local
# teacher's). Finishes in about 10 minutes (the vLLM leg adds up to 5).
#
# Needs, beyond torch, transformers, accelerate and peft: trl, datasets, liger-kernel, math-verify,
# latex2sympy2_extended, antlr4-python3-runtime (and their own requirements: dill, multiprocess, xxhash, pyarrow,
# pandas); the sharded leg also deepspeed (hjson, ninja, msgpack, py-cpuinfo, einops) and pytest, and is skipped
# without them. Without network, carry them as wheels and install them first, e.g.
#   pip install --no-index --no-deps --target /tmp/site wheels/*.whl && export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
out="${OUT:-.}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, trl, liger_kernel; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__)"
timeout 300 python3 scripts/bench/gpu_smoke.py --output "$out/gpu_smoke.json"
timeout 150 python3 scripts/bench/loss.py --device cuda --tokens 2048 --student-hidden 2048 --teacher-hidden 4096 \
    --repeats 5 --output "$out/loss_bench_gpu.json"
if python3 -c "import deepspeed, pytest" 2>/dev/null; then
    # CPU processes over gloo, as in CI; hiding the GPU makes DeepSpeed pick its CPU accelerator
    CUDA_VISIBLE_DEVICES= DS_ACCELERATOR=cpu OMP_NUM_THREADS=1 timeout 240 python3 -m pytest -q -p no:cacheprovider \
        tests/test_distributed.py 2>&1 | tail -15 | tee "$out/sharded_cpu.txt"
else
    echo "sharded leg skipped: deepspeed or pytest is not installed" | tee "$out/sharded_cpu.txt"
fi
if python3 -c "import vllm" 2>/dev/null; then
    teacher=$(mktemp -d)
    python3 scripts/bench/gpu_smoke.py --save-teacher "$teacher" --teacher-layers 4
    vllm serve "$teacher" --port 8011 --max-logprobs 64 --logprobs-mode processed_logprobs --max-model-len 1024 \
        --gpu-memory-utilization 0.25 > "$out/vllm_teacher.log" 2>&1 &
    server=$!
    trap 'kill $server 2>/dev/null || true' EXIT
    # The trainer waits for the server itself (teacher_server_timeout), so no polling here.
    timeout 300 python3 scripts/bench/gpu_smoke.py --teacher-dir "$teacher" --teacher-layers 4 \
        --backends topk-local topk-server --teacher-server http://127.0.0.1:8011 --output "$out/gpu_smoke_server.json" \
        || echo "server-teacher leg failed: see $out/vllm_teacher.log"
else
    echo "server-teacher leg skipped: vllm is not installed"
fi
