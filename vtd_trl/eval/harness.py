"""Run an evaluation end to end: load problems, generate what is missing, grade, score, write the summary."""

import logging
import math
import zlib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from ..verify import extract_answer, verify
from .benchmarks import Problem, file_sha256, get_benchmark, load_benchmark
from .config import EvalConfig
from .generate import TransformersGenerator, VLLMGenerator, resolve_backend
from .results import (
    RUN_FILE,
    SAMPLES_FILE,
    SUMMARY_FILE,
    append_samples,
    check_or_write_run,
    read_samples,
    write_samples,
    write_summary,
)
from .scoring import bootstrap_ci, score_samples

logger = logging.getLogger(__name__)

_VERSIONED_PACKAGES = ["vtd-trl", "torch", "transformers", "trl", "datasets", "math-verify", "vllm"]


def sample_seed(seed: int, problem_id: str, sample_index: int) -> int:
    """Seed of one sample: a stable hash (not Python's salted `hash`) of the base seed, problem id and index, so a
    resumed run seeds each remaining sample as the first run would have."""
    return zlib.crc32(f"{seed}:{problem_id}:{sample_index}".encode())


def ungradable_reason(problem: Problem) -> str | None:
    """Why a parser cannot grade `problem`: the benchmark's own reason, or a gold answer that `vtd_trl.verify`
    cannot match even when the completion is the gold answer itself."""
    if problem.ungradable_reason is not None:
        return problem.ungradable_reason
    if verify(f"\\boxed{{{problem.answer}}}", problem.answer) is not True:
        return "gold answer cannot be parsed"
    return None


def build_prompt(tokenizer: PreTrainedTokenizerBase, template: str, problem: str, enable_thinking: bool) -> str:
    """The chat-formatted prompt text for one problem (`{problem}` replaced literally: templates hold `\\boxed{}`)."""
    messages = [{"role": "user", "content": template.replace("{problem}", problem)}]
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
    )


def grade(completion: str, problem: Problem, gradable: bool) -> tuple[str | None, bool | None]:
    """The extracted answer and its correctness (`None` for a problem that cannot be graded).

    Gradability is decided once per problem, up front; for a gradable problem a verdict of `None` (a verifier timeout
    under load) is incorrect, so that one sample cannot take its whole problem out of the score.
    """
    return extract_answer(completion), (verify(completion, problem.answer) is True if gradable else None)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def _run_identity(config: EvalConfig) -> dict:
    """What the saved samples depend on; resuming with any of it changed is refused."""
    benchmark = get_benchmark(config.benchmark)
    if config.data_file is not None:
        data = {"data_file": str(config.data_file), "sha256": file_sha256(config.data_file)}
    else:
        data = {"hub_id": benchmark.hub_id, "hub_config": benchmark.hub_config, "split": benchmark.split}
    data.update(
        problem_column=config.problem_column or benchmark.problem_column,
        answer_column=config.answer_column or benchmark.answer_column,
    )
    return {
        "model": config.model,
        "tokenizer": config.tokenizer or config.model,
        "benchmark": config.benchmark,
        "data": data,
        "prompt_template": config.prompt_template,
        "chat_template_kwargs": {"enable_thinking": config.enable_thinking},
        "sampling": vars(config.sampling),
        "seed": config.seed,
        "dtype": config.dtype,  # bf16 and fp32 weights sample different completions
    }


def _build_generator(config: EvalConfig, backend: str, tokenizer: PreTrainedTokenizerBase):
    if backend == "vllm":
        return VLLMGenerator(
            config.model,
            config.tokenizer or config.model,
            config.sampling,
            tensor_parallel_size=config.tensor_parallel_size,
            gpu_memory_utilization=config.gpu_memory_utilization,
            max_model_len=config.max_model_len,
            dtype=config.dtype,
            seed=config.seed,
        )
    return TransformersGenerator(config.model, tokenizer, config.sampling, config.batch_size, config.dtype)


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _generate_missing(
    config: EvalConfig, pending: list[tuple[Problem, int]], gradable: dict[str, bool], samples_path: Path, backend: str
) -> list[dict]:
    """Generate, grade and append the `(problem, sample index)` pairs in `pending`; return their records."""
    tokenizer = AutoTokenizer.from_pretrained(config.tokenizer or config.model)
    prompt_ids = {}
    for problem, _ in pending:
        if problem.id not in prompt_ids:
            prompt = build_prompt(tokenizer, config.prompt_template, problem.problem, config.enable_thinking)
            prompt_ids[problem.id] = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    generator = _build_generator(config, backend, tokenizer)
    prompts = [prompt_ids[p.id] for p, _ in pending]
    seeds = [sample_seed(config.seed, p.id, i) for p, i in pending]
    records = []
    for chunk in generator.generate(prompts, seeds):
        new = []
        for index, completion in chunk:
            problem, sample_index = pending[index]
            extracted, correct = grade(completion.text, problem, gradable[problem.id])
            new.append(
                {
                    "problem_id": problem.id,
                    "sample_index": sample_index,
                    "completion": completion.text,
                    "extracted": extracted,
                    "gold": problem.answer,
                    "correct": correct,
                    "num_tokens": completion.num_tokens,
                    "truncated": completion.truncated,
                    "backend": backend,
                }
            )
        append_samples(samples_path, new)
        records.extend(new)
    return records


