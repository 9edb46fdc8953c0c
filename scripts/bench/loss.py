"""Benchmark: distillation loss forward + backward at Qwen3's vocabulary, per backend, against TRL's chunked kernel.

On CPU each configuration runs in a fresh process, so that its extra peak memory (peak RSS above the inputs) is its
own; on CUDA all run in this process (`--isolate` to change either), each measured with
`torch.cuda.max_memory_allocated` above its inputs. Errors
are relative to an fp64 reference computed on the same inputs. `trl_chunked` is TRL's `ChunkedDivergenceFunction`
called as its `DistillationTrainer` calls it (the peer); the `trl` backend runs the same kernel inside VtD's loss.

    python scripts/bench/loss.py                       # CPU sizes: a few minutes on 2 cores
    python scripts/bench/loss.py --device cuda --tokens 2048 16384 --student-hidden 2048 --teacher-hidden 4096 \
        --dtypes bfloat16

Prints a Markdown table and writes it as JSON (`--output`).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from _report import report, write_json

CONFIGS = ["naive", "chunked", "trl", "liger", "auto", "trl_chunked"]


def make_inputs(args, tokens, dtype):
    """The same random inputs at every call, drawn on `--device` (a CPU draws the weights of 151,936 rows slowly)."""
    generator = torch.Generator(args.device).manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, device=args.device) / shape[-1] ** 0.25

    student_hidden, teacher_hidden = randn(tokens, args.student_hidden), randn(tokens, args.teacher_hidden)
    student_weight, teacher_weight = randn(args.vocab, args.student_hidden), randn(args.vocab, args.teacher_hidden)
    mask = torch.ones(tokens, dtype=torch.bool, device=args.device)
    mask[-tokens // 8 :] = False  # some padding, as in a real batch
    return *(x.to(dtype) for x in (student_hidden, student_weight, teacher_hidden, teacher_weight)), mask


def reference(args, tokens) -> dict:
    """fp64 loss and gradients, token chunk by token chunk (full logits of a chunk at a time)."""
    student_hidden, student_weight, teacher_hidden, teacher_weight, mask = make_inputs(args, tokens, torch.float64)
    from vtd_trl.losses import generalized_jsd

    student_weight.requires_grad_()
    grad_hidden = torch.zeros_like(student_hidden)
    loss = 0.0
    valid = mask.nonzero().squeeze(-1)
    for start in range(0, len(valid), 256):
        rows = valid[start : start + 256]
        hidden = student_hidden[rows].requires_grad_()
        student_logits = hidden @ student_weight.t() / args.temperature
        teacher_logits = teacher_hidden[rows] @ teacher_weight.t() / args.temperature
        chunk = generalized_jsd(student_logits, teacher_logits, args.beta).sum() / len(valid)
        chunk.backward()
        grad_hidden[rows] = hidden.grad
        loss += chunk.item()
    return {"loss": loss, "grad_hidden": grad_hidden.cpu(), "grad_weight": student_weight.grad.cpu()}


def trl_chunked(student_hidden, student_weight, teacher_hidden, teacher_weight, mask, beta, temperature):
    from trl.kernels.chunked_divergence import ChunkedDivergenceFunction

    divergence, _ = ChunkedDivergenceFunction.apply(
        student_hidden[mask], student_weight, None, teacher_hidden[mask], teacher_weight, None, beta, temperature
    )
    return divergence.sum() / mask.sum()


def reset_peak(device) -> int:
    """Reset the peak-memory counter and return the memory in use now."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    with open("/proc/self/clear_refs", "w") as f:  # "5" resets the peak resident set size (VmHWM)
        f.write("5")
    return _proc_status_kb("VmRSS") * 1024


