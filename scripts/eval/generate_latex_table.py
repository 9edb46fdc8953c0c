"""Build a booktabs LaTeX table and a Markdown table from evaluation summaries (best score per column in bold).

    python scripts/eval/generate_latex_table.py eval_results/ --latex table.tex --markdown table.md

Arguments are `summary.json` files or directories searched recursively for them.
"""

import argparse
import sys
from pathlib import Path

from vtd_trl.eval.results import SUMMARY_FILE, read_summary
from vtd_trl.eval.tables import latex_table, markdown_table


def find_summaries(paths: list[str]) -> list[Path]:
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(sorted(path.rglob(SUMMARY_FILE)))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} is neither a summary file nor a directory.")
    if not found:
        raise FileNotFoundError(f"No {SUMMARY_FILE} under {', '.join(paths)}; run scripts/eval/eval_*.py first.")
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="summary.json files or directories holding them")
    parser.add_argument("--latex", help="write the LaTeX table here (default: print it)")
    parser.add_argument("--markdown", help="write the Markdown table here (default: print it)")
    parser.add_argument("--caption", default="Accuracy (%) on competition math benchmarks.", help="LaTeX caption")
    parser.add_argument("--label", default="tab:results", help="LaTeX label")
    parser.add_argument("--digits", type=int, default=1, help="decimals of the percentages")
    args = parser.parse_args(argv)

    summaries = [{**read_summary(path), "path": str(path)} for path in find_summaries(args.paths)]
    latex = latex_table(summaries, caption=args.caption, label=args.label, digits=args.digits)
    markdown = markdown_table(summaries, digits=args.digits)
    for text, target in ((latex, args.latex), (markdown, args.markdown)):
        if target:
            Path(target).write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
