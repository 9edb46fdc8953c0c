"""Evaluation harness: AIME 2024/2025, HMMT Feb 2025, AMO-Bench, GSM8K and MATH-500 in greedy, maj@N and avg@N.

>>> from vtd_trl.eval import EvalConfig, evaluate
>>> summary = evaluate(EvalConfig(model="Qwen/Qwen3-1.7B", benchmark="aime24", mode="majority", n_samples=16))
"""

from .benchmarks import BENCHMARKS, Benchmark, Problem, get_benchmark, load_benchmark
from .config import DEFAULT_PROMPT, EvalConfig, Sampling
from .generate import Completion, TransformersGenerator, VLLMGenerator
from .harness import evaluate
from .scoring import Scores, answers_equivalent, bootstrap_ci, majority_vote, pass_at_k, score_samples
from .tables import latex_table, markdown_table

__all__ = [
    "BENCHMARKS",
    "DEFAULT_PROMPT",
    "Benchmark",
    "Completion",
    "EvalConfig",
    "Problem",
    "Sampling",
    "Scores",
    "TransformersGenerator",
    "VLLMGenerator",
    "answers_equivalent",
    "bootstrap_ci",
    "evaluate",
    "get_benchmark",
    "latex_table",
    "load_benchmark",
    "majority_vote",
    "markdown_table",
    "pass_at_k",
    "score_samples",
]