def _select(config: EvalConfig, problems: list[Problem]) -> tuple[dict[str, str], dict[str, bool], list[Problem]]:
    """The problems a parser cannot grade (id: reason), whether each problem is gradable, and the problems to
    generate for (the gradable ones, or all with `include_ungradable`)."""
    ungradable = {p.id: reason for p in problems if (reason := ungradable_reason(p)) is not None}
    gradable = {p.id: p.id not in ungradable for p in problems}
    selected = [p for p in problems if config.include_ungradable or gradable[p.id]]
    if ungradable:
        logger.warning(
            "%d of %d %s problems cannot be graded by a parser and are %s: %s",
            len(ungradable),
            len(problems),
            config.benchmark,
            "generated but not scored" if config.include_ungradable else "left out",
            ", ".join(ungradable),
        )
    return ungradable, gradable, selected


def _regrade(records: list[dict], problems: list[Problem], gradable: dict[str, bool]) -> None:
    """Grade the saved completions again in place (after a change of the verifier), without generating."""
    by_id = {p.id: p for p in problems}
    for record in records:
        if (problem := by_id.get(str(record["problem_id"]))) is not None:
            record["extracted"], record["correct"] = grade(record["completion"], problem, gradable[problem.id])


def evaluate(config: EvalConfig) -> dict:
    """Evaluate `config.model` on `config.benchmark`, resuming from `config.output_dir`, and return the summary.

    Writes `run.json`, `samples.jsonl` (problem id, sample index, completion, extracted answer, correct, length,
    truncation) and `summary.json` (scores, bootstrap interval, counts, prompt, sampling, versions).
    """
    output_dir = Path(config.output_dir)
    problems = load_benchmark(
        config.benchmark, config.data_file, config.problem_column, config.answer_column, config.id_column, config.limit
    )
    ungradable, gradable, selected = _select(config, problems)

    # 1. Resume: refuse samples of other settings, keep the ones already generated.
    identity = _run_identity(config)
    check_or_write_run(output_dir / RUN_FILE, identity)
    samples_path = output_dir / SAMPLES_FILE
    records = read_samples(samples_path)
    if config.regrade:
        _regrade(records, problems, gradable)
        write_samples(samples_path, records)

    # 2. Generate what is missing.
    done = {(str(r["problem_id"]), r["sample_index"]) for r in records}
    pending = [(p, i) for p in selected for i in range(config.n_samples) if (p.id, i) not in done]
    backend = resolve_backend(config.backend)
    if pending:
        logger.info(
            "Generating %d samples (%d already in %s) with %s.", len(pending), len(done), samples_path, backend
        )
        records += _generate_missing(config, pending, gradable, samples_path, backend)

    # 3. Score the selected problems from their records.
    selected_ids = {p.id for p in selected}
    scored = [r for r in records if str(r["problem_id"]) in selected_ids and r["sample_index"] < config.n_samples]
    scores = score_samples(scored, config.mode, config.n_samples)
    low, high = bootstrap_ci(scores.per_problem.values(), config.confidence, config.bootstrap_resamples, config.seed)
    summary = {
        **identity,
        "mode": config.mode,
        "n_samples": config.n_samples,
        "metric": scores.metric,
        "score": _nan_to_none(scores.score),
        "ci": {
            "confidence": config.confidence,
            "low": _nan_to_none(low),
            "high": _nan_to_none(high),
            "method": f"percentile bootstrap over problems, {config.bootstrap_resamples} resamples",
        },
        "metrics": scores.metrics,
        "counts": {**scores.counts, "benchmark_problems": len(problems), "ungradable_in_benchmark": len(ungradable)},
        "ungradable": ungradable,
        "backends": sorted({r.get("backend", "unknown") for r in scored}),
        "config": config.to_dict(),
        "versions": package_versions(),
    }
    write_summary(output_dir / SUMMARY_FILE, summary)
    logger.info(
        "%s on %s: %s = %.4f (%.0f%% CI %.4f-%.4f) over %d problems; %d ungradable left out.",
        config.model,
        config.benchmark,
        scores.metric,
        scores.score,
        100 * config.confidence,
        low,
        high,
        scores.counts["graded"],
        len(ungradable),
    )
    return summary
