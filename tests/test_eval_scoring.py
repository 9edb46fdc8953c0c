"""Scores of vtd_trl.eval.scoring, recomputed by hand or by an independent method."""

import json
from itertools import combinations
from math import comb

import numpy as np
import pytest

from vtd_trl.eval.results import read_samples
from vtd_trl.eval.scoring import bootstrap_ci, majority_vote, pass_at_k, pass_k_values, score_samples


@pytest.mark.parametrize("n", range(1, 7))
def test_pass_at_k_equals_fraction_of_k_subsets_holding_a_correct_sample(n):
    for c in range(n + 1):
        samples = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(combinations(samples, k))
            expected = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError, match="n=4, c=5, k=1"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="n=4, c=1, k=5"):
        pass_at_k(4, 1, 5)


def test_pass_k_values_are_powers_of_two_below_n_and_n():
    assert pass_k_values(1) == [1]
    assert pass_k_values(6) == [1, 2, 4, 6]
    assert pass_k_values(16) == [1, 2, 4, 8, 16]


def test_majority_vote_counts_one_half_in_any_notation_as_one_answer():
    # "3" appears twice; 1/2 appears three times in three notations and must win.
    answers = ["3", "3", "1/2", "0.5", "\\frac{1}{2}"]
    assert majority_vote(answers) == 2
    # Without grouping, "3" would have won.
    assert majority_vote(answers, equivalent=str.__eq__) == 0


def test_majority_vote_breaks_ties_by_first_appearance_and_ignores_missing_answers():
    assert majority_vote(["7", "5", "5", "7"]) == 0
    assert majority_vote(["5", "7", "7", "5"]) == 0
    assert majority_vote([None, "4", None, "9", "9"]) == 3
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None


def _write_samples(path, rows):
    with open(path, "w") as f:
        for problem_id, answers in rows.items():
            for index, (extracted, correct, truncated) in enumerate(answers):
                record = {
                    "problem_id": problem_id,
                    "sample_index": index,
                    "completion": f"... \\boxed{{{extracted}}}" if extracted is not None else "...",
                    "extracted": extracted,
                    "correct": correct,
                    "truncated": truncated,
                }
                f.write(json.dumps(record) + "\n")


# Problem a (gold 1/2): 2 of 4 correct; vote tied 2-2 between {0.5, \frac{1}{2}} and {3}: the first class wins.
# Problem b (gold 12): 1 of 4 correct; "7" wins the vote. Problem c (gold 5): 3 of 4 correct; "5"/"5.0" win.
# Problem d cannot be graded (correct: null) and is left out.
SAMPLES = {
    "a": [("0.5", True, False), ("\\frac{1}{2}", True, False), ("3", False, True), ("3", False, False)],
    "b": [("7", False, False), ("7", False, False), ("12", True, False), (None, False, True)],
    "c": [("5", True, False), ("5", True, False), ("5.0", True, False), ("4", False, False)],
    "d": [("x", None, False), ("y", None, False), ("x", None, False), ("z", None, False)],
}


def test_every_mode_scored_by_hand_from_a_samples_file(tmp_path):
    path = tmp_path / "samples.jsonl"
    _write_samples(path, SAMPLES)
    records = read_samples(path)

    average = score_samples(records, "average", 4)
    assert average.metric == "avg@4"
    assert average.per_problem == {"a": 0.5, "b": 0.25, "c": 0.75}
    assert average.score == pytest.approx(0.5)
    assert average.metrics["pass@1"] == pytest.approx(0.5)
    # pass@2 by hand: a = 1 - C(2,2)/C(4,2) = 5/6, b = 1 - C(3,2)/C(4,2) = 1/2, c = 1 - 0 = 1.
    assert average.metrics["pass@2"] == pytest.approx((5 / 6 + 1 / 2 + 1) / 3)
    assert average.metrics["pass@4"] == pytest.approx(1.0)
    assert average.ungradable_ids == ["d"]
    assert average.counts == {
        "samples": 16,
        "correct_samples": 6,
        "no_answer_samples": 1,
        "truncated_samples": 2,
        "problems": 4,
        "ungradable": 1,
        "graded": 3,
    }

    majority = score_samples(records, "majority", 4)
    assert majority.metric == "maj@4"
    assert majority.per_problem == {"a": 1.0, "b": 0.0, "c": 1.0}
    assert majority.score == pytest.approx(2 / 3)
    assert majority.metrics["avg@4"] == pytest.approx(0.5)

    # Scoring at fewer samples uses the first ones: sample 0 is a greedy-style pass@1.
    greedy = score_samples(records, "greedy", 1)
    assert greedy.metric == "greedy"
    assert greedy.per_problem == {"a": 1.0, "b": 0.0, "c": 1.0}
    assert greedy.metrics == {"greedy": pytest.approx(2 / 3)}
    assert greedy.counts["samples"] == 4

    two = score_samples(records, "majority", 2)
    # a: 0.5 and \frac{1}{2} agree -> correct; b: 7, 7 -> wrong; c: 5, 5 -> correct.
    assert two.per_problem == {"a": 1.0, "b": 0.0, "c": 1.0}
    assert two.metrics["avg@2"] == pytest.approx((1 + 0 + 1) / 3)


def test_missing_samples_are_an_error_that_says_to_resume(tmp_path):
    records = [{"problem_id": "a", "sample_index": i, "extracted": "1", "correct": True} for i in (0, 2)]
    with pytest.raises(ValueError, match=r"Problem 'a' lacks samples \[1, 3\] of 4; run the evaluation again"):
        score_samples(records, "average", 4)


def test_a_problem_is_ungradable_only_when_none_of_its_samples_is_graded():
    records = [{"problem_id": "a", "sample_index": i, "extracted": "1", "correct": None} for i in range(2)]
    records += [{"problem_id": "b", "sample_index": i, "extracted": "1", "correct": c} for i, c in enumerate([1, 0])]
    scores = score_samples(records, "average", 2)
    assert scores.ungradable_ids == ["a"] and scores.per_problem == {"b": 0.5}
    # A graded problem with an ungraded sample is not silently left out of the denominator.
    records[3]["correct"] = None
    with pytest.raises(
        ValueError, match=r"Problem 'b' has ungraded samples \[1\] next to graded ones; pass --regrade"
    ):
        score_samples(records, "average", 2)


def test_bootstrap_interval_of_a_proportion_matches_the_exact_binomial_quantiles():
    # Resampled means of 12 ones and 18 zeros follow Binomial(30, 0.4) / 30; its 2.5% and 97.5% quantiles are
    # 7/30 and 17/30 (CDF 0.0435 and 0.9788, far from the cut-offs, so the sampled quantiles cannot land elsewhere).
    n, c = 30, 12
    cdf = np.cumsum([comb(n, x) * 0.4**x * 0.6 ** (n - x) for x in range(n + 1)])
    low_q = next(x for x in range(n + 1) if cdf[x] >= 0.025)
    high_q = next(x for x in range(n + 1) if cdf[x] >= 0.975)
    assert (low_q, high_q) == (7, 17)
    low, high = bootstrap_ci([1.0] * c + [0.0] * (n - c), confidence=0.95, n_resamples=100_000, seed=0)
    assert (low, high) == pytest.approx((low_q / n, high_q / n))


def test_bootstrap_interval_edge_cases():
    assert bootstrap_ci([1.0] * 5) == (1.0, 1.0)
    assert bootstrap_ci([0.25, 0.25]) == (0.25, 0.25)
    low, high = bootstrap_ci([])
    assert np.isnan(low) and np.isnan(high)
