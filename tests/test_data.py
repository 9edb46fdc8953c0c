import json
import logging
import re
from pathlib import Path

import pytest
from datasets import Dataset

from vtd_trl.data import (
    DEFAULT_INSTRUCTION,
    RowError,
    chat_prompt,
    format_gsm8k,
    format_math,
    gsm8k_answer,
    gsm8k_reference,
    load_vtd_dataset,
    prepare_vtd_dataset,
)
from vtd_trl.verify import extract_answer, verify

# The first GSM8K training row, verbatim.
GSM8K_ROW = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
}
GSM8K_EXPECTED = {
    "prompt": [
        {
            "role": "user",
            "content": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
            "How many clips did Natalia sell altogether in April and May?\n"
            "Please reason step by step, and put your final answer within \\boxed{}.",
        }
    ],
    "answer": "72",
    "reference": "Natalia sold 48/2 = 24 clips in May.\n"
    "Natalia sold 48+24 = 72 clips altogether in April and May.\nThe final answer is \\boxed{72}",
}

MATH_ROW = {
    "problem": "What is the value of $\\sqrt{36 \\times \\sqrt{16}}$?",
    "solution": "Calculating from the inside out, $$\\sqrt{36 \\times \\sqrt{16}} = \\sqrt{36 \\times 4} = "
    "\\sqrt{144} = \\boxed{12}.$$",
    "level": "Level 1",
    "type": "Prealgebra",
}
MATH_FRACTION_ROW = {
    "problem": "Simplify $\\frac{2}{4}$.",
    "solution": "Divide by 2: $\\frac{2}{4} = \\boxed{\\frac{1}{2}}$. ",
}


def test_format_gsm8k_exact_strings():
    assert format_gsm8k(GSM8K_ROW) == GSM8K_EXPECTED


def test_gsm8k_reference_is_read_by_the_verifier():
    reference = GSM8K_EXPECTED["reference"]
    assert reference.endswith("\\boxed{72}")
    assert extract_answer(reference) == "72"
    assert verify(reference, "72") is True


@pytest.mark.parametrize(
    "solution, answer, reference",
    [
        ("So <<2*3=6>>6 apples.\n#### 6", "6", "So 6 apples.\nThe final answer is \\boxed{6}"),
        ("Total 1,080 <<a>>.\n#### 1,080\n", "1080", "Total 1,080 .\nThe final answer is \\boxed{1080}"),
        ("It costs $-3.5.\n####   -3.5  ", "-3.5", "It costs $-3.5.\nThe final answer is \\boxed{-3.5}"),
        ("#### 4", "4", "The final answer is \\boxed{4}"),
    ],
)
def test_gsm8k_answer_and_reference(solution, answer, reference):
    assert gsm8k_answer(solution) == answer
    assert gsm8k_reference(solution) == reference


@pytest.mark.parametrize("solution", ["5 apples", "#### ", "#### 5\nthen more text"])
def test_gsm8k_answer_needs_a_final_marker(solution):
    with pytest.raises(ValueError, match="has no final '#### <answer>' line"):
        gsm8k_answer(solution)


@pytest.mark.parametrize("solution", ["#### 1,5", "#### 1,00", "#### 1.000,5"])
def test_gsm8k_answer_commas_only_separate_thousands(solution):
    with pytest.raises(ValueError, match="not a number .commas may only separate thousands"):
        gsm8k_answer(solution)


def test_numeric_answers_keep_positional_notation():
    rows = [{"q": "Tiny?", "final": 1e-05, "cot": r"It is \boxed{0.00001}"}]
    dataset = prepare_vtd_dataset(
        Dataset.from_list(rows), columns={"prompt": "q", "answer": "final", "reference": "cot"}
    )
    assert dataset[0]["answer"] == "0.00001"  # not "1e-05", which math-verify reads as e - 5


