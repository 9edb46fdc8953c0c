"""What `scripts/vtd.py` runs, importable from your own code: dataset loading, the run summary, train / save / push,
and the console the run prints (the command line itself is `vtd_trl.cli`).

```python
from vtd_trl.cli import main

main(["--config", "recipes/demo_tuned.yaml", "--max_steps", "10"])  # as `python scripts/vtd.py ...`
```

or, with the parsed arguments in hand:

```python
from trl import ModelConfig, TrlParser
from vtd_trl import VtDConfig
from vtd_trl.train import VtDScriptArguments, run

script_args, training_args, model_args = TrlParser((VtDScriptArguments, VtDConfig, ModelConfig)).parse_args_and_config()
run(script_args, training_args, model_args)
```
"""

import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelerate import PartialState
from accelerate.utils import DistributedType
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import TrainerCallback
from trl import ModelConfig, get_peft_config, get_quantization_config

from .config import VtDConfig, check_teacher_source
from .data import load_vtd_dataset
from .demo.models import DEMO, resolve_model


@dataclass
class VtDScriptArguments:
    """
    Arguments of `scripts/vtd.py` that are not training or model arguments.

    Parameters:
        dataset_name (`str`):
            Hub dataset id (e.g. `openai/gsm8k`), a local `.jsonl` / `.json` / `.parquet` file, or `vtd-demo` for the
            offline toy task.
        dataset_config (`str`, *optional*):
            Hub dataset configuration (`main` for `openai/gsm8k`).
        dataset_train_split (`str`, *optional*, defaults to `"train"`):
            Split to train on.
        dataset_style (`str`, *optional*):
            Row layout: `gsm8k`, `math` or `columns`; inferred from the column names when not set.
        dataset_columns (`dict` or `str`, *optional*):
            For `dataset_style=columns`: which of your columns holds `prompt`, `answer`, `reference` (JSON on the
            command line).
        dataset_on_error (`str`, *optional*, defaults to `"raise"`):
            A row that cannot become a VtD example: `raise` an error naming file, row and column, or `skip` and count.
        max_train_samples (`int`, *optional*):
            Keep only the first N training rows.
        demo_train_rows (`int`, *optional*, defaults to `2000`):
            Number of training problems of the `vtd-demo` task.
        demo_eval_rows (`int`, *optional*, defaults to `200`):
            Held-out problems on which the `vtd-demo` run reports greedy accuracy before and after training.
        demo_reference_style (`str`, *optional*, defaults to `"think"`):
            References of the `vtd-demo` task: `think` (in the student's thinking-mode format) or `terse` (one line of
            steps and "The answer is N.", as human-written datasets have them).
    """

    dataset_name: str = field(metadata={"help": "Hub dataset id, a local .jsonl/.json/.parquet file, or 'vtd-demo'."})
    dataset_config: str | None = field(
        default=None, metadata={"help": "Hub dataset configuration ('main' for GSM8K)."}
    )
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_style: str | None = field(
        default=None,
        metadata={
            "help": "Row layout: 'gsm8k', 'math' or 'columns' (inferred when unset).",
            "choices": ["gsm8k", "math", "columns"],
        },
    )
    dataset_columns: dict[str, str] | str | None = field(
        default=None,
        metadata={"help": "For dataset_style=columns: JSON mapping of prompt/answer/reference to columns."},
    )
    dataset_on_error: str = field(
        default="raise",
        metadata={
            "help": "Rows that cannot become VtD examples: 'raise' or 'skip' (and count).",
            "choices": ["raise", "skip"],
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training rows."})
    demo_train_rows: int = field(default=2000, metadata={"help": "Training problems of the vtd-demo task."})
    demo_eval_rows: int = field(default=200, metadata={"help": "Held-out problems evaluated by a vtd-demo run."})
    demo_reference_style: str = field(
        default="think",
        metadata={"help": "References of the vtd-demo task: 'think' or 'terse'.", "choices": ["think", "terse"]},
    )

    def __post_init__(self):
        if isinstance(self.dataset_columns, str):
            try:
                self.dataset_columns = json.loads(self.dataset_columns)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"`dataset_columns` must be a JSON object, got {self.dataset_columns!r}. Example: "
                    '\'{"prompt": "question", "answer": "final", "reference": "solution"}\'.'
                ) from error
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ValueError(f"`max_train_samples` must be >= 1, got {self.max_train_samples}.")


def load_train_dataset(script_args: VtDScriptArguments, seed: int = 0) -> Dataset:
    """The training rows in VtD's columns, from the demo task, a hub dataset or a local file."""
    if script_args.dataset_name == DEMO:
        from .demo.task import demo_dataset

        dataset = demo_dataset(
            "train", script_args.demo_train_rows, seed=seed, reference_style=script_args.demo_reference_style
        )
    else:
        dataset = load_vtd_dataset(
            script_args.dataset_name,
            script_args.dataset_style,
            config=script_args.dataset_config,
            split=script_args.dataset_train_split,
            columns=script_args.dataset_columns,
            on_error=script_args.dataset_on_error,
        )
    if script_args.max_train_samples is not None:
        dataset = dataset.select(range(min(script_args.max_train_samples, len(dataset))))
    return dataset


def describe_run(
    script_args, training_args: VtDConfig, model_args: ModelConfig, dataset: Dataset, push_to_hub: bool = False
) -> str:
    """What the run is, in a few lines: printed at start so the log says what was run."""
    from .losses import resolve_backend

    args = training_args
    state = PartialState()
    world = state.num_processes
    prompts_per_step = (
        args.per_device_train_batch_size * world * args.gradient_accumulation_steps / args.num_generations
    )
    steps = (
        args.max_steps if args.max_steps > 0 else math.ceil(len(dataset) / prompts_per_step * args.num_train_epochs)
    )
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    peft = f"LoRA r={model_args.lora_r}" if model_args.use_peft else "full fine-tuning"
    generation = f"vLLM {args.vllm_mode}" if args.use_vllm else "transformers"
    distributed = state.distributed_type.value if hasattr(state.distributed_type, "value") else state.distributed_type
    distributed = "FSDP" if _fsdp_requested(args) and world > 1 else distributed  # accelerate applies it later
    processes = describe_processes(world, distributed, state.device.type, _zero_stage())
    teacher = args.teacher_model_name_or_path
    if args.teacher_server_base_url is not None:
        teacher = f"served at {args.teacher_server_base_url} (top-{args.vtd_distill_top_k} log-probs)"
    kernel = f"backend {resolve_backend(args.vtd_distill_backend, state.device)}"
    if args.vtd_distill_top_k:
        kernel = f"top-{args.vtd_distill_top_k} + tail"
    lines = [
        f"student   {model_args.model_name_or_path} ({peft})",
        f"teacher   {teacher}",
        f"dataset   {script_args.dataset_name} ({len(dataset)} prompts)",
        f"sampling  K={args.num_generations} completions/prompt, {prompts_per_step:g} prompts/step, "
        f"max {args.max_completion_length} tokens, temperature {args.temperature}, {generation}",
        f"loss      {args.vtd_distill_alpha} * distill (beta={args.vtd_distill_beta}, {kernel}) + "
        f"{args.vtd_contrast_beta} * DPO "
        f"(beta={args.vtd_dpo_beta}, {args.vtd_dpo_loss_type}, chosen: {args.vtd_chosen_source}"
        + (f", + {args.vtd_chosen_nll_weight} * chosen NLL" if args.vtd_chosen_nll_weight else "")
        + ")",
        f"schedule  {steps} optimizer step{'' if steps == 1 else 's'}, lr {args.learning_rate}, {precision}, {processes}",
        f"output    {args.output_dir}" + (f", pushed to {args.hub_model_id} at the end" if push_to_hub else ""),
    ]
    return "\n".join(lines)


def describe_processes(num_processes: int, distributed: str, device: str, zero_stage: int | None = None) -> str:
    """How the run is spread, in words: `1 process on CPU`, `4 processes, DeepSpeed ZeRO-3 on CUDA`.

    `distributed` is accelerate's `DistributedType` value (`NO`, `MULTI_GPU`, `DEEPSPEED`, `FSDP`, ...); `device` a
    torch device type.
    """
    count = f"{num_processes} process" + ("" if num_processes == 1 else "es")
    if distributed == "DEEPSPEED":
        scheme = "DeepSpeed" + (f" ZeRO-{zero_stage}" if zero_stage is not None else "")
    elif distributed == "FSDP":
        scheme = "FSDP"
    elif distributed.startswith("MULTI_"):
        scheme = "DDP"
    else:
        scheme = None
    return f"{count}, {scheme} on {device.upper()}" if scheme else f"{count} on {device.upper()}"


def _zero_stage() -> int | None:
    from transformers.integrations.deepspeed import deepspeed_config

    stage = (deepspeed_config() or {}).get("zero_optimization", {}).get("stage")
    return int(stage) if stage is not None else None


def demo_accuracy(model_or_path: Any, tokenizer, script_args: VtDScriptArguments, seed: int = 0) -> float:
    """Greedy held-out accuracy on the demo task (verified by `vtd_trl.verify`).

    Runs on this process alone, also in a ZeRO-3 run: a path is loaded whole; a model instance must not be sharded.
    """
    from transformers import AutoModelForCausalLM

    from .demo.evaluate import evaluate
    from .demo.task import demo_dataset

    held_out = demo_dataset("test", script_args.demo_eval_rows, seed=seed)
    with whole_models():  # and `generate` does not wait for the other processes at each token
        model = (
            AutoModelForCausalLM.from_pretrained(model_or_path) if isinstance(model_or_path, str) else model_or_path
        )
        return evaluate(model, tokenizer, held_out).accuracy


@contextmanager
def whole_models():
    """Models loaded inside are whole on this process, even in a ZeRO-3 run, which otherwise partitions every model
    that transformers loads while its config is alive (evaluating one on a single process then fails)."""
    from transformers.integrations import deepspeed as hf_deepspeed

    active = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = active


def set_init_kwargs(training_args: VtDConfig, model_args: ModelConfig) -> None:
    """As in TRL's scripts, `ModelConfig` sets how both models load; explicit `*_init_kwargs` in the recipe win."""
    init_kwargs = dict(
        revision=model_args.model_revision, attn_implementation=model_args.attn_implementation, dtype=model_args.dtype
    )
    training_args.model_init_kwargs = {**init_kwargs, **(training_args.model_init_kwargs or {})}
    teacher_kwargs = dict(attn_implementation=model_args.attn_implementation)
    if model_args.dtype != "float32" or not (training_args.bf16 or training_args.fp16):
        # Under mixed precision a frozen teacher loads in the compute dtype (the trainer's default), not in the
        # student's fp32 master dtype: ModelConfig's default would double an 8B teacher's memory.
        teacher_kwargs["dtype"] = model_args.dtype
    training_args.teacher_model_init_kwargs = {**teacher_kwargs, **(training_args.teacher_model_init_kwargs or {})}


def allow_fsdp_on_cpu(training_args: VtDConfig) -> None:
    """Let an FSDP launch shard over CPU processes (gloo), to debug a multi-GPU setup on a machine without GPUs.

    accelerate enables FSDP only on GPU-type process groups: on CPU it silently trains with plain DDP instead. Call
    this after the training arguments are built and before the trainer: it labels the CPU process group as a GPU one,
    so that the Accelerator shards (the device stays the CPU). It changes nothing on GPUs, without FSDP or with one
    process.
    """
    _ = training_args.device  # sets up the process group once; the Accelerator reuses it
    state = training_args.distributed_state
    on_cpu = state.device.type == "cpu" and state.distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU)
    if _fsdp_requested(training_args) and on_cpu and state.num_processes > 1:
        state.distributed_type = DistributedType.MULTI_GPU


