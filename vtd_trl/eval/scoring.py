"""Scores from graded samples: greedy, avg@N, maj@N, pass@k and a bootstrap confidence interval.

Pure functions of the per-sample records (`problem_id`, `sample_index`, `extracted`, `correct`), so a score can
always be recomputed from `samples.jsonl` alone.
"""

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from math import comb

import numpy as np

from ..verify import verify


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al., 2021): the chance that k of the n samples, c of them correct,
    include a correct one, i.e. `1 - C(n - c, k) / C(n, k)`."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}.")
    # Exact integer arithmetic: the usual product form loses precision for large n and no library here ships it.
    return 1.0 - comb(n - c, k) / comb(n, k)


def answers_equivalent(a: str, b: str) -> bool:
    """Whether two extracted answers are the same mathematical object (`1/2`, `0.5`, `\\frac{1}{2}`), by
    `vtd_trl.verify` in both directions (math-verify is not symmetric for every pair of types)."""
    return a == b or verify(f"\\boxed{{{a}}}", b) is True or verify(f"\\boxed{{{b}}}", a) is True


def majority_vote(
    answers: list[str | None], equivalent: Callable[[str, str], bool] = answers_equivalent
) -> int | None:
    """Index of the sample whose answer wins the vote, or `None` when no sample has an answer.

    Answers are grouped into classes of equivalent answers (each answer joins the first class whose first answer it
    is equivalent to), samples without an answer do not vote, and the largest class wins. A tie goes to the class
    whose first answer came first, so the vote is deterministic. The winner is represented by the first sample of
    its class.
    """
    classes: list[list[int]] = []
    class_of: dict[str, int] = {}  # a repeated string joins its class without another (slow, symbolic) check
    for index, answer in enumerate(answers):
        if answer is None:
            continue
        if answer not in class_of:
            matches = (i for i, members in enumerate(classes) if equivalent(answer, answers[members[0]]))
            class_of[answer] = next(matches, len(classes))
            if class_of[answer] == len(classes):
                classes.append([])
        classes[class_of[answer]].append(index)
    if not classes:
        return None
    return max(classes, key=len)[0]  # max keeps the first of equal-sized classes


def bootstrap_ci(
    values: Iterable[float], confidence: float = 0.95, n_resamples: int = 10000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (one value per problem, resampled with replacement).

    Written with numpy because scipy is not a dependency; seeded, so a summary is reproducible.
    """
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_resamples, values.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def metric_name(mode: str, n_samples: int) -> str:
    """Name of a mode's headline metric: `greedy`, `maj@16`, `avg@16`."""
    return {"greedy": "greedy", "majority": f"maj@{n_samples}", "average": f"avg@{n_samples}"}[mode]


def pass_k_values(n_samples: int) -> list[int]:
    """The k of the reported pass@k: powers of two below n, and n."""
    return sorted({2**i for i in range(n_samples.bit_length()) if 2**i < n_samples} | {n_samples})


@dataclass
class Scores:
    """Scores of one run.

    Args:
        metric: headline metric name (`maj@16`).
        score: headline score, the mean of `per_problem` over the graded problems.
        per_problem: headline score of each graded problem, by problem id.
        metrics: every metric the samples support (`avg@N`, `maj@N`, `pass@k`; `greedy` for greedy runs).
        ungradable_ids: problems left out because their samples all carry `correct: null`.
        counts: numbers of problems and samples, correct, without an answer and truncated.
    """

    metric: str
    score: float
    per_problem: dict[str, float]
    metrics: dict[str, float]
    ungradable_ids: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def _in_order(problem_id: str, samples: dict[int, dict], n_samples: int) -> list[dict]:
    """A problem's samples `0 .. n_samples - 1` in order; a missing one is an error saying how to generate it."""
    missing = sorted(set(range(n_samples)) - set(samples))
    if missing:
        raise ValueError(
            f"Problem {problem_id!r} lacks samples {missing[:5]}{'...' if len(missing) > 5 else ''} of "
            f"{n_samples}; run the evaluation again into the same output directory to generate them."
        )
    return [samples[i] for i in range(n_samples)]


def score_samples(
    records: Iterable[dict],
    mode: str,
    n_samples: int,
    equivalent: Callable[[str, str], bool] = answers_equivalent,
) -> Scores:
    """Score graded samples.

    Args:
        records: one dict per sample with `problem_id`, `sample_index`, `extracted` (answer or `None`) and `correct`
            (`True`, `False`, or `None` when the problem cannot be graded); optional `truncated`. Samples with
            `sample_index >= n_samples` are ignored, so a run extended to more samples can be scored at fewer.
        mode: `greedy`, `majority` or `average`; decides the headline metric.
        n_samples: samples per problem; every problem must have samples `0 .. n_samples - 1`.
        equivalent: equivalence of two extracted answers for majority voting.

    Returns:
        [`Scores`]. A problem whose samples all carry `correct: None` is counted as ungradable and left out; one with
        only some of them `None` is an error (a gradable problem's samples are all `True` or `False`).
    """
    by_problem: dict[str, dict[int, dict]] = defaultdict(dict)
    for record in records:
        if record["sample_index"] < n_samples:
            by_problem[str(record["problem_id"])][record["sample_index"]] = record

    per_metric: dict[str, dict[str, float]] = defaultdict(dict)
    ungradable = []
    counts = dict.fromkeys(["samples", "correct_samples", "no_answer_samples", "truncated_samples"], 0)
    for problem_id, samples in by_problem.items():
        ordered = _in_order(problem_id, samples, n_samples)
        counts["samples"] += n_samples
        counts["no_answer_samples"] += sum(r["extracted"] is None for r in ordered)
        counts["truncated_samples"] += sum(bool(r.get("truncated")) for r in ordered)
        ungraded = [r["sample_index"] for r in ordered if r["correct"] is None]
        if len(ungraded) == n_samples:
            ungradable.append(problem_id)
            continue
        if ungraded:
            raise ValueError(
                f"Problem {problem_id!r} has ungraded samples {ungraded[:5]}{'...' if len(ungraded) > 5 else ''} "
                "next to graded ones; pass --regrade to grade all of its samples again."
            )
        correct = [bool(r["correct"]) for r in ordered]
        counts["correct_samples"] += sum(correct)
        if mode == "greedy":
            per_metric["greedy"][problem_id] = float(correct[0])
            continue
        per_metric[f"avg@{n_samples}"][problem_id] = sum(correct) / n_samples
        winner = majority_vote([r["extracted"] for r in ordered], equivalent)
        per_metric[f"maj@{n_samples}"][problem_id] = float(winner is not None and correct[winner])
        for k in pass_k_values(n_samples):
            per_metric[f"pass@{k}"][problem_id] = pass_at_k(n_samples, sum(correct), k)

    counts["problems"] = len(by_problem)
    counts["ungradable"] = len(ungradable)
    counts["graded"] = len(by_problem) - len(ungradable)
    metric = metric_name(mode, n_samples)
    metrics = {name: float(np.mean(list(values.values()))) for name, values in per_metric.items()}
    return Scores(
        metric=metric,
        score=metrics.get(metric, float("nan")),
        per_problem=dict(per_metric[metric]),
        metrics=metrics,
        ungradable_ids=ungradable,
        counts=counts,
    )
