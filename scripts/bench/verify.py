"""Throughput and agreement of `vtd_trl.verify.verify_batch` against math-verify's `parse` + `verify`.

Completions are generated offline from reasoning-gym's `gsm_symbolic` problems: each problem gets several completions
in the styles a policy writes (boxed, boxed with thousands separators / currency / decimals, GSM8K `####`, "the answer
is"), about 40% of them with a realistic wrong answer (an arithmetic slip, an intermediate result, a factor of ten).
Two styles where the verifiers differ by design are reported apart: unit words in the box (`\\boxed{12 dollars}`) and
a think block cut off before it closes.

The last table runs Math-Verify's own 269 test cases (`tests/data/math_verify/cases.jsonl`) through `vtd_trl` and
through math-verify's default `parse` + `verify` (as TRL's `accuracy_reward` calls it), against each test's expected
verdict; math-verify with each test's own options is the reference.

    python scripts/bench/verify.py --completions 10000 --output verify_bench.json
"""

import argparse
import json
import random
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

import reasoning_gym
from _report import report
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse
from math_verify import verify as math_verify

from vtd_trl.verify import verify, verify_batch

NUMERIC_STYLES = {
    "boxed": 0.35,
    "boxed, thousands separators": 0.10,
    "boxed, currency sign": 0.10,
    "boxed, decimal": 0.05,
    "gsm8k ####": 0.15,
    "the answer is": 0.10,
}
BY_DESIGN_STYLES = {"boxed, unit words": 0.10, "unclosed think block": 0.05}
PEER_CASES = Path(__file__).resolve().parents[2] / "tests" / "data" / "math_verify" / "cases.jsonl"