def _fsdp_requested(training_args: VtDConfig) -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" or bool(training_args.fsdp)


@dataclass
class Prepared:
    """A run ready to train: its trainer, and what `train_and_save` needs after training."""

    trainer: Any
    script_args: VtDScriptArguments
    tokenizer: Any
    push_to_hub: bool
    accuracy: dict
    start: float


def run(script_args: VtDScriptArguments, training_args: VtDConfig, model_args: ModelConfig):
    """Train with VtD, save, optionally push, and end with what was done and what to run next; returns the trainer."""
    return train_and_save(prepare(script_args, training_args, model_args))


def prepare(script_args: VtDScriptArguments, training_args: VtDConfig, model_args: ModelConfig) -> Prepared:
    """Everything before training: the checks, the data, the run summary, the demo's first scores, the trainer."""
    from transformers import AutoTokenizer
    from transformers.integrations.deepspeed import deepspeed_config, is_deepspeed_zero3_enabled

    from .trainer import VtDTrainer

    start = time.perf_counter()
    # Before any loading: the trainer makes the same check, once the data and the first scores are done.
    server = training_args.teacher_server_base_url
    check_teacher_source(
        server, training_args.teacher_model_name_or_path, "--teacher_model_name_or_path", required=True
    )
    if model_args.model_name_or_path is None:
        raise ValueError("No student: set `--model_name_or_path` (a model id or path).")
    model_args.model_name_or_path = resolve_model(model_args.model_name_or_path)
    training_args.teacher_model_name_or_path = resolve_model(training_args.teacher_model_name_or_path)
    set_init_kwargs(training_args, model_args)

    # The script pushes once, after the local save, so that a hub failure (no network, no token) costs nothing.
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    state = PartialState()
    dataset = load_train_dataset(script_args, seed=training_args.seed)
    allow_fsdp_on_cpu(training_args)
    state.print(describe_run(script_args, training_args, model_args, dataset, push_to_hub), flush=True)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    demo = script_args.dataset_name == DEMO
    zero3 = is_deepspeed_zero3_enabled()
    if demo and zero3 and not deepspeed_config()["zero_optimization"].get("stage3_gather_16bit_weights_on_model_save"):
        raise ValueError(
            "The demo evaluates the trained student from its save, but under ZeRO-3 without "
            "`stage3_gather_16bit_weights_on_model_save` the save holds only DeepSpeed's shards. Set it to true in the "
            "DeepSpeed config (`zero3_save_16bit_model: true` in an accelerate config; recipes/accelerate/cpu/zero3.json "
            "has it)."
        )
    accuracy = {}
    if demo and state.is_main_process:
        accuracy["before"] = demo_accuracy(model_args.model_name_or_path, tokenizer, script_args)
        if server is None:
            accuracy["teacher"] = demo_accuracy(training_args.teacher_model_name_or_path, tokenizer, script_args)

    trainer = VtDTrainer(
        model=model_args.model_name_or_path,
        teacher_model=training_args.teacher_model_name_or_path,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )
    use_console_log(trainer)
    return Prepared(trainer, script_args, tokenizer, push_to_hub, accuracy, start)


