"""Dataset adapters: GSM8K, MATH-style and custom rows to the VtD columns `prompt`, `answer`, `reference`.

`prompt` is a chat conversation asking for step-by-step reasoning and a `\\boxed{}` answer, `answer` is the gold answer
that `vtd_trl.verify` compares against, and `reference` is a worked solution that ends the way the verifier reads
(with the boxed answer), used as the chosen sequence of VtD's DPO pairs.
"""

import logging
import os
import re
from collections.abc import Callable, Mapping
from typing import Literal

from datasets import Dataset, load_dataset

from .verify import _THOUSANDS, answer_text, boxed_answer, verify_batch

logger = logging.getLogger(__name__)

DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
VTD_COLUMNS = ("prompt", "answer", "reference")

_CALCULATOR_ANNOTATION = re.compile(r"<<[^<>]*>>")
_GSM8K_FINAL = re.compile(r"\n?####[ \t]*([^\n]*)\s*$")
_GSM8K_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?(?:/[0-9]+)?")
_LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


class RowError(ValueError):
    """A row that cannot become a VtD example; the message names the source, the row and the column."""


def chat_prompt(question: str, instruction: str | None = DEFAULT_INSTRUCTION) -> list[dict[str, str]]:
    """
    Returns a one-turn conversation asking `question`, followed by `instruction` on its own line when given.

    Example:
    ```python
    >>> chat_prompt("What is 6*7?")
    [{'role': 'user', 'content': 'What is 6*7?\\nPlease reason step by step, and put your final answer within \\\\boxed{}.'}]
    ```
    """
    content = question.strip() if instruction is None else f"{question.strip()}\n{instruction}"
    return [{"role": "user", "content": content}]


def gsm8k_answer(solution: str) -> str:
    """
    Returns the number after GSM8K's final `####` marker, without thousands separators (`"#### 1,080"` -> `"1080"`).

    Raises:
        `ValueError`: When the solution has no `#### ...` line, or what follows `####` is not a number.
    """
    match = _GSM8K_FINAL.search(solution)
    if match is None or not match.group(1).strip():
        raise ValueError(f"has no final '#### <answer>' line (ends with {solution[-60:]!r})")
    answer = match.group(1).strip()
    if _THOUSANDS.fullmatch(answer):  # 1,080; any other comma is not GSM8K's
        answer = answer.replace(",", "")
    if not _GSM8K_NUMBER.fullmatch(answer):
        raise ValueError(
            f"has a final '#### {match.group(1).strip()}' line that is not a number (commas may only separate "
            "thousands, as in 1,080)"
        )
    return answer


def gsm8k_reference(solution: str) -> str:
    r"""
    Returns a GSM8K solution as a chosen sequence: calculator annotations `<<48/2=24>>` removed and the final
    `#### N` line replaced by the sentence `The final answer is \boxed{N}`.

    Example:
    ```python
    >>> gsm8k_reference("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 24")
    'Natalia sold 48/2 = 24 clips in May.\nThe final answer is \\boxed{24}'
    ```
    """
    answer = gsm8k_answer(solution)
    body = _CALCULATOR_ANNOTATION.sub("", solution[: _GSM8K_FINAL.search(solution).start()]).rstrip()
    final = f"The final answer is \\boxed{{{answer}}}"
    return f"{body}\n{final}" if body else final


def format_gsm8k(example: Mapping, instruction: str | None = DEFAULT_INSTRUCTION) -> dict:
    """Maps a GSM8K row (`question`, `answer` with its `#### N` line) to `prompt`, `answer`, `reference`."""
    prompt, solution = chat_prompt(_field(example, "question"), instruction), _field(example, "answer")
    try:
        return {"prompt": prompt, "answer": gsm8k_answer(solution), "reference": gsm8k_reference(solution)}
    except ValueError as error:
        raise RowError(f"column 'answer' {error}") from error


def format_math(example: Mapping, instruction: str | None = DEFAULT_INSTRUCTION) -> dict:
    r"""
    Maps a MATH-style row (`problem`, `solution` with a `\boxed{}` answer) to `prompt`, `answer`, `reference`.

    The answer is the solution's boxed answer as the verifier reads it ([`~vtd_trl.verify.boxed_answer`]): the last
    box, with the boxes joined to it by commas, "and" or "or" (`\(\boxed{1}\) and \(\boxed{-2}\)` gives `1, -2`).
    """
    solution = _field(example, "solution")
    answer = boxed_answer(solution)
    if answer is None or not answer.strip():
        raise RowError(f"column 'solution' has no \\boxed{{...}} answer (ends with {solution[-60:]!r})")
    return {
        "prompt": chat_prompt(_field(example, "problem"), instruction),
        "answer": answer.strip(),
        "reference": solution.strip(),
    }