def test_format_math_exact_strings():
    assert format_math(MATH_ROW) == {
        "prompt": [
            {
                "role": "user",
                "content": "What is the value of $\\sqrt{36 \\times \\sqrt{16}}$?\n" + DEFAULT_INSTRUCTION,
            }
        ],
        "answer": "12",
        "reference": MATH_ROW["solution"],
    }
    assert format_math(MATH_FRACTION_ROW, instruction=None) == {
        "prompt": [{"role": "user", "content": "Simplify $\\frac{2}{4}$."}],
        "answer": "\\frac{1}{2}",
        "reference": "Divide by 2: $\\frac{2}{4} = \\boxed{\\frac{1}{2}}$.",
    }


def test_format_math_needs_a_boxed_answer():
    with pytest.raises(RowError, match=r"column 'solution' has no \\boxed\{...\} answer"):
        format_math({"problem": "p", "solution": "The answer is 5."})


def test_chat_prompt():
    assert chat_prompt("  What is 6*7? ") == [{"role": "user", "content": f"What is 6*7?\n{DEFAULT_INSTRUCTION}"}]
    assert chat_prompt("What is 6*7?", "Answer in \\boxed{}.") == [
        {"role": "user", "content": "What is 6*7?\nAnswer in \\boxed{}."}
    ]


def test_prepare_infers_the_style_and_keeps_order():
    gsm8k = prepare_vtd_dataset(Dataset.from_list([GSM8K_ROW, {**GSM8K_ROW, "answer": "Two.\n#### 2"}]))
    assert gsm8k.column_names == ["prompt", "answer", "reference"]
    assert gsm8k["answer"] == ["72", "2"]
    assert gsm8k[1]["reference"] == "Two.\nThe final answer is \\boxed{2}"
    math = prepare_vtd_dataset(Dataset.from_list([MATH_ROW, MATH_FRACTION_ROW]))
    assert math["answer"] == ["12", "\\frac{1}{2}"]


def test_prepare_with_column_mapping():
    rows = [
        {"q": "What is 2+2?", "final": 4, "cot": "2+2 makes 4."},
        {
            "q": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "3+3?"}],
            "final": 6,
            "cot": "3+3 = \\boxed{6}",
        },
    ]
    dataset = prepare_vtd_dataset(
        Dataset.from_list(rows[:1]), columns={"prompt": "q", "answer": "final", "reference": "cot"}
    )
    assert dataset[0] == {
        "prompt": [{"role": "user", "content": f"What is 2+2?\n{DEFAULT_INSTRUCTION}"}],
        "answer": "4",
        "reference": "2+2 makes 4.",
    }
    conversational = prepare_vtd_dataset(
        Dataset.from_list(rows[1:]), "columns", columns={"prompt": "q", "answer": "final", "reference": "cot"}
    )
    assert conversational[0]["prompt"] == rows[1]["q"]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


BAD_ROWS = [
    GSM8K_ROW,
    {"question": "How many?"},  # row 1: no answer
    {"question": "How many?", "answer": "Seven.\n#### seven"},  # row 2: answer is not a number
    {"question": "How many?", "answer": "No marker here"},  # row 3: no #### line
    {"question": "", "answer": "#### 3"},  # row 4: empty question
    {"question": "How many?", "answer": "#### 3"},
]


@pytest.mark.parametrize(
    "row, message",
    [
        (1, r"row 1 \(counting from 0\): column 'answer' is missing \(the row has \['question'\]\)"),
        (2, r"row 2 \(counting from 0\): column 'answer' has a final '#### seven' line that is not a number"),
        (3, r"row 3 \(counting from 0\): column 'answer' has no final '#### <answer>' line"),
        (4, r"row 4 \(counting from 0\): column 'question' is empty"),
    ],
)
def test_local_file_errors_name_file_row_and_column(tmp_path, row, message):
    path = _write_jsonl(tmp_path / "gsm8k_bad.jsonl", [GSM8K_ROW, BAD_ROWS[row]])
    # The failing row is row 1 of this two-row file.
    message = message.replace(f"row {row} ", "row 1 ")
    with pytest.raises(RowError, match=f"{path} {message}.*on_error='skip'"):
        load_vtd_dataset(path, "gsm8k")


