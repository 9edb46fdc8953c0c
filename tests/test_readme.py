"""README.md is a front door that works: its Python blocks run as shown (cut to 2 steps), it stays small, and every
relative link of README.md, docs/ and recipes/README.md points at a file (and heading) that exists."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, ROOT / "recipes" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# What the test changes in a block before running it: the README shows a real run, the test runs 2 steps of it.
SHORTER = {"max_steps=50": "max_steps=2"}


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.DOTALL | re.MULTILINE)


def run_block(code: str, cwd: Path) -> subprocess.CompletedProcess:
    for shown, short in SHORTER.items():
        code = code.replace(shown, short)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TRL_EXPERIMENTAL_SILENCE": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_readme_is_a_front_door():
    size = len(README.read_bytes())
    assert size <= 15_000, f"README.md is {size} bytes; move detail to a page in docs/ (limit 15,000)."


def test_readme_shows_the_ci_test_command():
    """`.ci/run` runs the README's test command; they must not drift apart."""
    command = "OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m pytest tests"
    assert command in README.read_text() and command in (ROOT / ".ci" / "run").read_text()


def test_readme_has_the_quickstart_and_the_route_blocks():
    blocks = python_blocks()
    assert sum("trainer.train()" in b for b in blocks) == 1 and sum("def route" in b for b in blocks) == 1
    quickstart = next(b for b in blocks if "trainer.train()" in b)
    assert len(quickstart.strip().splitlines()) <= 25 and all(shown in quickstart for shown in SHORTER)


def test_quickstart_trains_saves_and_prints_an_accuracy(tmp_path):
    code = next(b for b in python_blocks() if "trainer.train()" in b)
    result = run_block(code, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    accuracy = re.search(r"held-out accuracy after training: (\d+\.\d)%", result.stdout)
    assert accuracy and 0.0 <= float(accuracy.group(1)) <= 100.0, result.stdout[-2000:]
    output_dir = tmp_path / re.search(r'output_dir="([^"]+)"', code).group(1)
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "config.json").is_file()


def test_route_override_routes_as_it_says(tmp_path):
    """The README's `route` override, run as shown, then called on rewards: correct, wrong, unverifiable."""
    code = next(b for b in python_blocks() if "def route" in b)
    check = """
import math, torch
trainer_class = [v for v in list(globals().values()) if isinstance(v, type) and v.__name__ != "VtDTrainer" and "route" in vars(v)][0]
distill, contrast = trainer_class.route(None, torch.tensor([1.0, 0.0, math.nan]), [{}, {}, {}])
print("ROUTE", distill.tolist(), contrast.tolist())
"""
    result = run_block(code + check, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "ROUTE [True, True, False] [False, True, False]" in result.stdout


def test_every_other_python_block_runs(tmp_path):
    for block in python_blocks():
        if "trainer.train()" not in block and "def route" not in block:  # those two have their own tests above
            result = run_block(block, tmp_path)
            assert result.returncode == 0, f"{block}\n{result.stderr[-4000:]}"


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.DOTALL | re.MULTILINE)
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files_that_exist(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.DOTALL | re.MULTILINE)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http(s), mailto
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links to nothing: {broken}"


def test_own_data_line_makes_a_file_the_own_data_recipe_reads(tmp_path):
    """The README's one-line `.jsonl` and recipes/own_data.yaml's data keys give a checked VtD dataset."""
    import yaml

    from vtd_trl.data import load_vtd_dataset

    section = README.read_text().split("## Your own data", 1)[1]
    line = next(line for line in section.splitlines() if line.startswith("echo "))
    subprocess.run(["bash", "-c", line], cwd=tmp_path, check=True)
    recipe = yaml.safe_load((ROOT / "recipes" / "own_data.yaml").read_text())
    path = tmp_path / line.rsplit(">", 1)[1].strip()
    dataset = load_vtd_dataset(str(path), recipe["dataset_style"], columns=recipe.get("dataset_columns"))
    assert dataset.column_names == ["prompt", "answer", "reference"] and dataset[0]["answer"] == "28"
    assert dataset[0]["reference"].endswith("\\boxed{28}.")
