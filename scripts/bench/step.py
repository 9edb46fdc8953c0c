"""Benchmark: one optimizer step of VtDTrainer vs GRPOTrainer vs TRL's DistillationTrainer on CPU.

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

    python scripts/bench/step.py            # about 10 minutes on 2 cores
    python scripts/bench/step.py --setups "VtDTrainer (spread lengths)" "VtDTrainer (spread lengths, untrimmed)"
    python scripts/bench/step.py --isolate --setups DistillationTrainer "VtDTrainer (teacher per generation batch)" \
        "VtDTrainer (teacher per micro-batch)" "VtDTrainer (top-k, local teacher)" "VtDTrainer (top-k, teacher server)"

Prints a Markdown table and the ratios, and writes JSON (`--output`).
"""

import argparse
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
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402
from _report import report  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl import DistillationConfig, DistillationTrainer, GRPOConfig, GRPOTrainer  # noqa: E402

from vtd_trl import VtDConfig, VtDTrainer  # noqa: E402
from vtd_trl.demo.models import tiny_qwen3  # noqa: E402
from vtd_trl.demo.teacher_server import load, serving  # noqa: E402
from vtd_trl.demo.tokenizer import build_char_tokenizer  # noqa: E402
from vtd_trl.packing import Batch, hidden_states  # noqa: E402
from vtd_trl.rewards import correctness_reward  # noqa: E402


def timed(trainer_cls):
    """A subclass of `trainer_cls` that records where each training step spends its time."""

    class Timed(trainer_cls):
        timings = defaultdict(list)

        def _generate_and_score_completions(self, inputs):
            start = time.perf_counter()
            output = super()._generate_and_score_completions(inputs)
            self.timings["generation"].append((self.state.global_step, time.perf_counter() - start))
            stored = sum(v.numel() * v.element_size() for k, v in output.items() if k.startswith("vtd_teacher_"))
            self.timings["teacher_signal_mb"].append((self.state.global_step, stored / 2**20))
            return output

        def _reference_logps(self, output, pairs):  # VtD only: the DPO reference, inside the generation phase
            start = time.perf_counter()
            result = super()._reference_logps(output, pairs)
            self.timings["reference"].append((self.state.global_step, time.perf_counter() - start))
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
            start, step = time.perf_counter(), self.state.global_step
            generated = len(self.timings["generation"])
            output = super().training_step(model, inputs, num_items_in_batch)
            elapsed = time.perf_counter() - start
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
    parser.add_argument("--output", default="step_bench.json")
    args = parser.parse_args()
    if args.isolate:
        return isolated(args)

    tokenizer = build_char_tokenizer(extra_tokens=[f"<w{i}>" for i in range(args.vocab - len(build_char_tokenizer()))])
    tmp = tempfile.mkdtemp()
    paths = {}
    for name, hidden, seed in (("student", args.student_hidden, 0), ("teacher", args.teacher_hidden, 1)):
        model = tiny_qwen3(tokenizer, hidden_size=hidden, num_hidden_layers=args.layers, seed=seed)
        model.save_pretrained(f"{tmp}/{name}")
        tokenizer.save_pretrained(f"{tmp}/{name}")
        paths[name] = f"{tmp}/{name}"
    rows = [
        {"prompt": [{"role": "user", "content": f"What is {a}+{a + 7}?"}], "answer": str(2 * a + 7),
         "reference": f"{a}+{a + 7}={2 * a + 7}. \\boxed{{{2 * a + 7}}}"}
        for a in range(args.prompts * (args.steps + 1))
    ]  # fmt: skip
    batch = args.prompts * args.k
    common = dict(
        max_completion_length=args.length,
        generation_kwargs={"min_new_tokens": args.length},  # every completion has exactly `length` tokens
        learning_rate=1e-5,
        max_steps=args.steps + 1,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        seed=0,
    )

    def vtd_trainer(name: str, reward_funcs=None, rollout_func=None, **overrides) -> VtDTrainer:
        settings = {"per_device_train_batch_size": batch, **common, **overrides}
        config = VtDConfig(output_dir=f"{tmp}/{name}", num_generations=args.k, **settings)
        teacher = None if config.teacher_server_base_url else paths["teacher"]
        return timed(VtDTrainer)(
            model=paths["student"], teacher_model=teacher, reward_funcs=reward_funcs, args=config,
            train_dataset=Dataset.from_list(rows), rollout_func=rollout_func,
        )  # fmt: skip

    def micro_batched(name: str, **overrides) -> VtDTrainer:
        split = dict(
            per_device_train_batch_size=args.micro_batch, gradient_accumulation_steps=batch // args.micro_batch
        )
        return vtd_trainer(name, vtd_distill_incorrect=True, **split, **overrides)

    setups = {
        "GRPOTrainer": lambda: timed(GRPOTrainer)(
            model=paths["student"],
            reward_funcs=correctness_reward,
            args=GRPOConfig(
                output_dir=f"{tmp}/grpo", num_generations=args.k, per_device_train_batch_size=batch, **common
            ),
            train_dataset=Dataset.from_list(rows),
        ),
        "DistillationTrainer": lambda: timed(DistillationTrainer)(
            model=paths["student"],
            teacher_model=paths["teacher"],
            args=DistillationConfig(output_dir=f"{tmp}/distill", per_device_train_batch_size=batch, **common),
            train_dataset=Dataset.from_list([row for row in rows for _ in range(args.k)]),
        ),
        # Every completion is cut at --length (no EOS); the seed's rule still gives the incorrect ones a DPO pair, which
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
    for name, build in setups.items():
        if args.setups and name not in args.setups:
            continue
        torch.manual_seed(0)
        with ExitStack() as stack:
            # The teacher server (its own copy of the teacher, as a remote one holds) serves build and training.
            running = stack.enter_context(serving(load(paths["teacher"], args.top_k))) if "server" in name else None
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
        results[name] = timings
        print(f"done: {name} {timings}", flush=True)

    print(
        f"\nprompts={args.prompts} K={args.k} completion tokens={args.length} vocab={args.vocab} "
        f"H_student={args.student_hidden} H_teacher={args.teacher_hidden} layers={args.layers} "
        f"torch={torch.__version__} threads={torch.get_num_threads()}\n"
    )
    summary(results, args)


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
    ("VtD forward positions", lambda t: f"{t.get('forward_positions', 0):,.0f}"),
    ("peak RSS MB", lambda t: f"{t.get('peak_rss_mb', 0):,.0f}"),
    ("teacher signal held MB", lambda t: f"{t.get('teacher_signal_mb', 0):.1f}"),
]


def summary(results: dict, args) -> None:
    """The table (and JSON) of every setup, then the ratios of the comparisons that were run."""
    for t in results.values():
        t["total"] = t["generation"] + t["loss_backward"]
    rows = [{"trainer": name, **t} for name, t in results.items()]
    report(rows, COLUMNS, args.output, data={"args": vars(args), "results": results}, numbers_right=False)
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
