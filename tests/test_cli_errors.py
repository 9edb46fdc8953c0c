"""Bad input, as a new user would give it: each mistake is one line that names the flag, key or column, the value and
the fix, found before anything heavy loads, and nothing a run has written is lost."""

import warnings
from pathlib import Path

import pytest
from conftest import arithmetic_rows, vtd_args
from datasets import Dataset

from vtd_trl import VtDTrainer
from vtd_trl.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ["--config", str(ROOT / "recipes" / "demo_tuned.yaml")]


def error_line(argv, capsys, status=2) -> str:
    """The one line `scripts/vtd.py ARGV` prints to stderr; nothing on stdout (no run summary: nothing loaded)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == status
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, (out, err)
    assert err.startswith("error: ") and err.rstrip().endswith("(--debug for the traceback)")
    return err.strip()


@pytest.mark.parametrize("flag", ["--model_name_or_path", "--teacher_model_name_or_path"])
def test_a_model_path_that_does_not_exist(flag, tmp_path, capsys):
    line = error_line([*DEMO, flag, "/nonexistent/model", "--output_dir", str(tmp_path)], capsys)
    assert f"{flag} /nonexistent/model: no such directory, and not a hub model id" in line


def test_a_hub_id_that_is_not_in_the_cache_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = error_line([*DEMO, "--model_name_or_path", "no-such-org/no-such-model"], capsys)
    assert "not in the hub cache while HF_HUB_OFFLINE=1" in line and "hf download no-such-org/no-such-model" in line


def test_a_misspelled_recipe_key_names_the_file_and_the_closest_key(tmp_path, capsys):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text((ROOT / "recipes" / "demo_tuned.yaml").read_text() + "vtd_distil_alpha: 2.0\n")
    line = error_line(["--config", str(recipe)], capsys)
    assert f"{recipe}: unknown key `vtd_distil_alpha`; did you mean `vtd_distill_alpha`?" in line


def test_a_misspelled_flag_names_the_closest_flag(capsys):
    line = error_line([*DEMO, "--vtd_contrast_bta", "1.0"], capsys)
    assert "Unknown flag --vtd_contrast_bta; did you mean --vtd_contrast_beta?" in line


def test_a_missing_recipe_file_is_named(capsys):
    line = error_line(["--config", "recipes/no_such_recipe.yaml"], capsys)
    assert "--config recipes/no_such_recipe.yaml: no such file" in line


def test_a_group_size_that_does_not_divide_the_batch_names_the_fields_and_the_values_that_fit(capsys):
    line = error_line([*DEMO, "--num_generations", "3", "--per_device_train_batch_size", "64"], capsys)
    assert "`num_generations=3`" in line and "`per_device_train_batch_size=64` x 1 process x" in line
    assert "gradient_accumulation_steps" in line and "K values that fit: [1, 2, 4, 8, 16, 32, 64]" in line


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(ValueError, match="unknown key|no such file"):
        main(["--config", "recipes/no_such_recipe.yaml", "--debug"])


def test_nothing_written_before_is_lost(tmp_path, capsys):
    output = tmp_path / "run"
    checkpoint = output / "checkpoint-10" / "model.safetensors"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")
    error_line([*DEMO, "--output_dir", str(output), "--num_generations", "3"], capsys)
    assert checkpoint.read_bytes() == b"weights" and sorted(p.name for p in output.iterdir()) == ["checkpoint-10"]


def test_data_errors_name_the_flags(tmp_path, capsys):
    data = tmp_path / "mine.jsonl"
    data.write_text('{"prompt": "What is 2+3?", "answer": "", "reference": "2+3=5. \\\\boxed{5}"}\n')
    line = error_line([*DEMO, "--dataset_name", str(data)], capsys)
    assert "row 0" in line and "'answer'" in line and "--dataset_columns" in line and "--dataset_on_error skip" in line


# ---------------------------------------------------------------------------------------------------- Python API


def vtd_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "rows have an empty" in str(w.message)]


def test_every_answer_empty_is_an_error_naming_the_column_and_count(model_dirs, tmp_path):
    rows = [{**row, "answer": answer} for row, answer in zip(arithmetic_rows(4), [None, "", "  ", None])]
    with pytest.raises(ValueError, match=r"Every one of the 4 rows has an empty gold answer in 'answer'"):
        VtDTrainer(model_dirs["student"], model_dirs["teacher"], vtd_args(tmp_path), Dataset.from_list(rows))


def test_some_empty_answers_and_references_are_one_warning_each_with_the_count(model_dirs, tmp_path):
    rows = arithmetic_rows(8)
    for i in (1, 5):
        rows[i]["answer"] = ""
    for i in (2, 3, 7):
        rows[i]["reference"] = " "
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        VtDTrainer(model_dirs["student"], model_dirs["teacher"], vtd_args(tmp_path), Dataset.from_list(rows))
    assert vtd_warnings(record) == [
        "2 of 8 rows have an empty gold answer in 'answer': their completions cannot be verified and are skipped "
        "(counted in vtd/skip_fraction).",
        "3 of 8 rows have an empty reference in 'reference': their wrong completions will have no chosen sequence and "
        "no DPO pair (counted in vtd/no_chosen_fraction).",
    ]
    with warnings.catch_warnings(record=True) as record:  # a clean dataset warns of nothing
        warnings.simplefilter("always")
        VtDTrainer(
            model_dirs["student"], model_dirs["teacher"], vtd_args(tmp_path), Dataset.from_list(arithmetic_rows(8))
        )
    assert vtd_warnings(record) == []
