"""LaTeX and Markdown result tables from summaries."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

from vtd_trl.eval.tables import latex_table, markdown_table


def _summary(model, benchmark, metric, score):
    return {"model": model, "benchmark": benchmark, "metric": metric, "score": score}


SUMMARIES = [
    _summary("Qwen/Qwen3-1.7B", "aime25", "greedy", 0.2),
    _summary("Qwen/Qwen3-1.7B", "aime24", "maj@16", 0.5),
    _summary("Qwen/Qwen3-1.7B", "aime24", "greedy", 0.4),
    _summary("my_vtd", "aime24", "greedy", 0.4),
    _summary("my_vtd", "aime24", "maj@16", 0.5333333),
    _summary("my_vtd", "aime25", "greedy", 0.1),
    _summary("my_vtd", "hmmt25", "greedy", 0.0333333),
]

EXPECTED_LATEX = r"""\begin{table}[t]
\centering
\caption{Accuracy (\%)}
\label{tab:main}
\begin{tabular}{lcccc}
\toprule
 & \multicolumn{2}{c}{AIME 2024} & \multicolumn{1}{c}{AIME 2025} & \multicolumn{1}{c}{HMMT Feb 2025} \\
\cmidrule(lr){2-3} \cmidrule(lr){4-4} \cmidrule(lr){5-5}
Model & greedy & maj@16 & greedy & greedy \\
\midrule
Qwen/Qwen3-1.7B & \textbf{40.0} & 50.0 & \textbf{20.0} & -- \\
my\_vtd & \textbf{40.0} & \textbf{53.3} & 10.0 & \textbf{3.3} \\
\bottomrule
\end{tabular}
\end{table}
"""

EXPECTED_MARKDOWN = """| Model | AIME 2024 greedy | AIME 2024 maj@16 | AIME 2025 greedy | HMMT Feb 2025 greedy |
|---|---:|---:|---:|---:|
| Qwen/Qwen3-1.7B | **40.0** | 50.0 | **20.0** | – |
| my_vtd | **40.0** | **53.3** | 10.0 | **3.3** |
"""


def test_latex_table_rows_bold_best_per_column_and_ties():
    assert latex_table(SUMMARIES, caption="Accuracy (%)", label="tab:main") == EXPECTED_LATEX


def test_latex_table_structure_is_balanced():
    latex = latex_table(SUMMARIES)
    for env in ("table", "tabular"):
        assert latex.count(rf"\begin{{{env}}}") == latex.count(rf"\end{{{env}}}") == 1
    assert latex.count("{") == latex.count("}")
    columns = len(re.search(r"\\begin\{tabular\}\{l(c+)\}", latex).group(1))
    body = latex.split("\\midrule\n")[1].split("\\bottomrule")[0].strip().splitlines()
    header = [line for line in latex.splitlines() if line.startswith("Model & ")]
    for row in body + header:
        assert row.endswith(r" \\") and row.count(" & ") == columns
    assert [line.split(" & ")[0] for line in body] == ["Qwen/Qwen3-1.7B", r"my\_vtd"]


def test_markdown_table():
    assert markdown_table(SUMMARIES) == EXPECTED_MARKDOWN


def test_two_summaries_for_one_cell_are_an_error():
    duplicate = {**SUMMARIES[0], "path": "b/summary.json"}
    with pytest.raises(ValueError, match="Two summaries for Qwen/Qwen3-1.7B / aime25 / greedy: #0 and b/summary.json"):
        latex_table([SUMMARIES[0], duplicate])


def test_script_reads_summary_files_under_a_directory(tmp_path):
    for i, summary in enumerate(SUMMARIES):
        path = tmp_path / "results" / str(i) / "summary.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({**summary, "ci": {"low": 0.0, "high": 1.0}}))
    script = Path(__file__).parents[1] / "scripts" / "eval" / "generate_latex_table.py"
    spec = importlib.util.spec_from_file_location("generate_latex_table", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main([str(tmp_path / "results"), "--latex", str(tmp_path / "t.tex"), "--markdown", str(tmp_path / "t.md")])
    assert (tmp_path / "t.md").read_text() == EXPECTED_MARKDOWN
    assert "my\\_vtd & \\textbf{40.0} & \\textbf{53.3} & 10.0 & \\textbf{3.3} \\\\" in (tmp_path / "t.tex").read_text()
