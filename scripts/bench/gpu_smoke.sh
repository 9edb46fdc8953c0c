#!/usr/bin/env bash
# GPU smoke test for one H200 (or any >= 80 GB GPU) with no hub access: VtD steps at Qwen3-1.7B / Qwen3-8B shapes
# with the Liger and chunked backends, then the loss benchmark at those shapes. Finishes in under 8 minutes.
#
# Needs, beyond torch, transformers, accelerate and peft: trl, datasets, liger-kernel, math-verify,
# latex2sympy2_extended, antlr4-python3-runtime (and their own requirements: dill, multiprocess, xxhash, pyarrow,
# pandas). Without network, carry them as wheels and install them first, e.g.
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
