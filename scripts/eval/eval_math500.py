"""Evaluate a model on MATH-500 (HuggingFaceH4/MATH-500).

    python scripts/eval/eval_math500.py --model Qwen/Qwen3-1.7B --mode greedy
    python scripts/eval/eval_math500.py --model Qwen/Qwen3-1.7B --mode majority --n_samples 16
    python scripts/eval/eval_math500.py --model Qwen/Qwen3-1.7B --data-file math500.jsonl --backend transformers

All flags: --help, or the fields of vtd_trl.eval.EvalConfig.
"""

from vtd_trl.eval.cli import main

if __name__ == "__main__":
    main(benchmark="math500", description=__doc__)
