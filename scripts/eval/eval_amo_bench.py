"""Evaluate a model on AMO-Bench (meituan-longcat/AMO-Bench; description answers are left out as ungradable).

    python scripts/eval/eval_amo_bench.py --model Qwen/Qwen3-1.7B --mode greedy
    python scripts/eval/eval_amo_bench.py --model Qwen/Qwen3-1.7B --mode majority --n_samples 16
    python scripts/eval/eval_amo_bench.py --model Qwen/Qwen3-1.7B --data-file amo_bench.jsonl --backend transformers

All flags: --help, or the fields of vtd_trl.eval.EvalConfig.
"""

from vtd_trl.eval.cli import main

if __name__ == "__main__":
    main(benchmark="amo_bench", description=__doc__)
