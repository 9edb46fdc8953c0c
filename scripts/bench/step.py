"""Benchmark: one optimizer step of VtDTrainer vs GRPOTrainer vs TRL's DistillationTrainer, on CPU or one GPU.

The three trainers get the same tiny Qwen3-architecture student and teacher (built from configs, with a vocabulary
padded to `--vocab` so the LM head costs what it costs at scale), the same prompts, the same K, and completions of
exactly `--length` tokens. Generation (sampling + scoring) and loss + backward are timed separately, medians over
`--steps` steps after one warm-up step. The random-weight student is never right, so plain `VtDTrainer` routes every
completion to DPO; "half correct" routes half to distillation and half to DPO (a stand-in correctness reward), and
"distill all + DPO" (`vtd_distill_incorrect=True`) runs the teacher on every completion and DPO on half of them:
the most VtD does in a step.

"teacher per generation batch" / "teacher per micro-batch" split each generation batch into micro-batches of
`--micro-batch` rows, distil every completion (no DPO: each is cut at `--length`), and run the local teacher once per generation batch (`vtd_teacher_signal="generation_batch"`, the
default) or inside every micro-batch's loss; "top-k" distils from the teacher's top `--top-k` log-probs (plus a tail
bucket), from the local teacher or from a stand-in `vllm serve` on localhost (`vtd_trl.demo.teacher_server`, same
process, so it measures the HTTP and JSON cost, not a remote GPU). `--isolate` runs each setup in its own process, so
that the peak resident memory column is that setup's.

"spread lengths" replaces generation by completions of realistic spread in length (uniform between `--length` / 8
and `--length`, a fraction `--cut-fraction` (0.2) cut at `--length`: thinking-mode completions under a length cap) and trains
them in micro-batches of `--micro-batch` rows; "untrimmed" runs the same with every micro-batch padded to the whole
generation batch's width, as before VtD trimmed each micro-batch to its own longest row.

`--device cuda` builds the models of `gpu_smoke.py` instead, at Qwen3-1.7B (student) and Qwen3-8B (teacher) shapes
with random bf16 weights, trains with bf16 and gradient checkpointing, and adds each setup's peak GPU memory
(`torch.cuda.max_memory_allocated`); by default it runs the four setups that compare the trainers. `--cpu-dry-run`
runs that path at tiny shapes on CPU, to check the script itself.

    python scripts/bench/step.py            # about 10 minutes on 2 cores
    python scripts/bench/step.py --device cuda --prompts 2 --k 8 --length 128 --steps 1    # 16 x 128, ~1.5 min
    python scripts/bench/step.py --device cuda --prompts 4 --k 8 --length 512 --steps 1 \
        --setups DistillationTrainer "VtDTrainer (half correct)"                              # 32 x 512, ~2 min
    python scripts/bench/step.py --setups "VtDTrainer (spread lengths)" "VtDTrainer (spread lengths, untrimmed)"
    python scripts/bench/step.py --isolate --setups DistillationTrainer "VtDTrainer (teacher per generation batch)" \
        "VtDTrainer (teacher per micro-batch)" "VtDTrainer (top-k, local teacher)" "VtDTrainer (top-k, teacher server)"

Prints a Markdown table and the ratios, and writes JSON (`--output`).
"""

import argparse
import functools
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack, contextmanager, nullcontext
from statistics import median
from types import SimpleNamespace
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402
from _report import report, write_json  # noqa: E402
from datasets import Dataset  # noqa: E402
from gpu_smoke import QWEN3_VOCAB, SHAPES, TINY, qwen3_shaped  # noqa: E402
from trl import DistillationConfig, DistillationTrainer, GRPOConfig, GRPOTrainer  # noqa: E402

from vtd_trl import VtDConfig, VtDTrainer  # noqa: E402
from vtd_trl.demo.models import tiny_qwen3  # noqa: E402
from vtd_trl.demo.teacher_server import load, serving  # noqa: E402
from vtd_trl.demo.tokenizer import build_char_tokenizer  # noqa: E402
from vtd_trl.packing import Batch, hidden_states  # noqa: E402
from vtd_trl.rewards import correctness_reward  # noqa: E402

# GRPOTrainer first: it needs no teacher, which is built at the first setup that does and then stays resident
GPU_SETUPS = ["GRPOTrainer", "DistillationTrainer", "VtDTrainer (half correct)", "VtDTrainer (distill all + DPO)"]


