"""The evaluation benchmarks: where each one lives on the Hub, which columns hold what, and how to load it.

The Hub ids, splits and column names below are taken from the dataset cards (they cannot be downloaded on the
machines this library is developed on). Every column name can be overridden, and every benchmark can be read from a
local file instead (`data_file`), so a renamed column or an offline machine never blocks an evaluation.
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets


@dataclass(frozen=True)
class Problem:
    """One benchmark problem.

    Args:
        id: unique id within the benchmark (the dataset's id column, or the row index when it has none).
        problem: the problem statement given to the model.
        answer: the gold final answer, as a string.
        ungradable_reason: why a parser cannot grade this problem (e.g. a free-text answer that needs an LLM judge),
            or `None` when it can.
    """

    id: str
    problem: str
    answer: str
    ungradable_reason: str | None = None


@dataclass(frozen=True)
class Benchmark:
    """Where a benchmark lives on the Hub and how its rows map to [`Problem`]s.

    Args:
        name: short name used on the command line and in result files (`aime24`).
        title: name shown in tables (`AIME 2024`).
        hub_id: dataset id on the Hugging Face Hub.
        split: split to evaluate.
        problem_column: column holding the problem statement.
        answer_column: column holding the gold final answer.
        id_column: column holding a problem id, or `None` to use the row index.
        hub_config: dataset configuration name, if the dataset has several.
        normalize_answer: turns the raw answer cell into the final answer (e.g. GSM8K's `... #### 42` into `42`).
        ungradable_reason: returns why a row cannot be graded by a parser, or `None`.
    """

    name: str
    title: str
    hub_id: str
    split: str
    problem_column: str
    answer_column: str
    id_column: str | None
    hub_config: str | None = None
    normalize_answer: Callable[[str], str] | None = None
    ungradable_reason: Callable[[dict], str | None] | None = None


def gsm8k_final_answer(solution: str) -> str:
    """GSM8K's final answer: the text after the last `####`, without thousands separators (`1,000` -> `1000`)."""
    return solution.split("####")[-1].strip().replace(",", "")


def amo_bench_ungradable_reason(row: dict) -> str | None:
    """AMO-Bench grades its `description` answers (11 of 50) with an LLM judge; the other 39 (AMO-Bench-P) by parser."""
    if row.get("answer_type") == "description":
        return "answer_type 'description' needs an LLM judge"
    return None


# Sources, as their dataset cards describe them (all 30 AIME/HMMT problems have integer answers):
# - aime24: HuggingFaceH4/aime_2024, split "train", 30 rows; columns id, problem, solution, answer, url, year.
# - aime25: yentinglin/aime_2025, split "train", 30 rows (AIME 2025 I and II); columns id, problem, answer, solution,
#   url, year. Chosen over opencompass/AIME2025 because it is one split with the same schema as aime_2024 (the
#   OpenCompass copy splits I and II into two configs with a `question` column), and because it is the copy used by
#   lighteval and open-r1, so scores stay comparable with published Qwen3 and open-r1 numbers.
# - hmmt25: MathArena/hmmt_feb_2025, split "train", 30 rows; columns problem_idx, problem, answer, problem_type.
# - amo_bench: meituan-longcat/AMO-Bench, split "test", 50 rows; columns question_id, prompt, answer, answer_type
#   (number, set, variable or description), solution.
# - gsm8k: openai/gsm8k, config "main", split "test", 1,319 rows; columns question, answer (worked solution ending
#   in "#### <final answer>").
# - math500: HuggingFaceH4/MATH-500, split "test", 500 rows; columns problem, solution, answer, subject, level,
#   unique_id.
BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark("aime24", "AIME 2024", "HuggingFaceH4/aime_2024", "train", "problem", "answer", "id"),
        Benchmark("aime25", "AIME 2025", "yentinglin/aime_2025", "train", "problem", "answer", "id"),
        Benchmark("hmmt25", "HMMT Feb 2025", "MathArena/hmmt_feb_2025", "train", "problem", "answer", "problem_idx"),
        Benchmark(
            "amo_bench",
            "AMO-Bench",
            "meituan-longcat/AMO-Bench",
            "test",
            "prompt",
            "answer",
            "question_id",
            ungradable_reason=amo_bench_ungradable_reason,
        ),
        Benchmark(
            "gsm8k",
            "GSM8K",
            "openai/gsm8k",
            "test",
            "question",
            "answer",
            None,
            hub_config="main",
            normalize_answer=gsm8k_final_answer,
        ),
        Benchmark("math500", "MATH-500", "HuggingFaceH4/MATH-500", "test", "problem", "answer", "unique_id"),
    ]
}

