"""Evaluate a model on AIME 2024 (HuggingFaceH4/aime_2024).

    python scripts/eval/eval_aime24.py --model Qwen/Qwen3-1.7B --mode greedy
    python scripts/eval/eval_aime24.py --model Qwen/Qwen3-1.7B --mode majority --n_samples 16
    python scripts/eval/eval_aime24.py --model Qwen/Qwen3-1.7B --data-file aime24.jsonl --backend transformers

All flags: --help, or the fields of vtd_trl.eval.EvalConfig.
"""

from vtd_trl.eval.cli import main

if __name__ == "__main__":
    main(benchmark="aime24", description=__doc__)
