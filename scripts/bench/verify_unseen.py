"""Agreement of `vtd_trl.verify` and math-verify with a careful human grader on other graders' test cases.

The cases (`tests/data/graders/cases.jsonl`, sources and licences in its README) come from the test suites of other
math graders and reward functions, none of them from Math-Verify's own suite or the rows vtd_trl was developed on. Each
case is run through `vtd_trl.verify.verify(completion, gold)` and through math-verify's default `parse` + `verify` (as
TRL's `accuracy_reward` calls it: `None` when the gold parses to nothing), one case at a time, and timed. The column
"math-verify $" gives math-verify a fairer reading: a completion in which it finds nothing is parsed again as `$...$`,
since many of these cases are answers written without delimiters (`x^2+2x+1`).

    python scripts/bench/verify_unseen.py --output scripts/bench/results/verify_unseen.json
"""

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from _report import markdown_table, write_json
from math_verify import parse
from math_verify import verify as math_verify

from vtd_trl.verify import verify

CASES = Path(__file__).resolve().parents[2] / "tests" / "data" / "graders" / "cases.jsonl"
SLOW_SECONDS = 1.0


def math_verify_verdict(completion: str, gold: str) -> bool | None:
    gold_parsed = parse(f"${gold}$")
    if not gold_parsed:
        return None
    return bool(math_verify(gold_parsed, parse(completion)))


def math_verify_math_verdict(completion: str, gold: str) -> bool | None:
    # A fairer reading for answers written without delimiters (`x^2+2x+1`): retried as `$...$` when nothing parses.
    gold_parsed = parse(f"${gold}$")
    if not gold_parsed:
        return None
    return bool(math_verify(gold_parsed, parse(completion) or parse(f"${completion}$")))


def run(cases: list[dict], name: str, check) -> tuple[list, list[float]]:
    verdicts, seconds = [], []
    for case in cases:
        start = time.perf_counter()
        try:
            verdicts.append(check(case["completion"], case["gold"]))
        except Exception as error:  # a grader that raises gives no verdict; it is counted wrong and listed
            verdicts.append(f"{type(error).__name__}: {error}")
        seconds.append(time.perf_counter() - start)
    print(f"{name}: {sum(seconds):.2f} s for {len(cases)} cases")
    return verdicts, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=str(CASES), help="JSON lines of {source, completion, gold, expected}")
    parser.add_argument("--output", help="write the results as JSON here, and as Markdown beside it (.md)")
    args = parser.parse_args()

    cases = [json.loads(line) for line in Path(args.cases).read_text().splitlines()]
    verify("\\boxed{x}", "x")  # start the worker outside the timing
    graders = {"vtd_trl": verify, "math-verify": math_verify_verdict, "math-verify $": math_verify_math_verdict}
    results = {name: run(cases, name, check) for name, check in graders.items()}

    sources = sorted(Counter(case["source"] for case in cases).items(), key=lambda item: -item[1])
    rows = []
    for source, count in [*sources, ("all", len(cases))]:
        row = {"source": source, "cases": count}
        for name, (verdicts, seconds) in results.items():
            picked = [i for i, case in enumerate(cases) if source in ("all", case["source"])]
            row[f"{name}_right"] = sum(verdicts[i] is cases[i]["expected"] for i in picked)
            row[f"{name}_seconds"] = round(sum(seconds[i] for i in picked), 3)
        rows.append(row)

    columns = [("source", lambda row: "**all**" if row["source"] == "all" else row["source"]), ("cases", "{cases}")]
    columns += [
        (f"{n} right", lambda row, n=n: f"{row[f'{n}_right']} ({row[f'{n}_right'] / row['cases']:.1%})")
        for n in graders
    ]
    columns += [(f"{n} s", lambda row, n=n: f"{row[f'{n}_seconds']:.2f}") for n in graders]
    lines = [markdown_table(rows, columns)]
    wrong, slow = {}, {}
    for name, (verdicts, seconds) in results.items():
        wrong[name] = [
            {**case, "verdict": verdict} for case, verdict in zip(cases, verdicts) if verdict is not case["expected"]
        ]
        slow[name] = [
            {"source": case["source"], "completion": case["completion"], "gold": case["gold"], "seconds": round(s, 2)}
            for case, s in zip(cases, seconds)
            if s > SLOW_SECONDS
        ]
        lines.append(f"\n{name}: {len(wrong[name])} wrong verdicts, {len(slow[name])} cases over {SLOW_SECONDS:.0f} s")
        for case in wrong[name]:
            lines.append(
                f"- {case['source']}: completion {case['completion'][-70:]!r}, gold {case['gold']!r}: "
                f"{case['verdict']}, expected {case['expected']}"
            )
        for case in slow[name]:
            lines.append(
                f"- slow ({case['seconds']} s): completion {case['completion'][-70:]!r}, gold {case['gold']!r}"
            )
    table = "\n".join(lines)
    print(f"\n{len(cases)} cases from {len(sources)} graders' test suites\n\n{table}")
    if args.output:
        write_json(args.output, {"cases": len(cases), "rows": rows, "wrong": wrong, "slow": slow})
        Path(args.output).with_suffix(".md").write_text(
            f"{len(cases)} cases from {len(sources)} graders' test suites (`tests/data/graders/`), "
            f"`python scripts/bench/verify_unseen.py`\n\n{table}\n"
        )


if __name__ == "__main__":
    main()