def wrong_answer(rng: random.Random, gold: int, intermediates: list[int]) -> int:
    """A wrong answer a model might give: an intermediate result, an arithmetic slip, or a factor of ten."""
    kind = rng.random()
    candidates = [value for value in intermediates if value != gold]
    if kind < 0.35 and candidates:
        return rng.choice(candidates)
    if kind < 0.85:
        return gold + rng.choice([-1, 1]) * rng.randint(1, max(2, abs(gold) // 10))
    return gold * 10 if gold else 10


def render(rng: random.Random, style: str, cot: str, value: int) -> str:
    steps = cot.strip()
    last_step = steps.splitlines()[-1]
    if style == "boxed":
        return f"<think>\n{steps}\n</think>\n\n{last_step}\n\nThe final answer is $\\boxed{{{value}}}$."
    if style == "boxed, thousands separators":
        return f"<think>\n{steps}\n</think>\n\nSo the total is $\\boxed{{{value:,}}}$."
    if style == "boxed, currency sign":
        return f"<think>\n{steps}\n</think>\n\nThe answer is $\\boxed{{\\${value}}}$."
    if style == "boxed, decimal":
        return f"<think>\n{steps}\n</think>\n\n$\\boxed{{{value}.00}}$"
    if style == "gsm8k ####":
        return f"{steps}\n#### {value}"
    if style == "the answer is":
        return f"{steps}\nTherefore, the answer is {value}."
    if style == "boxed, unit words":
        return f"<think>\n{steps}\n</think>\n\n$\\boxed{{{value} {rng.choice(['dollars', 'apples', 'minutes'])}}}$"
    if style == "unclosed think block":
        return f"<think>\n{steps}\nSo far I have {value}"
    raise ValueError(style)


def generate(num_completions: int, per_problem: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    styles = {**NUMERIC_STYLES, **BY_DESIGN_STYLES}
    num_problems = num_completions // per_problem
    # A few problems have non-integer answers; the wrong-answer generator works on integers, so they are left out.
    problems = reasoning_gym.create_dataset("gsm_symbolic", size=num_problems + num_problems // 10 + 10, seed=seed)
    problems = [problem for problem in problems if re.fullmatch(r"-?[0-9]+", problem["answer"])][:num_problems]
    rows = []
    for problem in problems:
        cot = re.sub(r"\n?####.*$", "", problem["metadata"]["answer_cot"].strip())
        gold = int(problem["answer"])
        intermediates = [v for v in problem["metadata"]["variables"].values() if isinstance(v, int)]
        for _ in range(per_problem):
            correct = rng.random() < 0.6
            value = gold if correct else wrong_answer(rng, gold, intermediates)
            style = rng.choices(list(styles), weights=list(styles.values()))[0]
            # The label a careful grader gives: right value, and an answer was actually given (a cut-off think block
            # has none; see vtd_trl.verify.extract_answer).
            label = value == gold and style != "unclosed think block"
            completion = render(rng, style, cot, value)
            rows.append({"completion": completion, "gold": problem["answer"], "style": style, "label": label})
    return rows


def generate_symbolic(num_completions: int, seed: int) -> list[dict]:
    """MATH-style answers that need the symbolic path: radicals, pi, sets, intervals, in equivalent or wrong forms."""
    rng = random.Random(seed)
    rows = []
    for _ in range(num_completions):
        a, b, c = rng.randint(2, 50), rng.randint(2, 12), rng.randint(1, 9)
        same = rng.random() < 0.5
        kind = rng.choice(["radical", "pi", "set", "interval"])
        if kind == "radical":
            gold, pred = rf"\frac{{\sqrt{{{a}}}}}{{{b}}}", rf"\frac{{1}}{{{b}}}\sqrt{{{a if same else a + 1}}}"
        elif kind == "pi":
            gold, pred = rf"{a}\pi", rf"\pi \cdot {a if same else a + c}"
        elif kind == "set":
            gold, pred = rf"\{{{a}, {b}\}}", rf"\{{{b}, {a if same else a + c}\}}"
        else:
            gold, pred = rf"[{b}, {a + b})", rf"[{b}, {a + b}{')' if same else ']'}"
        completion = f"<think>...</think> So $\\boxed{{{pred}}}$."
        rows.append({"completion": completion, "gold": gold, "style": kind, "label": same})
    return rows


def time_it(function) -> tuple[list, float]:
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def math_verify_each(rows: list[dict]) -> list[bool]:
    # As TRL's accuracy_reward does: the gold is parsed again for every completion.
    return [math_verify(parse(f"${row['gold']}$"), parse(row["completion"])) for row in rows]


def math_verify_gold_cached(rows: list[dict]) -> list[bool]:
    golds = {gold: parse(f"${gold}$") for gold in {row["gold"] for row in rows}}
    return [math_verify(golds[row["gold"]], parse(row["completion"])) for row in rows]


def math_verify_with_test_options(case: dict) -> bool:
    # What Math-Verify's tests call: `compare_strings` with the test's extraction targets and options.
    if case["match_types"] == "parse_defaults":
        return bool(math_verify(parse(case["gold"]), parse(case["pred"])))
    targets = [
        LatexExtractionConfig(boxed_match_priority=0) if kind == "latex" else ExprExtractionConfig()
        for kind in case["match_types"]
    ]
    return bool(
        math_verify(
            parse(case["gold"], targets),
            parse(case["pred"], targets),
            float_rounding=case["precision"],
            strict=case["strict"],
            allow_set_relation_comp=case["allow_set_relation_comp"],
        )
    )


def peer_suite() -> tuple[int, dict]:
    """Math-Verify's test cases through each verifier: the number of cases, and each verifier's counts."""
    cases = [json.loads(line) for line in PEER_CASES.read_text().splitlines()]
    expected = [bool(case["expected"]) for case in cases]
    verdicts = {
        "math-verify with each test's options (what its tests run)": [math_verify_with_test_options(c) for c in cases],
        "math-verify parse + verify, defaults (as TRL's accuracy_reward)": [
            bool(math_verify(parse(case["gold"]), parse(case["pred"]))) for case in cases
        ],
        "vtd_trl verify": [
            verdict is True
            for verdict in verify_batch([c["pred"] for c in cases], [c["gold"] for c in cases], timeout=10.0)
        ],
    }
    results = {}
    for name, got in verdicts.items():
        agree = sum(g == e for g, e in zip(got, expected))
        credited = sum(g and not e for g, e in zip(got, expected))
        refused = sum(e and not g for g, e in zip(got, expected))
        results[name] = {"agree": agree, "wrongly_credited": credited, "wrongly_refused": refused}
    return len(cases), results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--completions", type=int, default=10_000)
    parser.add_argument("--per-problem", type=int, default=5, help="completions per problem, like GRPO's K")
    parser.add_argument("--symbolic", type=int, default=400, help="MATH-style completions for the symbolic table")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="also write the results as JSON to this path")
    args = parser.parse_args()

    rows = generate(args.completions, args.per_problem, args.seed)
    completions, golds = [row["completion"] for row in rows], [row["gold"] for row in rows]

    ours, ours_seconds = time_it(lambda: verify_batch(completions, golds))
    _, single_seconds = time_it(lambda: [verify(c, g) for c, g in zip(completions, golds)])
    reference, reference_seconds = time_it(lambda: math_verify_each(rows))
    _, cached_seconds = time_it(lambda: math_verify_gold_cached(rows))

    throughput = [
        ("vtd_trl verify_batch", ours_seconds),
        ("vtd_trl verify, one call per completion", single_seconds),
        ("math-verify parse + verify (gold parsed per completion)", reference_seconds),
        ("math-verify parse + verify (gold parsed once per problem)", cached_seconds),
    ]
    print(f"\n{len(rows)} completions of {len(rows) // args.per_problem} gsm_symbolic problems (seed {args.seed})\n")
    print("| method | completions/s | seconds | speed-up vs math-verify |")
    print("|---|---:|---:|---:|")
    for name, seconds in throughput:
        print(f"| {name} | {len(rows) / seconds:,.0f} | {seconds:.2f} | {reference_seconds / seconds:.1f}x |")

    counts, agree, errors = Counter(), Counter(), defaultdict(lambda: [0, 0])
    disagreements = []
    for row, our_verdict, reference_verdict in zip(rows, ours, reference):
        counts[row["style"]] += 1
        agree[row["style"]] += our_verdict is reference_verdict
        errors[row["style"]][0] += our_verdict is not row["label"]
        errors[row["style"]][1] += reference_verdict is not row["label"]
        if our_verdict is not reference_verdict and sum(d["style"] == row["style"] for d in disagreements) < 5:
            disagreements.append({**row, "vtd_trl": our_verdict, "math_verify": reference_verdict})
    numeric = sum(counts[style] for style in NUMERIC_STYLES)
    numeric_agree = sum(agree[style] for style in NUMERIC_STYLES)
    print("\n| style | completions | agreement | wrong verdicts, vtd_trl | wrong verdicts, math-verify |")
    print("|---|---:|---:|---:|---:|")
    for style in [*NUMERIC_STYLES, *BY_DESIGN_STYLES]:
        print(
            f"| {style} | {counts[style]} | {agree[style] / counts[style]:.2%} | {errors[style][0]} "
            f"| {errors[style][1]} |"
        )
    numeric_errors = [sum(errors[style][i] for style in NUMERIC_STYLES) for i in (0, 1)]
    print(
        f"| **all numeric styles** | {numeric} | {numeric_agree / numeric:.2%} | {numeric_errors[0]} | {numeric_errors[1]} |"
    )
    for example in {example["style"]: example for example in reversed(disagreements)}.values():
        print(
            f"\ndisagreement ({example['style']}): gold {example['gold']!r}, vtd_trl {example['vtd_trl']}, "
            f"math-verify {example['math_verify']}: ...{example['completion'][-80:]!r}"
        )

    symbolic = generate_symbolic(args.symbolic, args.seed)
    symbolic_completions, symbolic_golds = [row["completion"] for row in symbolic], [row["gold"] for row in symbolic]
    verify_batch(symbolic_completions[:8], symbolic_golds[:8], num_workers=4)  # start the workers outside the timing
    symbolic_reference, symbolic_reference_seconds = time_it(lambda: math_verify_each(symbolic))
    symbolic_throughput = [("math-verify parse + verify, in this process", symbolic_reference_seconds)]
    symbolic_agreement = {}
    for workers in (1, 2, 4):
        verdicts, seconds = time_it(
            lambda workers=workers: verify_batch(symbolic_completions, symbolic_golds, num_workers=workers)
        )
        symbolic_throughput.append((f"vtd_trl verify_batch, {workers} worker process(es)", seconds))
        symbolic_agreement[workers] = sum(o is r for o, r in zip(verdicts, symbolic_reference)) / len(symbolic)
        symbolic_errors = sum(verdict is not row["label"] for verdict, row in zip(verdicts, symbolic))
    reference_errors = sum(verdict is not row["label"] for verdict, row in zip(symbolic_reference, symbolic))
    print(f"\n{len(symbolic)} MATH-style completions (radicals, pi, sets, intervals), all on the symbolic path")
    print(
        f"wrong verdicts against the generator's labels: vtd_trl {symbolic_errors}, math-verify {reference_errors}\n"
    )
    print("| method | completions/s | seconds | agreement with math-verify |")
    print("|---|---:|---:|---:|")
    for name, seconds in symbolic_throughput:
        workers = int(name.split(", ")[1].split()[0]) if "worker" in name else None
        agreement = f"{symbolic_agreement[workers]:.2%}" if workers else "reference"
        print(f"| {name} | {len(symbolic) / seconds:,.0f} | {seconds:.2f} | {agreement} |")

    cases, peer = peer_suite()
    columns = [
        ("verifier", "{verifier}"),
        ("agree", "{agree}"),
        ("agreement", lambda r: f"{r['agree'] / cases:.2%}"),
        ("wrongly credited", "{wrongly_credited}"),
        ("wrongly refused", "{wrongly_refused}"),
    ]
    data = {
        "completions": len(rows),
        "seed": args.seed,
        "throughput": {name: len(rows) / seconds for name, seconds in throughput},
        "agreement": {style: agree[style] / counts[style] for style in counts},
        "wrong_verdicts": {style: dict(zip(("vtd_trl", "math_verify"), errors[style])) for style in counts},
        "numeric_agreement": numeric_agree / numeric,
        "disagreements": disagreements,
        "symbolic_throughput": {name: len(symbolic) / seconds for name, seconds in symbolic_throughput},
        "symbolic_agreement": symbolic_agreement,
        "math_verify_test_suite": peer,
    }
    title = f"\nMath-Verify's own test cases ({cases}, tests/data/math_verify): agreement with the expected verdict\n"
    report([{"verifier": name, **tally} for name, tally in peer.items()], columns, args.output, title, data)


if __name__ == "__main__":
    main()
