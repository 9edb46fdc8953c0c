"""Evaluate a model on HMMT February 2025 (MathArena/hmmt_feb_2025).

    python scripts/eval/eval_hmmt25.py --model Qwen/Qwen3-1.7B --mode greedy
    python scripts/eval/eval_hmmt25.py --model Qwen/Qwen3-1.7B --mode majority --n_samples 16
    python scripts/eval/eval_hmmt25.py --model Qwen/Qwen3-1.7B --data-file hmmt25.jsonl --backend transformers

All flags: --help, or the fields of vtd_trl.eval.EvalConfig.
"""

from vtd_trl.eval.cli import main

if __name__ == "__main__":
    main(benchmark="hmmt25", description=__doc__)
