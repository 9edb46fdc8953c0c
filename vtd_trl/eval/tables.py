"""Result tables from `summary.json` files: booktabs LaTeX and Markdown, one row per model, one column per
benchmark and metric, the best score of each column in bold."""

from .benchmarks import BENCHMARKS

_METRIC_ORDER = {"greedy": 0, "maj": 1, "avg": 2, "pass": 3}
_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _column_key(column: tuple[str, str]) -> tuple:
    benchmark, metric = column
    order = list(BENCHMARKS).index(benchmark) if benchmark in BENCHMARKS else len(BENCHMARKS)
    kind, _, n = metric.partition("@")
    return order, benchmark, _METRIC_ORDER.get(kind, len(_METRIC_ORDER)), int(n) if n.isdigit() else 0, metric


def collect(summaries: list[dict]) -> tuple[list[str], list[tuple[str, str]], dict[tuple[str, str, str], float]]:
    """Models (in order of first appearance), columns `(benchmark, metric)` (benchmark order of [`BENCHMARKS`], then
    greedy, maj@N, avg@N), and scores by `(model, benchmark, metric)`. Two summaries for one cell are an error."""
    models, columns, scores, sources = [], set(), {}, {}
    for index, summary in enumerate(summaries):
        for key in ("model", "benchmark", "metric", "score"):
            if key not in summary:
                raise ValueError(f"Summary #{index} ({summary.get('path', 'no path')}) has no {key!r} field.")
        cell = (summary["model"], summary["benchmark"], summary["metric"])
        if cell in scores:
            raise ValueError(
                f"Two summaries for {cell[0]} / {cell[1]} / {cell[2]}: {sources[cell]} and "
                f"{summary.get('path', f'#{index}')}; pass only one of them."
            )
        sources[cell] = summary.get("path", f"#{index}")
        if summary["model"] not in models:
            models.append(summary["model"])
        columns.add(cell[1:])
        scores[cell] = summary["score"]
    return models, sorted(columns, key=_column_key), scores


def _cells(
    summaries: list[dict], digits: int
) -> tuple[list[str], list[tuple[str, str]], list[list[tuple[str, bool]]]]:
    """Formatted percentages and whether each is the best of its column (ties at the shown precision all count)."""
    models, columns, scores = collect(summaries)
    shown = {cell: round(100 * score, digits) for cell, score in scores.items() if score is not None}
    best = {}
    for column in columns:
        values = [shown[(m, *column)] for m in models if (m, *column) in shown]
        best[column] = max(values) if values else None
    rows = []
    for model in models:
        row = []
        for column in columns:
            value = shown.get((model, *column))
            row.append(("" if value is None else f"{value:.{digits}f}", value is not None and value == best[column]))
        rows.append(row)
    return models, columns, rows


def _title(benchmark: str) -> str:
    return BENCHMARKS[benchmark].title if benchmark in BENCHMARKS else benchmark


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


def latex_table(summaries: list[dict], caption: str | None = None, label: str | None = None, digits: int = 1) -> str:
    """A booktabs `table` with a benchmark header row over a metric header row; scores in percent, missing `--`."""
    models, columns, rows = _cells(summaries, digits)
    groups = []  # (benchmark, first column, last column), 1-based after the model column
    for i, (benchmark, _) in enumerate(columns, start=2):
        if groups and groups[-1][0] == benchmark:
            groups[-1][2] = i
        else:
            groups.append([benchmark, i, i])
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{l{'c' * len(columns)}}}", r"\toprule"]
    lines.append(
        " & ".join([""] + [rf"\multicolumn{{{b - a + 1}}}{{c}}{{{latex_escape(_title(n))}}}" for n, a, b in groups])
        + r" \\"
    )
    lines.append(" ".join(rf"\cmidrule(lr){{{a}-{b}}}" for _, a, b in groups))
    lines.append(" & ".join(["Model"] + [latex_escape(metric) for _, metric in columns]) + r" \\")
    lines.append(r"\midrule")
    for model, row in zip(models, rows):
        cells = [rf"\textbf{{{text}}}" if bold else (text or "--") for text, bold in row]
        lines.append(" & ".join([latex_escape(model)] + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def markdown_table(summaries: list[dict], digits: int = 1) -> str:
    """A Markdown table with `Benchmark metric` headers; scores in percent, the best in bold, missing `–`."""
    models, columns, rows = _cells(summaries, digits)
    header = ["Model"] + [f"{_title(benchmark)} {metric}" for benchmark, metric in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(columns)) + "|"]
    for model, row in zip(models, rows):
        cells = [f"**{text}**" if bold else (text or "–") for text, bold in row]
        lines.append("| " + " | ".join([model.replace("|", "\\|")] + cells) + " |")
    return "\n".join(lines) + "\n"