def format_columns(
    example: Mapping, columns: Mapping[str, str], instruction: str | None = DEFAULT_INSTRUCTION
) -> dict:
    """
    Maps a row with any column names to `prompt`, `answer`, `reference`, with `columns` from VtD name to row name
    (e.g. `{"prompt": "question", "answer": "final", "reference": "rationale"}`; a missing key keeps the VtD name).

    A string prompt becomes a chat prompt with `instruction`; a prompt that is already a list of messages is kept.
    """
    prompt = _field(example, columns.get("prompt", "prompt"))
    return {
        "prompt": prompt if isinstance(prompt, list) else chat_prompt(str(prompt), instruction),
        "answer": _answer(example, columns.get("answer", "answer")),
        "reference": str(_field(example, columns.get("reference", "reference"))).strip(),
    }


def _answer(example: Mapping, column: str) -> str:
    try:
        return answer_text(_field(example, column)).strip()
    except TypeError as error:
        raise RowError(f"column {column!r}: {error}") from error


def _field(example: Mapping, column: str):
    value = example.get(column)
    if value is None:
        present = sorted(key for key, other in example.items() if other is not None)
        raise RowError(f"column {column!r} is missing (the row has {present})")
    if isinstance(value, str) and not value.strip():
        raise RowError(f"column {column!r} is empty")
    return value


def _checked_answers(examples: list[dict], indices: list[int], failures: list, on_error: str, source: str) -> list:
    """The examples whose answer parses and whose reference verifies against it; the others join `failures`."""
    answers = [example["answer"] for example in examples]
    answer_ok = verify_batch([f"\\boxed{{{answer}}}" for answer in answers], answers)
    reference_ok = verify_batch([example["reference"] for example in examples], answers)
    kept = []
    for index, example, answer_valid, reference_valid in zip(indices, examples, answer_ok, reference_ok):
        if answer_valid is not True:
            reason = f"column 'answer' value {example['answer']!r} cannot be parsed as a math answer"
        elif reference_valid is not True:
            reason = f"column 'reference' does not end with an answer equivalent to {example['answer']!r}"
        else:
            kept.append(example)
            continue
        failures.append((index, reason))
        if on_error == "raise":
            _raise_row_error(source, index, reason)
    return kept


