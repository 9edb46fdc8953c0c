"""`scripts/bench/_report.py`, the ending the benchmark scripts share: the Markdown table and the JSON file, and a
script run as `python scripts/bench/<name>.py` printing the table of the rows its JSON holds."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_report", ROOT / "scripts" / "bench" / "_report.py")
bench_report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_report)

ROWS = [{"name": "a", "seconds": 1.234, "share": 0.5}, {"name": "b", "seconds": 10.0, "share": 0.125}]
COLUMNS = [("name", "{name}"), ("s", "{seconds:.2f}"), ("share", lambda row: f"{row['share']:.1%}")]


def test_markdown_table():
    assert bench_report.markdown_table(ROWS, COLUMNS) == (
        "| name | s | share |\n|---|---:|---:|\n| a | 1.23 | 50.0% |\n| b | 10.00 | 12.5% |"
    )
    assert bench_report.markdown_table(ROWS[:1], COLUMNS, numbers_right=False).splitlines()[1] == "|---|---|---|"


def test_report_prints_the_title_and_table_and_writes_the_json(tmp_path, capsys):
    path = tmp_path / "out.json"
    table = bench_report.report(ROWS, COLUMNS, str(path), title="\nthe title\n")
    assert capsys.readouterr().out == f"\nthe title\n\n{table}\n"
    assert json.loads(path.read_text()) == ROWS  # the rows by default
    bench_report.report(ROWS, COLUMNS, str(path), data={"args": {}, "rows": ROWS})
    assert json.loads(path.read_text()) == {"args": {}, "rows": ROWS}
    capsys.readouterr()
    bench_report.report(ROWS, COLUMNS, None)  # no file asked for: none written
    assert capsys.readouterr().out == f"{table}\n"


def run_script(name: str, args: list[str], tmp_path) -> tuple[list[str], dict]:
    output = tmp_path / f"{name}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / f"{name}.py"), *args, "--output",
                             str(output)], capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines(), json.loads(output.read_text())


def test_lora_sync_drift_prints_the_rows_of_its_json(tmp_path):
    lines, data = run_script("lora_sync_drift", ["--features", "32", "--rank", "4", "--steps", "2"], tmp_path)
    assert data["args"]["rank"] == 4
    assert [(r["dtype"], r["step"]) for r in data["rows"]] == [("bfloat16", 2), ("float32", 2)]  # at the last step
    start = lines.index(
        "| dtype | syncs | adapter delta rms | base drift rms | drift / base norm | base elements changed |"
    )
    assert lines[start - 1] == "" and lines[start - 2].startswith("32x32 layer, weights std 0.02, LoRA r=4")
    assert lines[start + 1] == "|---|---:|---:|---:|---:|---:|"
    for line, row in zip(lines[start + 2 :], data["rows"], strict=True):
        assert line == (
            f"| {row['dtype']} | {row['step']} | {row['delta_rms']:.1e} | {row['drift_rms']:.1e} | "
            f"{row['drift_relative']:.1e} | {row['changed_fraction']:.1%} |"
        )


@pytest.mark.parametrize("k", [1, 8])
def test_sparse_kd_prints_the_rows_of_its_json_then_the_statistics(k, tmp_path):
    lines, data = run_script("sparse_kd", ["--tokens", "8", "--vocab", "256", "--ks", str(k)], tmp_path)
    header = "| divergence | k | teacher mass outside top-k | dense / token | sparse / token | loss rel. err |"
    assert (
        lines[0] == header + " grad rel. err | grad cosine |"
        and lines[1] == "|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    assert [line.split(" | ")[:2] for line in lines[2:5]] == [[f"| {r['divergence']}", str(k)] for r in data["rows"]]
    assert lines[5] == "" and lines[6].startswith("8 tokens, vocabulary 256: teacher entropy") and len(lines) == 7
    assert set(data) == {"args", "stats", "rows"}
