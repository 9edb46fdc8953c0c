"""GPU smoke test: a few VtD steps at Qwen3-1.7B (student) and Qwen3-8B (teacher) shapes, random bf16 weights.

No hub access is needed: the models are built from configs on the GPU, the tokenizer is built in code (the heads keep
Qwen3's 151,936 rows; tokens the tokenizer does not have are suppressed in sampling). Runs each distillation backend
for `--steps` optimizer steps with transformers generation and short completions, then prints step time, completion
tokens per second and peak GPU memory as a Markdown table (and JSON, `--output`).

    python scripts/bench/gpu_smoke.py --backends trl chunked liger

The server-teacher leg (`gpu_smoke.sh` runs it when vLLM is installed) saves a shallower teacher-shaped model, serves
it with `vllm serve`, and runs the same steps with its top-k log-probs, beside the local teacher at the same k:

    python scripts/bench/gpu_smoke.py --save-teacher /tmp/teacher --teacher-layers 4
    vllm serve /tmp/teacher --port 8011 --max-logprobs 64 --logprobs-mode processed_logprobs &
    python scripts/bench/gpu_smoke.py --teacher-dir /tmp/teacher --backends topk-local topk-server \
        --teacher-server http://127.0.0.1:8011
"""

import argparse
import gc
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402
from _report import report, write_json  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, Qwen3Config  # noqa: E402

from vtd_trl import VtDConfig, VtDTrainer  # noqa: E402
from vtd_trl.demo.tokenizer import build_char_tokenizer  # noqa: E402

QWEN3_VOCAB = 151936
SHAPES = {  # from the Qwen3-1.7B and Qwen3-8B configs
    "student": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16),
    "teacher": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32),
}


TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)


def qwen3_shaped(tokenizer, shape: dict, seed: int, device: str):
    config = Qwen3Config(
        vocab_size=QWEN3_VOCAB,
        num_key_value_heads=8 if shape is not TINY else 2,
        head_dim=shape["hidden_size"] // shape["num_attention_heads"],
        max_position_embeddings=40960,
        rope_theta=1000000.0,
        tie_word_embeddings=shape is SHAPES["student"],  # Qwen3-1.7B ties its head, Qwen3-8B does not
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **shape,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)


def train(args, backend: str, shapes: dict, tokenizer, teacher, rows: list[dict]) -> dict:
    """`--steps` VtD steps of a fresh student with `backend`: its mean step time after the first, completion tokens per
    second, peak GPU memory and losses."""
    device = "cpu" if args.cpu_dry_run else "cuda"
    student = qwen3_shaped(tokenizer, shapes["student"], seed=0, device=device)
    topk = backend.startswith("topk")
    config = VtDConfig(
        output_dir=tempfile.mkdtemp(),
        num_generations=args.k,
        per_device_train_batch_size=args.prompts * args.k,
        max_completion_length=args.length,
        generation_kwargs={"suppress_tokens": list(range(len(tokenizer), QWEN3_VOCAB))},
        max_steps=args.steps,
        learning_rate=1e-6,
        bf16=not args.cpu_dry_run,
        use_cpu=args.cpu_dry_run,
        gradient_checkpointing=True,
        vtd_distill_backend="auto" if topk else backend,
        vtd_distill_top_k=args.top_k if topk else None,
        teacher_server_url=args.teacher_server if backend == "topk-server" else None,
        vtd_distill_incorrect=True,  # random models are never right: distil every completion, DPO on all
        logging_steps=1,
        report_to=[],
        save_strategy="no",
    )
    trainer = VtDTrainer(
        model=student,
        teacher_model=None if backend == "topk-server" else teacher,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        teacher_processing_class=None if backend == "topk-server" else tokenizer,
    )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - start
    logs = [h for h in trainer.state.log_history if "step_time" in h]
    tokens = sum(h["completions/mean_length"] * args.prompts * args.k for h in logs)
    return {
        "backend": backend,
        "step_s": sum(h["step_time"] for h in logs[1:]) / max(1, len(logs) - 1),
        "completion_tokens_per_s": tokens / elapsed,
        "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan"),
        "loss": [h["loss"] for h in trainer.state.log_history if "loss" in h],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["trl", "chunked", "liger"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--output", default="gpu_smoke.json")
    parser.add_argument("--cpu-dry-run", action="store_true", help="tiny shapes on CPU, to check the script itself")
    parser.add_argument("--top-k", type=int, default=64, help="teacher log-probs of the topk-* backends")
    parser.add_argument("--teacher-layers", type=int, default=None, help="a shallower teacher of the same width")
    parser.add_argument("--save-teacher", default=None, help="save the teacher (and tokenizer) here and exit")
    parser.add_argument("--teacher-dir", default=None, help="load the teacher saved by --save-teacher")
    parser.add_argument("--teacher-server", default=None, help="URL of `vllm serve <teacher-dir>`, for topk-server")
    args = parser.parse_args()
    device = "cpu" if args.cpu_dry_run else "cuda"
    shapes = {"student": TINY, "teacher": TINY} if args.cpu_dry_run else SHAPES
    if args.teacher_layers:
        shapes["teacher"] = {**shapes["teacher"], "num_hidden_layers": args.teacher_layers}

    tokenizer = build_char_tokenizer()
    if args.teacher_dir:
        teacher = AutoModelForCausalLM.from_pretrained(args.teacher_dir, dtype=torch.bfloat16, device_map=device)
    else:
        teacher = qwen3_shaped(tokenizer, shapes["teacher"], seed=1, device=device)
    if args.save_teacher:
        teacher.save_pretrained(args.save_teacher)
        tokenizer.save_pretrained(args.save_teacher)
        return
    rows = [
        {"prompt": [{"role": "user", "content": f"What is {a}+{a + 7}?"}], "answer": str(2 * a + 7),
         "reference": f"{a}+{a + 7}={2 * a + 7}. \\boxed{{{2 * a + 7}}}"}
        for a in range(args.prompts * args.steps)
    ]  # fmt: skip
    results = []
    for backend in args.backends:
        try:
            results.append(train(args, backend, shapes, tokenizer, teacher, rows))
        except Exception as error:  # a failed backend is reported, the others still run
            print(f"{backend} failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            continue
        finally:
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
        print(json.dumps(results[-1]), flush=True)
        write_json(args.output, results)  # an interrupted run keeps its backends

    machine = torch.cuda.get_device_name() if device == "cuda" else "CPU dry run"
    models = "tiny student and teacher" if args.cpu_dry_run else "student 1.7B-shaped, teacher 8B-shaped"
    title = (
        f"\n{machine} | torch {torch.__version__} | {models}\n"
        f"{args.prompts} prompts x K={args.k}, {args.length} completion tokens, {args.steps} steps (first = warm-up)\n"
    )
    columns = [
        ("backend", "{backend}"),
        ("step s", "{step_s:.2f}"),
        ("completion tokens/s", "{completion_tokens_per_s:.0f}"),
        ("peak GPU GB", "{peak_gb:.1f}"),
        ("first loss", lambda r: f"{r['loss'][0]:.6g}"),
    ]
    report(results, columns, args.output, title, numbers_right=False)


if __name__ == "__main__":
    main()