def clock() -> float:
    """Seconds, after the GPU's queued work is done (CUDA runs asynchronously)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def timed(trainer_cls):
    """A subclass of `trainer_cls` that records where each training step spends its time."""

    class Timed(trainer_cls):
        timings = defaultdict(list)

        def _generate_and_score_completions(self, inputs):
            start = clock()
            output = super()._generate_and_score_completions(inputs)
            self.timings["generation"].append((self.state.global_step, clock() - start))
            stored = sum(v.numel() * v.element_size() for k, v in output.items() if k.startswith("vtd_teacher_"))
            self.timings["teacher_signal_mb"].append((self.state.global_step, stored / 2**20))
            return output

        def _reference_logps(self, output, pairs):  # VtD only: the DPO reference, inside the generation phase
            start = clock()
            result = super()._reference_logps(output, pairs)
            self.timings["reference"].append((self.state.global_step, clock() - start))
            return result

        @contextmanager
        def counting_positions(self):
            """VtD only: counts the positions (padding included) run through a backbone, in the student's, the DPO
            reference's and a local teacher's forwards."""

            def counted(model, batch, *rest):
                self.timings["forward_positions"].append((self.state.global_step, batch.input_ids.numel()))
                return hidden_states(model, batch, *rest)

            with ExitStack() as stack:
                for module in ("vtd_trl.trainer", "vtd_trl.teachers", "vtd_trl.packing"):
                    stack.enter_context(mock.patch(f"{module}.hidden_states", counted))
                yield

        def train(self, *args, **kwargs):
            with self.counting_positions():
                return super().train(*args, **kwargs)

        def training_step(self, model, inputs, num_items_in_batch=None):
            start, step = clock(), self.state.global_step
            generated = len(self.timings["generation"])
            output = super().training_step(model, inputs, num_items_in_batch)
            elapsed = clock() - start
            if len(self.timings["generation"]) > generated:
                elapsed -= self.timings["generation"][-1][1]
            self.timings["loss_backward"].append((step, elapsed))
            return output

    Timed.__name__ = trainer_cls.__name__
    return Timed


def half_correct(completions, **kwargs) -> list[float]:
    """Stands in for the correctness reward: a random-weight student is never right, a trained one often is."""
    return [float(i % 2 == 0) for i in range(len(completions))]


half_correct.__name__ = "correctness_reward"  # the reward VtD routes on


def spread_rollout(length: int, cut_fraction: float = 0.2, seed: int = 0):
    """A GRPO `rollout_func`: completions uniform in length between length / 8 and length, `cut_fraction` cut at it."""
    generator = torch.Generator().manual_seed(seed)

    def rollout(prompts, trainer):
        tokenizer = trainer.processing_class
        prompt_ids = tokenizer.apply_chat_template(prompts, add_generation_prompt=True, tokenize=True)
        prompt_ids = prompt_ids["input_ids"] if hasattr(prompt_ids, "keys") else prompt_ids
        completion_ids = []
        for _ in prompts:
            cut = torch.rand((), generator=generator) < cut_fraction
            n = length if cut else int(torch.randint(length // 8, length, (), generator=generator))
            ids = torch.randint(32, 120, (n,), generator=generator).tolist()  # printable characters, never EOS
            completion_ids.append(ids if cut else ids[:-1] + [tokenizer.eos_token_id])
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}

    return rollout


def trim_ab(trainer: VtDTrainer, rows: list[dict], args) -> None:
    """The DPO reference pass and loss + backward of every micro-batch of one generation batch, trimmed and untrimmed
    in turn (the same completions, the same process), medians over `--steps` repeats."""
    from trl.trainer.utils import split_tensor_dict

    trainer.model.train()
    steps = args.prompts * args.k // args.micro_batch
    trainer.current_gradient_accumulation_steps = steps
    output = trainer._generate_and_score_completions([row for row in rows for _ in range(args.k)])
    lengths = output["completion_mask"].sum(1)
    print(f"completion lengths {sorted(lengths.tolist())}, {int((lengths == args.length).sum())} cut")
    times = defaultdict(list)
    for _ in range(args.steps):
        for mode in ("trimmed", "untrimmed"):
            patch = mock.patch.object(Batch, "trimmed", lambda self: self) if mode == "untrimmed" else nullcontext()
            with patch, trainer.counting_positions():
                trainer.timings["forward_positions"].clear()
                start = time.perf_counter()
                trainer._reference_logps(output, output["vtd_contrast"])
                middle = time.perf_counter()
                for micro_batch in split_tensor_dict(output, steps):
                    trainer._vtd_loss(trainer.model, micro_batch, "train")[0].backward()
                positions = sum(value for _, value in trainer.timings["forward_positions"])
                times[mode].append((middle - start, time.perf_counter() - middle, positions))
            trainer.model.zero_grad()
    print(
        "| micro-batches | DPO reference s | loss + backward s | positions through the backbones |\n|---|---:|---:|---:|"
    )
    for mode, values in times.items():
        print(
            f"| {mode} | {median(v[0] for v in values):.2f} | {median(v[1] for v in values):.2f} | {values[0][2]:,} |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--student-hidden", type=int, default=256)
    parser.add_argument("--teacher-hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--micro-batch", type=int, default=4, help="rows per micro-batch of the spread-lengths setups")
    parser.add_argument("--cut-fraction", type=float, default=0.2, help="spread lengths: fraction cut at --length")
    parser.add_argument("--setups", nargs="+", default=None, help="run only these setups (default: all)")
    parser.add_argument(
        "--trim-ab",
        action="store_true",
        help="only time trimmed vs untrimmed on one spread-lengths batch, alternating",
    )
    parser.add_argument("--top-k", type=int, default=64, help="teacher log-probs of the top-k setups")
    parser.add_argument("--isolate", action="store_true", help="each setup in its own process (peak memory)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: Qwen3 shapes in bf16")
    parser.add_argument("--cpu-dry-run", action="store_true", help="with --device cuda: tiny shapes on CPU")
    parser.add_argument("--output", default="step_bench.json")
    args = parser.parse_args()
    if args.isolate:
        return isolated(args)

    tmp = tempfile.mkdtemp()
    models = build_models(args, tmp)
    tokenizer = models.tokenizer
    rows = [
        {"prompt": [{"role": "user", "content": f"What is {a}+{a + 7}?"}], "answer": str(2 * a + 7),
         "reference": f"{a}+{a + 7}={2 * a + 7}. \\boxed{{{2 * a + 7}}}"}
        for a in range(args.prompts * (args.steps + 1))
    ]  # fmt: skip
    batch = args.prompts * args.k
    common = dict(
        max_completion_length=args.length,
        # every completion has exactly `length` tokens
        generation_kwargs={"min_new_tokens": args.length, **models.generation_kwargs},
        learning_rate=1e-5,
        max_steps=args.steps + 1,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        seed=0,
        **models.precision,
    )

    def vtd_trainer(name: str, reward_funcs=None, rollout_func=None, **overrides) -> VtDTrainer:
        settings = {"per_device_train_batch_size": batch, **common, **overrides}
        config = VtDConfig(output_dir=f"{tmp}/{name}", num_generations=args.k, **settings)
        local = not config.teacher_server_base_url
        return timed(VtDTrainer)(
            model=models.student(), teacher_model=models.teacher() if local else None, reward_funcs=reward_funcs,
            args=config, train_dataset=Dataset.from_list(rows), rollout_func=rollout_func,
            processing_class=tokenizer, teacher_processing_class=tokenizer if local else None,
        )  # fmt: skip

    def micro_batched(name: str, **overrides) -> VtDTrainer:
        split = dict(
            per_device_train_batch_size=args.micro_batch, gradient_accumulation_steps=batch // args.micro_batch
        )
        return vtd_trainer(name, vtd_distill_incorrect=True, **split, **overrides)

    setups = {
        "GRPOTrainer": lambda: timed(GRPOTrainer)(
            model=models.student(),
            reward_funcs=correctness_reward,
            args=GRPOConfig(
                output_dir=f"{tmp}/grpo", num_generations=args.k, per_device_train_batch_size=batch, **common
            ),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        ),
        "DistillationTrainer": lambda: timed(DistillationTrainer)(
            model=models.student(),
            teacher_model=models.teacher(),
            args=DistillationConfig(output_dir=f"{tmp}/distill", per_device_train_batch_size=batch, **common),
            train_dataset=Dataset.from_list([row for row in rows for _ in range(args.k)]),
            processing_class=tokenizer,
        ),
        # Every completion is cut at --length (no EOS); the published rule still gives the incorrect ones a DPO pair, which
        # is what these three routes measure (by default a cut incorrect completion is distilled only).
        "VtDTrainer": lambda: vtd_trainer("vtd", vtd_truncated_completions="contrast"),
        "VtDTrainer (half correct)": lambda: vtd_trainer(
            "vtd_half", reward_funcs=half_correct, vtd_truncated_completions="contrast"
        ),
        "VtDTrainer (distill all + DPO)": lambda: vtd_trainer(
            "vtd_all", vtd_distill_incorrect=True, vtd_truncated_completions="contrast"
        ),
    }

    def spread(name: str) -> VtDTrainer:  # a fresh rollout each, so both setups see the same completions
        return vtd_trainer(
            name,
            reward_funcs=half_correct,
            rollout_func=spread_rollout(args.length, args.cut_fraction),
            per_device_train_batch_size=args.micro_batch,
            gradient_accumulation_steps=batch // args.micro_batch,
        )

    setups["VtDTrainer (teacher per generation batch)"] = lambda: micro_batched("vtd_once")
    setups["VtDTrainer (teacher per micro-batch)"] = lambda: micro_batched(
        "vtd_each", vtd_teacher_signal="micro_batch"
    )
    setups["VtDTrainer (top-k, local teacher)"] = lambda: micro_batched("vtd_topk", vtd_distill_top_k=args.top_k)
    setups["VtDTrainer (top-k, teacher server)"] = lambda url: micro_batched(
        "vtd_server", vtd_distill_top_k=args.top_k, teacher_server_url=url
    )
    setups["VtDTrainer (spread lengths)"] = lambda: spread("vtd_spread")
    setups["VtDTrainer (spread lengths, untrimmed)"] = lambda: spread("vtd_spread_untrimmed")
    if args.trim_ab:
        trim_ab(spread("vtd_trim_ab"), rows[: args.prompts], args)
        return
    results = {}
    on_gpu = args.device == "cuda" and not args.cpu_dry_run
    chosen = args.setups or (GPU_SETUPS if args.device == "cuda" else list(setups))
    for name in chosen:
        build = setups[name]
        torch.manual_seed(0)
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
        with ExitStack() as stack:
            # The teacher server (its own copy of the teacher, as a remote one holds) serves build and training.
            running = stack.enter_context(serving(load(models.teacher_path, args.top_k))) if "server" in name else None
            trainer = build(running.url) if running else build()
            trainer.timings.clear()
            if "untrimmed" in name:
                stack.enter_context(mock.patch.object(Batch, "trimmed", lambda self: self))
            trainer.train()
        # per optimizer step (the micro-batches of one step summed), median over the steps after the warm-up one
        timings = {}
        for key, values in trainer.timings.items():
            per_step = defaultdict(float)
            for step, value in values:
                per_step[step] += value
            timings[key] = median(value for step, value in per_step.items() if step > 0)
        fractions = [h for h in trainer.state.log_history if "vtd/distill_fraction" in h]
        if fractions:
            timings["distill_fraction"] = median(h["vtd/distill_fraction"] for h in fractions[1:])
            timings["contrast_fraction"] = median(h["vtd/contrast_fraction"] for h in fractions[1:])
        timings["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if on_gpu:
            timings["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
        results[name] = timings
        print(f"done: {name} {timings}", flush=True)
        write_json(args.output, {"args": vars(args), "results": results})  # an interrupted run keeps its setups
        del trainer
        gc.collect()
        if on_gpu:
            torch.cuda.empty_cache()

    print(f"\n{models.description}, {args.prompts} prompts x K={args.k}, {args.length} completion tokens\n")
    summary(results, args)


def build_models(args, tmp: str) -> SimpleNamespace:
    """The tokenizer, `student()` (a fresh student each call), `teacher()` (one, built at the first call), the trainer
    settings of the device, and a line that says what they are.

    On CPU: tiny Qwen3-architecture models saved under `tmp` (trainers load them from there), a vocabulary padded to
    `--vocab`. With `--device cuda`: `gpu_smoke.py`'s Qwen3-1.7B / Qwen3-8B-shaped models with random bf16 weights,
    built on the GPU (tiny ones on CPU with `--cpu-dry-run`), and the tokens the tokenizer lacks never sampled.
    """
    if args.device == "cpu":
        tokenizer = build_char_tokenizer(
            extra_tokens=[f"<w{i}>" for i in range(args.vocab - len(build_char_tokenizer()))]
        )
        for name, hidden, seed in (("student", args.student_hidden, 0), ("teacher", args.teacher_hidden, 1)):
            model = tiny_qwen3(tokenizer, hidden_size=hidden, num_hidden_layers=args.layers, seed=seed)
            model.save_pretrained(f"{tmp}/{name}")
            tokenizer.save_pretrained(f"{tmp}/{name}")
        return SimpleNamespace(
            tokenizer=tokenizer,
            student=lambda: f"{tmp}/student",
            teacher=lambda: f"{tmp}/teacher",
            teacher_path=f"{tmp}/teacher",
            generation_kwargs={},
            precision=dict(bf16=False, use_cpu=True, gradient_checkpointing=False),
            description=f"CPU, vocab={args.vocab} H_student={args.student_hidden} H_teacher={args.teacher_hidden} "
            f"layers={args.layers} torch={torch.__version__} threads={torch.get_num_threads()}",
        )
    device = "cpu" if args.cpu_dry_run else "cuda"
    shapes = {"student": TINY, "teacher": TINY} if args.cpu_dry_run else SHAPES
    tokenizer = build_char_tokenizer()
    teacher = functools.cache(lambda: qwen3_shaped(tokenizer, shapes["teacher"], seed=1, device=device))
    machine = (
        "CPU dry run, tiny models" if args.cpu_dry_run else f"{torch.cuda.get_device_name()}, Qwen3-1.7B / 8B shapes"
    )
    return SimpleNamespace(
        tokenizer=tokenizer,
        student=lambda: qwen3_shaped(tokenizer, shapes["student"], seed=0, device=device),
        teacher=teacher,
        teacher_path=None,
        generation_kwargs={"suppress_tokens": list(range(len(tokenizer), QWEN3_VOCAB))},
        precision=dict(bf16=not args.cpu_dry_run, use_cpu=args.cpu_dry_run, gradient_checkpointing=True),
        description=f"{machine}, bf16 weights, gradient checkpointing, torch {torch.__version__}",
    )


def isolated(args) -> None:
    """Each setup in a fresh process, so that `peak_rss_mb` (the process's high-water mark) is that setup's alone."""
    results = {}
    for name in args.setups or []:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            argv = [a for a in sys.argv[1:] if a != "--isolate"]
            argv = argv[: argv.index("--setups")] if "--setups" in argv else argv
            subprocess.run([sys.executable, __file__, *argv, "--setups", name, "--output", out.name], check=True)
            results.update(json.load(open(out.name))["results"])
    summary(results, args)


COLUMNS = [
    ("trainer", "{trainer}"),
    ("generation s", "{generation:.2f}"),
    ("(of which DPO reference)", lambda t: f"{t.get('reference', 0.0):.2f}"),
    ("loss + backward s", "{loss_backward:.2f}"),
    ("total s", "{total:.2f}"),
    ("generation share", lambda t: f"{t['generation'] / t['total']:.0%}"),
    ("VtD forward positions", lambda t: f"{t.get('forward_positions', 0):,.0f}"),
    ("peak RSS MB", lambda t: f"{t.get('peak_rss_mb', 0):,.0f}"),
    ("teacher signal held MB", lambda t: f"{t.get('teacher_signal_mb', 0):.1f}"),
]


def summary(results: dict, args) -> None:
    """The table (and JSON) of every setup, then the ratios of the comparisons that were run."""
    for t in results.values():
        t["total"] = t["generation"] + t["loss_backward"]
    rows = [{"trainer": name, **t} for name, t in results.items()]
    columns = COLUMNS
    if any("peak_gpu_gb" in t for t in results.values()):
        columns = [*COLUMNS, ("peak GPU GB", lambda t: f"{t.get('peak_gpu_gb', float('nan')):.1f}")]
    report(rows, columns, args.output, data={"args": vars(args), "results": results}, numbers_right=False)
    base = results.get("DistillationTrainer")
    for name in [name for name in results if name.startswith("VtDTrainer") and "spread" not in name]:
        vtd = results.get(name)
        if base is None or vtd is None:
            continue
        print(
            f"\n{name} / DistillationTrainer: total {vtd['total'] / base['total']:.2f}x, "
            f"loss+backward {vtd['loss_backward'] / base['loss_backward']:.2f}x "
            f"(routed: {vtd.get('distill_fraction', 0):.2f} distilled, {vtd.get('contrast_fraction', 0):.2f} contrast)"
        )
    trimmed, untrimmed = (
        results.get("VtDTrainer (spread lengths)"),
        results.get("VtDTrainer (spread lengths, untrimmed)"),
    )
    if trimmed and untrimmed:
        print(
            f"\nspread lengths, micro-batches of {args.micro_batch}: trimmed / untrimmed: total "
            f"{trimmed['total'] / untrimmed['total']:.2f}x, loss+backward "
            f"{trimmed['loss_backward'] / untrimmed['loss_backward']:.2f}x, DPO reference "
            f"{trimmed['reference'] / untrimmed['reference']:.2f}x, positions through the backbones "
            f"{trimmed['forward_positions'] / untrimmed['forward_positions']:.2f}x"
        )


if __name__ == "__main__":
    main()