def prepare_vtd_dataset(
    dataset: Dataset,
    style: Literal["gsm8k", "math", "columns"] | None = None,
    *,
    columns: Mapping[str, str] | None = None,
    instruction: str | None = DEFAULT_INSTRUCTION,
    on_error: Literal["raise", "skip"] = "raise",
    check_answers: bool = True,
    source: str = "dataset",
) -> Dataset:
    """
    Turns rows into VtD examples with the columns `prompt`, `answer` and `reference`, checking every row.

    A row fails when a field is missing or empty, its GSM8K solution has no `####` line, its MATH solution has no
    boxed answer, and (with `check_answers`) when its answer cannot be parsed by `vtd_trl.verify` or its reference
    does not end with an answer equivalent to it (a DPO pair would then teach a wrong answer).

    Args:
        dataset (`datasets.Dataset`):
            Rows to convert.
        style (`str`, *optional*):
            `"gsm8k"` (`question`, `answer` with `#### N`), `"math"` (`problem`, `solution` with `\\boxed{}`) or
            `"columns"` (use `columns`). Inferred from the column names when not given.
        columns (`dict[str, str]`, *optional*):
            For `"columns"`: the row column holding each of `prompt`, `answer`, `reference`.
        instruction (`str` or `None`, *optional*, defaults to [`DEFAULT_INSTRUCTION`]):
            Appended on its own line to string prompts; `None` leaves them as they are.
        on_error (`str`, *optional*, defaults to `"raise"`):
            `"raise"` stops at the first failing row with an error naming source, row and column; `"skip"` drops
            failing rows and logs how many were dropped and why.
        check_answers (`bool`, *optional*, defaults to `True`):
            Check that each answer parses and each reference verifies against it (math-verify on non-numeric answers:
            a few seconds per thousand rows).
        source (`str`, *optional*):
            Name of the data in error messages (a file path, a hub id).

    Returns:
        `datasets.Dataset`: The VtD columns only, rows in their original order.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
    formatter = _formatter(dataset.column_names, style, columns, instruction, source)
    examples, indices, failures = [], [], []
    for index, row in enumerate(dataset):
        try:
            examples.append(formatter(row))
            indices.append(index)
        except RowError as error:
            failures.append((index, str(error)))
            if on_error == "raise":
                _raise_row_error(source, index, str(error))
    if check_answers and examples:
        examples = _checked_answers(examples, indices, failures, on_error, source)
    if failures:
        shown = "; ".join(f"row {index}: {reason}" for index, reason in sorted(failures)[:5])
        logger.warning(
            f"Skipped {len(failures)} of {len(dataset)} rows of {source} ({shown}{'; ...' if len(failures) > 5 else ''})."
        )
    return Dataset.from_list(examples) if examples else Dataset.from_dict({column: [] for column in VTD_COLUMNS})


def _formatter(
    column_names: list[str],
    style: str | None,
    columns: Mapping[str, str] | None,
    instruction: str | None,
    source: str,
) -> Callable[[Mapping], dict]:
    if style is None:
        if columns is not None or set(VTD_COLUMNS) <= set(column_names):
            style = "columns"
        elif {"question", "answer"} <= set(column_names):
            style = "gsm8k"
        elif {"problem", "solution"} <= set(column_names):
            style = "math"
        else:
            raise ValueError(
                f"Cannot tell the layout of {source} from its columns {column_names}: name them prompt, answer and "
                "reference, or pass style='gsm8k' / --dataset_style gsm8k (question, answer with '#### N'), "
                "style='math' / --dataset_style math (problem, solution with \\boxed{}), or map yours with "
                "columns={'prompt': ..., 'answer': ..., 'reference': ...} / --dataset_columns '{\"prompt\": ...}'."
            )
    if style == "gsm8k":
        return lambda row: format_gsm8k(row, instruction)
    if style == "math":
        return lambda row: format_math(row, instruction)
    if style == "columns":
        columns = columns or {}  # a missing key keeps the VtD name
        unknown = sorted(set(columns) - set(VTD_COLUMNS))
        if unknown:
            raise ValueError(f"columns maps VtD columns {list(VTD_COLUMNS)} to yours; unknown keys {unknown}.")
        return lambda row: format_columns(row, columns, instruction)
    raise ValueError(f"style must be 'gsm8k', 'math' or 'columns', got {style!r}.")


def _raise_row_error(source: str, index: int, reason: str) -> None:
    raise RowError(
        f"{source} row {index} (counting from 0): {reason}. Fix the row, map your columns (--dataset_columns, "
        "columns=...), or drop such rows (--dataset_on_error skip, on_error='skip')."
    )


def load_vtd_dataset(
    source: str,
    style: Literal["gsm8k", "math", "columns"] | None = None,
    *,
    config: str | None = None,
    split: str = "train",
    columns: Mapping[str, str] | None = None,
    instruction: str | None = DEFAULT_INSTRUCTION,
    on_error: Literal["raise", "skip"] = "raise",
    check_answers: bool = True,
) -> Dataset:
    """
    Loads a hub dataset or a local `.jsonl` / `.json` / `.parquet` file and converts it with [`prepare_vtd_dataset`].

    Args:
        source (`str`):
            A local file path (read offline), or a hub dataset id such as `"openai/gsm8k"`.
        style (`str`, *optional*):
            `"gsm8k"`, `"math"` or `"columns"`; inferred from the column names when not given.
        config (`str`, *optional*):
            Hub dataset configuration (`"main"` for `openai/gsm8k`).
        split (`str`, *optional*, defaults to `"train"`):
            Hub split; a local file is one split.
        columns, instruction, on_error, check_answers:
            As in [`prepare_vtd_dataset`].

    Example:
    ```python
    >>> train = load_vtd_dataset("openai/gsm8k", config="main")
    >>> train = load_vtd_dataset("data/my_problems.jsonl", columns={"prompt": "q", "answer": "a", "reference": "cot"})
    ```
    """
    if os.path.isfile(source):
        extension = os.path.splitext(source)[1].lower()
        if extension not in _LOCAL_BUILDERS:
            raise ValueError(
                f"Cannot read {source}: local files must end in {sorted(_LOCAL_BUILDERS)}, got {extension!r}."
            )
        dataset = load_dataset(_LOCAL_BUILDERS[extension], data_files=source, split="train")
        name = source
    else:
        dataset = load_dataset(source, config, split=split)
        name = f"{source}" + (f" ({config}, {split})" if config else f" ({split})")
    return prepare_vtd_dataset(
        dataset,
        style,
        columns=columns,
        instruction=instruction,
        on_error=on_error,
        check_answers=check_answers,
        source=name,
    )
