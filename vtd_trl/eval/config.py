"""Configuration of an evaluation run; the dataclass is also the command line of `scripts/eval/eval_*.py`."""

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from .benchmarks import BENCHMARKS

DEFAULT_PROMPT = "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{}."

# Qwen3's recommended sampling for thinking mode (model card, "Best Practices").
QWEN3_THINKING_SAMPLING = {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0}
DEFAULT_SAMPLES = {"greedy": 1, "majority": 16, "average": 16}


@dataclass(frozen=True)
class Sampling:
    """Decoding parameters shared by every backend. `temperature == 0` is greedy decoding; `top_k == 0` disables
    top-k."""

    temperature: float
    top_p: float
    top_k: int
    min_p: float
    max_tokens: int

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class EvalConfig:
    r"""
    Configuration of one evaluation: a model on a benchmark in one mode.

    Parameters:
        > Parameters that control what is evaluated

        model (`str`):
            Model id on the Hub or local path.
        benchmark (`str`):
            Benchmark name: `aime24`, `aime25`, `hmmt25`, `amo_bench`, `gsm8k` or `math500`.
        mode (`str`, *optional*, defaults to `"greedy"`):
            `greedy` (temperature 0, one sample, pass@1), `majority` (maj@N: vote over N sampled answers) or
            `average` (avg@N: mean accuracy over N samples).
        n_samples (`int` or `None`, *optional*, defaults to `None`):
            Samples per problem; `None` means 1 for `greedy` and 16 otherwise.
        data_file (`str` or `None`, *optional*, defaults to `None`):
            Local `.jsonl`/`.json`/`.parquet`/`.csv` file to read instead of the Hub.
        problem_column, answer_column, id_column (`str` or `None`, *optional*, defaults to `None`):
            Column names overriding the benchmark's.
        limit (`int` or `None`, *optional*, defaults to `None`):
            Evaluate only the first `limit` problems.
        include_ungradable (`bool`, *optional*, defaults to `False`):
            Also generate for problems a parser cannot grade (their samples are saved with `correct: null` and are
            left out of the score).

        > Parameters that control generation

        prompt_template (`str`, *optional*, defaults to `DEFAULT_PROMPT`):
            User message; `{problem}` is replaced by the problem statement.
        enable_thinking (`bool`, *optional*, defaults to `True`):
            Passed to the chat template (Qwen3's thinking switch).
        temperature, top_p, top_k, min_p:
            Sampling parameters for `majority` and `average` (defaults: Qwen3 thinking mode, 0.6 / 0.95 / 20 / 0).
            `greedy` always decodes with temperature 0.
        max_tokens (`int`, *optional*, defaults to `32768`):
            Maximum new tokens per completion.
        seed (`int`, *optional*, defaults to `0`):
            Base seed; each sample's seed is derived from it, the problem id and the sample index.
        backend (`str`, *optional*, defaults to `"auto"`):
            `vllm`, `transformers`, or `auto` (vLLM when it is installed and a GPU is visible).
        tokenizer (`str` or `None`, *optional*, defaults to `None`):
            Tokenizer id or path, when it differs from `model`.
        dtype (`str`, *optional*, defaults to `"auto"`):
            Weights dtype (`auto`, `bfloat16`, `float16`, `float32`).
        batch_size (`int`, *optional*, defaults to `8`):
            Sequences per `generate` call of the transformers backend.
        tensor_parallel_size (`int`, *optional*, defaults to `1`):
            vLLM tensor parallel size.
        gpu_memory_utilization (`float`, *optional*, defaults to `0.9`):
            Fraction of GPU memory vLLM may use.
        max_model_len (`int` or `None`, *optional*, defaults to `None`):
            vLLM context length (prompt + completion); `None` uses the model's.

        > Parameters that control outputs

        output_dir (`str` or `None`, *optional*, defaults to `None`):
            Where `samples.jsonl`, `run.json` and `summary.json` go; defaults to
            `eval_results/<model>/<benchmark>/<mode>`. Re-running into the same directory resumes.
        regrade (`bool`, *optional*, defaults to `False`):
            Re-extract and re-verify every saved sample before scoring (after a change to `vtd_trl.verify`).
        confidence (`float`, *optional*, defaults to `0.95`):
            Level of the bootstrap confidence interval.
        bootstrap_resamples (`int`, *optional*, defaults to `10000`):
            Bootstrap resamples of the problems.
    """

    model: str = field(metadata={"help": "Model id on the Hub or local path."})
    benchmark: str | None = field(
        default=None, metadata={"help": f"Benchmark name: {', '.join(BENCHMARKS)}.", "choices": list(BENCHMARKS)}
    )
    mode: Literal["greedy", "majority", "average"] = field(
        default="greedy",
        metadata={"help": "greedy (pass@1, temperature 0), majority (maj@N) or average (avg@N)."},
    )
    n_samples: int | None = field(
        default=None, metadata={"help": "Samples per problem; default 1 for greedy and 16 otherwise."}
    )
    data_file: str | None = field(
        default=None, metadata={"help": "Local .jsonl/.json/.parquet/.csv file to read instead of the Hub."}
    )
    problem_column: str | None = field(default=None, metadata={"help": "Column with the problem statement."})
    answer_column: str | None = field(default=None, metadata={"help": "Column with the gold answer."})
    id_column: str | None = field(default=None, metadata={"help": "Column with the problem id."})
    limit: int | None = field(default=None, metadata={"help": "Evaluate only the first `limit` problems."})
    include_ungradable: bool = field(
        default=False,
        metadata={"help": "Also generate for problems a parser cannot grade (saved, left out of the score)."},
    )
    prompt_template: str = field(
        default=DEFAULT_PROMPT, metadata={"help": "User message; {problem} is replaced by the problem statement."}
    )
    enable_thinking: bool = field(default=True, metadata={"help": "Chat template thinking switch (Qwen3)."})
    temperature: float = field(
        default=QWEN3_THINKING_SAMPLING["temperature"], metadata={"help": "Sampling temperature (not greedy)."}
    )
    top_p: float = field(default=QWEN3_THINKING_SAMPLING["top_p"], metadata={"help": "Nucleus sampling mass."})
    top_k: int = field(default=QWEN3_THINKING_SAMPLING["top_k"], metadata={"help": "Top-k sampling; 0 disables."})
    min_p: float = field(default=QWEN3_THINKING_SAMPLING["min_p"], metadata={"help": "Min-p sampling; 0 disables."})
    max_tokens: int = field(default=32768, metadata={"help": "Maximum new tokens per completion."})
    seed: int = field(default=0, metadata={"help": "Base seed of the per-sample seeds."})
    backend: Literal["auto", "vllm", "transformers"] = field(
        default="auto", metadata={"help": "vllm, transformers, or auto (vLLM when installed and a GPU is visible)."}
    )
    tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer id or path, if not the model's."})
    dtype: str = field(default="auto", metadata={"help": "Weights dtype: auto, bfloat16, float16 or float32."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per generate call (transformers backend)."})
    tensor_parallel_size: int = field(default=1, metadata={"help": "vLLM tensor parallel size."})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "Fraction of GPU memory vLLM may use."})
    max_model_len: int | None = field(default=None, metadata={"help": "vLLM context length; default the model's."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Results directory; default eval_results/<model>/<benchmark>/<mode>."}
    )
    regrade: bool = field(default=False, metadata={"help": "Re-extract and re-verify saved samples before scoring."})
    confidence: float = field(default=0.95, metadata={"help": "Level of the bootstrap confidence interval."})
    bootstrap_resamples: int = field(default=10000, metadata={"help": "Bootstrap resamples of the problems."})

    def __post_init__(self):
        if self.benchmark not in BENCHMARKS:
            raise ValueError(f"benchmark={self.benchmark!r} is not known; choose one of {', '.join(BENCHMARKS)}.")
        if self.n_samples is None:
            self.n_samples = DEFAULT_SAMPLES[self.mode]
        if self.n_samples < 1:
            raise ValueError(f"n_samples={self.n_samples} must be at least 1.")
        if self.mode == "greedy" and self.n_samples != 1:
            raise ValueError(
                f"mode='greedy' decodes one deterministic sample, but n_samples={self.n_samples}; "
                f"use --mode majority or --mode average for several samples."
            )
        if "{problem}" not in self.prompt_template:
            raise ValueError(f"prompt_template={self.prompt_template!r} must contain the placeholder {{problem}}.")
        if self.mode != "greedy" and self.temperature <= 0:
            raise ValueError(
                f"temperature={self.temperature} with mode={self.mode!r} would repeat one sample N times; "
                f"use a positive temperature, or --mode greedy."
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1].")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0 (0 disables top-k).")
        if not 0 <= self.min_p < 1:
            raise ValueError(f"min_p={self.min_p} must be in [0, 1).")
        for name in ("max_tokens", "batch_size", "tensor_parallel_size", "bootstrap_resamples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1.")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit={self.limit} must be at least 1 (or unset for the whole benchmark).")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence={self.confidence} must be in (0, 1), e.g. 0.95.")
        if self.dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ValueError(f"dtype={self.dtype!r} must be one of auto, bfloat16, float16, float32.")
        if self.output_dir is None:
            self.output_dir = str(Path("eval_results") / model_slug(self.model) / self.benchmark / self.mode)

    @property
    def sampling(self) -> Sampling:
        """The decoding parameters of this run (greedy mode decodes at temperature 0, without top-p/top-k)."""
        if self.mode == "greedy":
            return Sampling(temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, max_tokens=self.max_tokens)
        return Sampling(self.temperature, self.top_p, self.top_k, self.min_p, self.max_tokens)

    def to_dict(self) -> dict:
        return asdict(self)


def model_slug(model: str) -> str:
    """A directory name for a model: the folder name of a local path, `org--name` for a Hub id."""
    if os.path.isdir(model):
        return Path(model).resolve().name
    return model.strip("/").replace("/", "--")
