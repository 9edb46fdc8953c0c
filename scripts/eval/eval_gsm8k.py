"""Evaluate a model on GSM8K test (openai/gsm8k).

    python scripts/eval/eval_gsm8k.py --model Qwen/Qwen3-1.7B --mode greedy
    python scripts/eval/eval_gsm8k.py --model Qwen/Qwen3-1.7B --mode majority --n_samples 16
    python scripts/eval/eval_gsm8k.py --model Qwen/Qwen3-1.7B --data-file gsm8k.jsonl --backend transformers

All flags: --help, or the fields of vtd_trl.eval.EvalConfig.
"""

from vtd_trl.eval.cli import main

if __name__ == "__main__":
    main(benchmark="gsm8k", description=__doc__)
