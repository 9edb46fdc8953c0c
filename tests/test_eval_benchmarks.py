"""Loading benchmarks from local files and the errors that tell the user what to fix."""

import json

import datasets
import pytest

from vtd_trl.eval import benchmarks
from vtd_trl.eval.benchmarks import BENCHMARKS, Problem, gsm8k_final_answer, load_benchmark

ROWS = [
    {"id": 60, "problem": "Compute $1+1$.", "answer": "2"},
    {"id": 61, "problem": "Compute $2+3$.", "answer": 5},
    {"id": 62, "problem": "Compute $\\frac{1}{2}+0$.", "answer": "\\frac{1}{2}"},
]
EXPECTED = [
    Problem("60", "Compute $1+1$.", "2"),
    Problem("61", "Compute $2+3$.", "5"),
    Problem("62", "Compute $\\frac{1}{2}+0$.", "\\frac{1}{2}"),
]


def _write(path, rows):
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        table = datasets.Dataset.from_list([{k: str(v) for k, v in r.items()} for r in rows])
        table.to_parquet(str(path)) if suffix == ".parquet" else table.to_csv(str(path), index=False)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv"])
def test_local_file_in_every_format_gives_the_same_problems(tmp_path, suffix):
    path = _write(tmp_path / f"aime24{suffix}", ROWS)
    assert load_benchmark("aime24", data_file=path) == EXPECTED
    assert load_benchmark("aime24", data_file=path, limit=2) == EXPECTED[:2]


def test_column_overrides_and_row_index_ids(tmp_path):
    rows = [{"question": "What is 6*7?", "final": "42"}, {"question": "What is 2**5?", "final": "32"}]
    path = _write(tmp_path / "custom.jsonl", rows)
    problems = load_benchmark("hmmt25", data_file=path, problem_column="question", answer_column="final")
    assert problems == [Problem("0", "What is 6*7?", "42"), Problem("1", "What is 2**5?", "32")]


def test_gsm8k_gold_is_the_number_after_the_last_marker(tmp_path):
    assert gsm8k_final_answer("She pays 2 * 500 = 1,000 dollars.\n#### 1,000") == "1000"
    assert gsm8k_final_answer("17") == "17"
    path = _write(tmp_path / "gsm8k.jsonl", [{"question": "How much?", "answer": "2 + 2 = <<2+2=4>>4\n#### 4"}])
    assert load_benchmark("gsm8k", data_file=path) == [Problem("0", "How much?", "4")]


def test_amo_bench_description_answers_are_marked_ungradable(tmp_path):
    rows = [
        {"question_id": 1, "prompt": "Find n.", "answer": "7", "answer_type": "number"},
        {"question_id": 2, "prompt": "Describe all f.", "answer": "f(x)=x for all x", "answer_type": "description"},
    ]
    problems = load_benchmark("amo_bench", data_file=_write(tmp_path / "amo.jsonl", rows))
    assert [(p.id, p.ungradable_reason) for p in problems] == [
        ("1", None),
        ("2", "answer_type 'description' needs an LLM judge"),
    ]


def test_missing_column_names_the_file_the_column_and_the_flag(tmp_path):
    path = _write(tmp_path / "bad.jsonl", [{"question": "q", "answer": "1"}])
    with pytest.raises(ValueError, match=r"bad.jsonl has no column 'problem' for the problem \(columns: question, "):
        load_benchmark("aime24", data_file=path)
    with pytest.raises(ValueError, match="pass --problem-column with the right name"):
        load_benchmark("aime24", data_file=path)


def test_bad_rows_are_reported_with_their_index_and_id(tmp_path):
    path = _write(
        tmp_path / "dup.jsonl", [{"id": 1, "problem": "p", "answer": "1"}, {"id": 1, "problem": "q", "answer": "2"}]
    )
    with pytest.raises(ValueError, match="rows 0 and 1 share the id '1' in column 'id'"):
        load_benchmark("aime24", data_file=path)
    path = _write(
        tmp_path / "empty.jsonl", [{"id": 1, "problem": "p", "answer": "1"}, {"id": 2, "problem": "q", "answer": " "}]
    )
    with pytest.raises(ValueError, match=r"row 1 \(id '2'\) has an empty answer in column 'answer'"):
        load_benchmark("aime24", data_file=path)


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_benchmark("aime24", data_file=tmp_path / "nope.jsonl")
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(ValueError, match=r"suffix '.txt'; use one of .jsonl, .json, .parquet, .csv"):
        load_benchmark("aime24", data_file=tmp_path / "data.txt")
    with pytest.raises(ValueError, match="Unknown benchmark 'aime23'"):
        load_benchmark("aime23")


def test_unreachable_hub_explains_how_to_pass_a_local_file(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(benchmarks.datasets, "load_dataset", offline)
    with pytest.raises(RuntimeError) as info:
        load_benchmark("gsm8k")
    message = str(info.value)
    assert "Could not load gsm8k from the Hugging Face Hub (openai/gsm8k, split 'test', 'main')" in message
    assert "datasets.load_dataset('openai/gsm8k', 'main', split='test').to_json('gsm8k.jsonl')" in message
    assert "--data-file gsm8k.jsonl" in message
    assert "columns 'question' and 'answer'" in message


def test_registry_covers_the_six_benchmarks_with_their_hub_sources():
    sources = {
        name: (b.hub_id, b.hub_config, b.split, b.problem_column, b.answer_column) for name, b in BENCHMARKS.items()
    }
    assert sources == {
        "aime24": ("HuggingFaceH4/aime_2024", None, "train", "problem", "answer"),
        "aime25": ("yentinglin/aime_2025", None, "train", "problem", "answer"),
        "hmmt25": ("MathArena/hmmt_feb_2025", None, "train", "problem", "answer"),
        "amo_bench": ("meituan-longcat/AMO-Bench", None, "test", "prompt", "answer"),
        "gsm8k": ("openai/gsm8k", "main", "test", "question", "answer"),
        "math500": ("HuggingFaceH4/MATH-500", None, "test", "problem", "answer"),
    }
