#!/usr/bin/env bash
# Baselines: Qwen3-1.7B, Qwen3-4B and Qwen3-8B x AIME 2024, AIME 2025, HMMT Feb 2025, AMO-Bench x greedy and
# maj@N, then the results table. Needs a GPU machine with vLLM (pip install 'vtd-trl[vllm]').
#
# Override with environment variables, e.g.
#   MODELS="Qwen/Qwen3-1.7B" BENCHMARKS="aime24" N_SAMPLES=8 bash scripts/eval/run_baselines.sh
#   EXTRA_ARGS="--tensor_parallel_size 2 --max_tokens 38912" bash scripts/eval/run_baselines.sh
# Re-running resumes: finished samples are kept in $OUTPUT_ROOT and not generated again.
set -euo pipefail

MODELS=${MODELS:-"Qwen/Qwen3-1.7B Qwen/Qwen3-4B Qwen/Qwen3-8B"}
BENCHMARKS=${BENCHMARKS:-"aime24 aime25 hmmt25 amo_bench"}
MODES=${MODES:-"greedy majority"}
N_SAMPLES=${N_SAMPLES:-16}
OUTPUT_ROOT=${OUTPUT_ROOT:-eval_results/baselines}
EXTRA_ARGS=${EXTRA_ARGS:-}

cd "$(dirname "$0")/../.."

for model in $MODELS; do
  for benchmark in $BENCHMARKS; do
    for mode in $MODES; do
      n_samples=$([ "$mode" = greedy ] && echo 1 || echo "$N_SAMPLES")
      out="$OUTPUT_ROOT/${model//\//--}/$benchmark/$mode"
      echo "=== $model | $benchmark | $mode (n=$n_samples) -> $out"
      # shellcheck disable=SC2086  # EXTRA_ARGS is a list of flags
      python "scripts/eval/eval_${benchmark}.py" --model "$model" --mode "$mode" --n_samples "$n_samples" \
        --backend vllm --output_dir "$out" $EXTRA_ARGS
    done
  done
done

python scripts/eval/generate_latex_table.py "$OUTPUT_ROOT" --latex "$OUTPUT_ROOT/table.tex" --markdown "$OUTPUT_ROOT/table.md"
cat "$OUTPUT_ROOT/table.md"