def train_and_save(prepared: Prepared):
    """Train, save, write the model card, score the demo, push; print the end block; returns the trainer."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    trainer, script_args, training_args = prepared.trainer, prepared.script_args, prepared.trainer.args
    state = PartialState()
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    state.wait_for_everyone()
    trainer.create_model_card(dataset_name=script_args.dataset_name)

    accuracy = prepared.accuracy
    if script_args.dataset_name == DEMO and state.is_main_process:
        # A sharded student (ZeRO-3, FSDP) is whole only in its save: evaluated from there, on this process alone.
        sharded = trainer.is_fsdp_enabled or is_deepspeed_zero3_enabled()
        student = training_args.output_dir if sharded else trainer.accelerator.unwrap_model(trainer.model)
        accuracy["after"] = demo_accuracy(student, prepared.tokenizer, script_args)
    url = push(training_args) if prepared.push_to_hub and state.is_main_process else None
    if state.is_main_process:
        print(end_block(script_args, training_args, time.perf_counter() - prepared.start, accuracy, url), flush=True)
    return trainer


def end_block(
    script_args: VtDScriptArguments,
    args: VtDConfig,
    seconds: float,
    accuracy: dict[str, float] | None = None,
    pushed_url: str | None = None,
) -> str:
    """What a run prints last: the demo's held-out accuracies, the wall time, where the model is, and the commands to
    evaluate and push it (in the run summary's two columns)."""
    output_dir = args.output_dir
    lines = [""]
    if accuracy and "after" in accuracy:
        teacher = f"{accuracy['teacher']:.1%}" if "teacher" in accuracy else args.teacher_server_base_url
        lines.append(
            f"Held-out greedy accuracy ({script_args.demo_eval_rows} problems): student before "
            f"{accuracy['before']:.1%}, student after {accuracy['after']:.1%}, teacher {teacher}"
        )
    if script_args.dataset_name == DEMO:
        evaluate = f"python -m vtd_trl.demo.evaluate --model {output_dir} --num-rows {script_args.demo_eval_rows}"
    else:
        benchmark = "gsm8k" if "gsm8k" in script_args.dataset_name.lower() else "math500"
        evaluate = f"python scripts/eval/eval_{benchmark}.py --model {output_dir} (or eval_aime24.py, ...)"
    repo = args.hub_model_id or f"<user>/{Path(output_dir).name}"
    push = f"pushed    {pushed_url}" if pushed_url else f"push      hf upload {repo} {output_dir}"
    lines += [f"wall time {_duration(seconds)}", f"saved     {output_dir}", f"evaluate  {evaluate}", push]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def push(args: VtDConfig) -> str | None:
    """Upload the saved `output_dir` (model, tokenizer, card) to `hub_model_id`; returns the URL.

    A failure (no network, no token, no rights) leaves the local save as it is and says so.
    """
    from huggingface_hub import HfApi

    repo_id = args.hub_model_id or Path(args.output_dir).name
    try:
        api = HfApi(token=args.hub_token)
        repo = api.create_repo(repo_id, private=args.hub_private_repo, exist_ok=True)
        api.upload_folder(
            repo_id=repo.repo_id,
            folder_path=args.output_dir,
            commit_message="End of training",
            ignore_patterns=["checkpoint-*", "completions/*", "runs/*"],
        )
    except Exception as error:  # the hub client raises many types; none of them may lose the local save
        print(
            f"Pushing to the hub failed ({type(error).__name__}: {error}). The model is saved locally in "
            f"{args.output_dir}; push it later with `hf upload {repo_id} {args.output_dir}`.",
            flush=True,
        )
        return None
    print(f"Model pushed to {repo.url}", flush=True)
    return str(repo.url)


# The console: one short line per logging step, and none of the notices that say nothing about the run.

CONSOLE_METRICS = (  # (key in the logs, label, format): the rest goes to `report_to` and trainer_state.json only
    ("loss", "loss", "{:.3f}"),
    ("vtd/accuracy", "correct", "{:.1%}"),
    ("vtd/distill_loss", "distill", "{:.3f}"),
    ("vtd/contrast_loss", "contrast", "{:.3f}"),
    ("grad_norm", "grad", "{:.2f}"),
    ("learning_rate", "lr", "{:.1e}"),
)


def log_line(logs: dict[str, Any], step: int, max_steps: int) -> str:
    """`step 10/50  loss 2.181  correct 23.4%  ...  1.21 s/step`: a logging step's headline metrics on one line."""
    width = len(str(max_steps))
    parts = [f"step {step:>{width}}/{max_steps}"]
    for key, label, fmt in CONSOLE_METRICS:
        if isinstance(logs.get(key), (int, float)):
            parts.append(f"{label} {fmt.format(logs[key])}")
    if isinstance(logs.get("step_time"), (int, float)):
        parts.append(f"{logs['step_time']:.2f} s/step")
    return "  ".join(parts)


class ConsoleLog(TrainerCallback):
    """The progress bar (in a terminal only) and [`log_line`] at each logging step, instead of transformers' bar and
    its dict of every metric."""

    def __init__(self):
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and not args.disable_tqdm:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, dynamic_ncols=True, disable=None)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        # The last log of a run (train_runtime, ...) is summed up by the end block instead.
        if state.is_world_process_zero and logs and "train_runtime" not in logs:
            tqdm.write(log_line(logs, state.global_step, state.max_steps))

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def use_console_log(trainer) -> None:
    """Replace `trainer`'s progress and printer callbacks with a [`ConsoleLog`]."""
    from transformers import PrinterCallback, ProgressCallback
    from transformers.trainer import DEFAULT_PROGRESS_CALLBACK

    for callback in {PrinterCallback, ProgressCallback, DEFAULT_PROGRESS_CALLBACK}:
        trainer.remove_callback(callback)
    trainer.add_callback(ConsoleLog())