def test_skip_drops_and_counts_bad_rows(tmp_path, caplog):
    path = _write_jsonl(tmp_path / "gsm8k_bad.jsonl", BAD_ROWS)
    with caplog.at_level(logging.WARNING, logger="vtd_trl.data"):
        dataset = load_vtd_dataset(path, on_error="skip")
    assert dataset["answer"] == ["72", "3"]
    assert f"Skipped 4 of 6 rows of {path} (row 1: column 'answer' is missing" in caplog.text
    assert "row 2: column 'answer' has a final '#### seven' line that is not a number" in caplog.text


@pytest.mark.parametrize("answer", ["?", "\\frac{}{}"])
def test_unparseable_answers_are_rejected(answer):
    rows = [MATH_ROW, {"problem": "p", "solution": f"Hence \\boxed{{{answer}}}."}]
    message = f"dataset row 1 (counting from 0): column 'answer' value {answer!r} cannot be parsed as a math answer"
    with pytest.raises(RowError, match=re.escape(message)):
        prepare_vtd_dataset(Dataset.from_list(rows))


def test_reference_must_end_with_the_answer():
    rows = [{"q": "2+2?", "a": "4", "r": "2+2 = \\boxed{5}"}]
    with pytest.raises(RowError, match=r"row 0 .*column 'reference' does not end with an answer equivalent to '4'"):
        prepare_vtd_dataset(Dataset.from_list(rows), columns={"prompt": "q", "answer": "a", "reference": "r"})
    unchecked = prepare_vtd_dataset(
        Dataset.from_list(rows), columns={"prompt": "q", "answer": "a", "reference": "r"}, check_answers=False
    )
    assert unchecked["reference"] == ["2+2 = \\boxed{5}"]


@pytest.mark.parametrize("extension", ["jsonl", "json", "parquet"])
def test_local_formats(tmp_path, extension):
    path = tmp_path / f"math.{extension}"
    rows = [MATH_ROW, MATH_FRACTION_ROW]
    if extension == "jsonl":
        _write_jsonl(path, rows)
    elif extension == "json":
        path.write_text(json.dumps(rows))
    else:
        Dataset.from_list(rows).to_parquet(str(path))
    dataset = load_vtd_dataset(str(path))
    assert dataset["answer"] == ["12", "\\frac{1}{2}"]
    assert dataset[1]["reference"] == "Divide by 2: $\\frac{2}{4} = \\boxed{\\frac{1}{2}}$."


def test_unknown_layouts_and_options_are_explained(tmp_path):
    with pytest.raises(ValueError, match=r"Cannot tell the layout of dataset from its columns \['x'\]"):
        prepare_vtd_dataset(Dataset.from_list([{"x": 1}]))
    with pytest.raises(ValueError, match="style must be 'gsm8k', 'math' or 'columns', got 'gsm'"):
        prepare_vtd_dataset(Dataset.from_list([GSM8K_ROW]), "gsm")
    with pytest.raises(ValueError, match=r"unknown keys \['solution'\]"):
        prepare_vtd_dataset(Dataset.from_list([GSM8K_ROW]), columns={"solution": "answer"})
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip', got 'ignore'"):
        prepare_vtd_dataset(Dataset.from_list([GSM8K_ROW]), on_error="ignore")
    csv = tmp_path / "rows.csv"
    csv.write_text("question,answer\n")
    with pytest.raises(ValueError, match=r"local files must end in \['.json', '.jsonl', '.parquet'\], got '.csv'"):
        load_vtd_dataset(str(csv))


def test_hub_datasets_are_named_in_errors(monkeypatch):
    # The hub is out of reach in tests: stand in for load_dataset and check what it is asked for.
    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return Dataset.from_list([GSM8K_ROW, {"question": "q", "answer": "no marker"}])

    monkeypatch.setattr("vtd_trl.data.load_dataset", fake_load_dataset)
    with pytest.raises(
        RowError, match=re.escape("openai/gsm8k (main, test) row 1 (counting from 0): column 'answer' has no final")
    ):
        load_vtd_dataset("openai/gsm8k", config="main", split="test")
    assert calls == [("openai/gsm8k", "main", "test")]
    assert load_vtd_dataset("openai/gsm8k", config="main", on_error="skip")["answer"] == ["72"]


DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("split, size", [("train", 230), ("test", 81)])
def test_real_gsm8k_rows_load(split, size):
    # Real GSM8K rows (tests/data/gsm8k), with every comma and negative answer: each row loads and
    # its reference verifies against its answer (load_vtd_dataset checks both and raises on the first bad row).
    path = DATA / "gsm8k" / f"{split}_sample.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    dataset = load_vtd_dataset(str(path))
    assert len(rows) == len(dataset) == size
    finals = [row["answer"].rsplit("####", 1)[1].strip() for row in rows]
    assert dataset["answer"] == [final.replace(",", "") for final in finals]
    assert sum("," in final for final in finals) == {"train": 79, "test": 14}[split]
    for example in dataset:
        assert example["reference"].endswith(f"The final answer is \\boxed{{{example['answer']}}}")
        assert "<<" not in example["reference"]
    if split == "train":
        assert dataset[0] == GSM8K_EXPECTED
        assert dataset["answer"][finals.index("109,200,000")] == "109200000"


def test_real_math500_rows_load():
    # Real MATH-500 rows (tests/data/math500), 8 of them with several boxes in the solution: the answer read from the
    # solution is the dataset's own answer column, but for the one solution that boxes two forms of its answer.
    path = DATA / "math500" / "sample.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    dataset = load_vtd_dataset(str(path))
    assert len(rows) == len(dataset) == 107
    assert sum(row["solution"].count("\\boxed") > 1 for row in rows) == 8
    differing = {row["unique_id"]: ours for row, ours in zip(rows, dataset["answer"]) if ours != row["answer"]}
    assert differing == {"test/number_theory/459.json": r"15\frac{39}{40}, \frac{639}{40}"}
    assert verify(r"\boxed{\frac{639}{40}}", differing["test/number_theory/459.json"]) is True


def test_several_boxes_in_a_solution():
    # NuminaMath / OpenThoughts style: the answer is both boxes, not the last one.
    row = {"problem": "Find all integers n with f(n) = n.", "solution": r"So \(\boxed{1}\) and \(\boxed{-2}\)."}
    assert format_math(row)["answer"] == "1, -2"
    dataset = prepare_vtd_dataset(Dataset.from_list([row]))
    assert dataset["answer"] == ["1, -2"]
    assert verify(r"\boxed{-2, 1}", dataset[0]["answer"]) is True
    assert verify(r"\boxed{-2}", dataset[0]["answer"]) is False
    # Two forms of one answer joined by "or" are one answer; boxes with words between them are not.
    two_forms = {"problem": "p", "solution": r"$d = \boxed{15\frac{39}{40}},$ or $\boxed{\frac{639}{40}}$ inches."}
    assert format_math(two_forms)["answer"] == r"15\frac{39}{40}, \frac{639}{40}"
    assert verify(r"\boxed{\frac{639}{40}}", format_math(two_forms)["answer"]) is True
    twice = {"problem": "p", "solution": r"So $\tan A = \boxed{2}$. We could also note that $\tan A = \boxed{2}$."}
    assert format_math(twice)["answer"] == "2"


@pytest.mark.parametrize("solution", ["#### 0,111", "#### 1,0000"])
def test_gsm8k_answer_rejects_malformed_thousands(solution):
    with pytest.raises(ValueError, match="not a number .commas may only separate thousands"):
        gsm8k_answer(solution)


def test_a_file_in_vtds_own_columns_needs_no_flag(tmp_path):
    path = tmp_path / "own.jsonl"
    rows = [{"prompt": "What is 2+3?", "answer": "5", "reference": "2+3=5. \\boxed{5}"}]
    _write_jsonl(path, rows)
    for style in (None, "columns"):  # inferred, or `--dataset_style columns` with the default names
        dataset = load_vtd_dataset(str(path), style)
        assert (dataset[0]["answer"], dataset[0]["reference"]) == ("5", "2+3=5. \\boxed{5}")
        assert dataset[0]["prompt"][-1]["content"].startswith("What is 2+3?")