_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark called `name`."""
    if name not in BENCHMARKS:
        raise ValueError(f"Unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}.")
    return BENCHMARKS[name]


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, recorded with the results so a local data file can be identified later."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_rows(benchmark: Benchmark, data_file: str | Path | None) -> datasets.Dataset:
    if data_file is not None:
        path = Path(data_file)
        if not path.is_file():
            raise FileNotFoundError(f"data_file {str(path)!r} for {benchmark.name} does not exist.")
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(
                f"data_file {str(path)!r} has suffix {path.suffix!r}; use one of {', '.join(_FILE_BUILDERS)}."
            )
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    try:
        return datasets.load_dataset(benchmark.hub_id, benchmark.hub_config, split=benchmark.split)
    except Exception as err:  # offline, gated, renamed: every cause gets the same way out
        config = f", {benchmark.hub_config!r}" if benchmark.hub_config else ""
        raise RuntimeError(
            f"Could not load {benchmark.name} from the Hugging Face Hub ({benchmark.hub_id}, split "
            f"{benchmark.split!r}{config}): {type(err).__name__}: {err}\n"
            f"If the Hub is unreachable from this machine, save the dataset to a file where it is reachable, e.g.\n"
            f"  python -c \"import datasets; datasets.load_dataset('{benchmark.hub_id}'{config}, "
            f"split='{benchmark.split}').to_json('{benchmark.name}.jsonl')\"\n"
            f"then copy it here and pass --data-file {benchmark.name}.jsonl (.jsonl, .json, .parquet and .csv "
            f"work). The file needs the columns {benchmark.problem_column!r} and {benchmark.answer_column!r} "
            f"(rename them with --problem-column / --answer-column)."
        ) from err


def load_benchmark(
    benchmark: str | Benchmark,
    data_file: str | Path | None = None,
    problem_column: str | None = None,
    answer_column: str | None = None,
    id_column: str | None = None,
    limit: int | None = None,
) -> list[Problem]:
    """Load a benchmark's problems from the Hub, or from a local `.jsonl`/`.json`/`.parquet`/`.csv` file.

    Args:
        benchmark: a name from [`BENCHMARKS`] or a [`Benchmark`].
        data_file: local file to read instead of the Hub.
        problem_column, answer_column, id_column: override the benchmark's column names. Without an id column the
            row index is the id.
        limit: keep only the first `limit` problems (smoke tests).

    Returns:
        The problems, in dataset order.
    """
    if isinstance(benchmark, str):
        benchmark = get_benchmark(benchmark)
    rows = _load_rows(benchmark, data_file)
    source = str(data_file) if data_file is not None else benchmark.hub_id
    problem_column = problem_column or benchmark.problem_column
    answer_column = answer_column or benchmark.answer_column
    id_column = id_column or benchmark.id_column
    # A local file without the default id column (e.g. a hand-made one) falls back to row indices.
    if id_column is not None and id_column not in rows.column_names and id_column == benchmark.id_column:
        id_column = None
    for role, column in (("problem", problem_column), ("answer", answer_column), ("id", id_column)):
        if column is not None and column not in rows.column_names:
            raise ValueError(
                f"{source} has no column {column!r} for the {role} (columns: {', '.join(rows.column_names)}); "
                f"pass --{role}-column with the right name."
            )

    problems, seen = [], {}
    for index, row in enumerate(rows):
        if limit is not None and index >= limit:
            break
        problem_id = str(row[id_column]) if id_column is not None else str(index)
        if problem_id in seen:
            raise ValueError(
                f"{source}: rows {seen[problem_id]} and {index} share the id {problem_id!r} in column {id_column!r}; "
                f"ids must be unique (pass --id-column with a unique column)."
            )
        seen[problem_id] = index
        text, answer = row[problem_column], row[answer_column]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{source}: row {index} (id {problem_id!r}) has an empty {problem_column!r}: {text!r}.")
        answer = "" if answer is None else str(answer).strip()
        if benchmark.normalize_answer is not None:
            answer = benchmark.normalize_answer(answer)
        if not answer:
            raise ValueError(
                f"{source}: row {index} (id {problem_id!r}) has an empty answer in column {answer_column!r}; "
                f"fix the row or remove it from the file."
            )
        reason = benchmark.ungradable_reason(row) if benchmark.ungradable_reason is not None else None
        problems.append(Problem(problem_id, text, answer, reason))
    return problems