def peak_bytes(device) -> int:
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return _proc_status_kb("VmHWM") * 1024


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def run_one(args, config: str, dtype_name: str, tokens: int, ref: dict) -> dict:
    from vtd_trl.losses import distillation_loss, resolve_backend

    dtype = getattr(torch, dtype_name)
    student_hidden, student_weight, teacher_hidden, teacher_weight, mask = make_inputs(args, tokens, dtype)
    student_hidden.requires_grad_()
    student_weight.requires_grad_()

    def step():
        student_hidden.grad = student_weight.grad = None
        if config == "trl_chunked":
            loss = trl_chunked(
                student_hidden, student_weight, teacher_hidden, teacher_weight, mask, args.beta, args.temperature
            )
        else:
            loss = distillation_loss(
                student_hidden,
                student_weight,
                teacher_hidden,
                teacher_weight,
                mask,
                beta=args.beta,
                temperature=args.temperature,
                backend=config,
            )
        loss.backward()
        if args.device == "cuda":
            torch.cuda.synchronize()
        return loss

    step()  # warm-up: one-time allocations (kernels, thread pools) are not the loss's
    baseline = reset_peak(args.device)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)
    extra = peak_bytes(args.device) - baseline

    def relative(a, b):
        return ((a.double().cpu() - b).norm() / b.norm()).item()

    device = torch.device(args.device)
    return {
        "config": config if config != "auto" else f"auto ({resolve_backend('auto', device)})",
        "dtype": dtype_name,
        "tokens": tokens,
        "extra_peak_mb": extra / 2**20,
        "seconds": sorted(times)[len(times) // 2],
        "loss_rel_error": abs(loss.item() - ref["loss"]) / abs(ref["loss"]),
        "grad_hidden_rel_error": relative(student_hidden.grad, ref["grad_hidden"]),
        "grad_weight_rel_error": relative(student_weight.grad, ref["grad_weight"]),
    }


def in_fresh_process(args, config: str, dtype: str, tokens: int, reference_file: str) -> dict | None:
    """`run_one` in a new process, whose peak resident memory is then this configuration's alone."""
    names = ["vocab", "student_hidden", "teacher_hidden", "beta", "temperature", "device", "repeats"]
    options = [str(x) for name in names for x in ("--" + name.replace("_", "-"), getattr(args, name))]
    command = [sys.executable, __file__, *options, "--one", config, dtype, str(tokens), reference_file]
    # Large allocations straight from mmap, so freed memory leaves the process and RSS tracks live tensors
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        print(f"{config} {dtype} {tokens} failed:\n{result.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def in_this_process(args, config: str, dtype: str, tokens: int, ref: dict) -> dict | None:
    try:
        return run_one(args, config, dtype, tokens, ref)
    except Exception as error:  # a failed configuration is reported, the others still run
        print(f"{config} {dtype} {tokens} failed: {type(error).__name__}: {error}", file=sys.stderr)
        return None
    finally:
        if args.device == "cuda":
            torch.cuda.empty_cache()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[2048])
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--student-hidden", type=int, default=256)
    parser.add_argument("--teacher-hidden", type=int, default=384)
    parser.add_argument("--beta", type=float, default=0.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default="loss_bench.json")
    parser.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="each configuration in a fresh process (default on CPU, where the peak memory is the process's RSS)",
    )
    parser.add_argument("--one", nargs=4, metavar=("CONFIG", "DTYPE", "TOKENS", "REFERENCE"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        config, dtype, tokens, reference_file = args.one
        print(json.dumps(run_one(args, config, dtype, int(tokens), torch.load(reference_file))))
        return

    isolate = args.device == "cpu" if args.isolate is None else args.isolate
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for tokens in args.tokens:
            ref = reference(args, tokens)
            reference_file = os.path.join(tmp, "reference.pt")
            if isolate:
                torch.save(ref, reference_file)
            for dtype in args.dtypes:
                for config in args.configs:
                    if isolate:
                        row = in_fresh_process(args, config, dtype, tokens, reference_file)
                    else:
                        row = in_this_process(args, config, dtype, tokens, ref)
                    if row is None:
                        continue
                    rows.append(row)
                    print(f"done: {json.dumps(row)}", file=sys.stderr, flush=True)
                    write_json(args.output, {"args": vars(args), "rows": rows})  # an interrupted run keeps its rows

    columns = [
        ("tokens", "{tokens}"),
        ("config", "{config}"),
        ("dtype", "{dtype}"),
        ("extra peak MB", "{extra_peak_mb:.0f}"),
        ("time fwd+bwd s", "{seconds:.4f}"),
        ("loss rel err", "{loss_rel_error:.1e}"),
        ("grad_h rel err", "{grad_hidden_rel_error:.1e}"),
        ("grad_W rel err", "{grad_weight_rel_error:.1e}"),
    ]
    machine = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    title = (
        f"\nvocab={args.vocab} H_s={args.student_hidden} H_t={args.teacher_hidden} beta={args.beta} "
        f"device={args.device} ({machine}) torch={torch.__version__} threads={torch.get_num_threads()}\n"
    )
    report(rows, columns, args.output, title, data={"args": vars(args), "rows": rows}, numbers_right=False)


if __name__ == "__main__":
    main()
