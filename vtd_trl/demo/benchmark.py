"""Sizes the demo recipe: model sizes, sequence lengths, eval time and the time of one VtD-step-like workload.

The step-like workload is what one VtD optimizer step does on the demo: the student samples `num_generations`
completions for each of `num_prompts` prompts (temperature 1.0), the teacher runs on prompt + completion, the student
runs forward and backward on the same batch and forward on the reference solutions, and the frozen reference policy
runs on both. Prints a table and writes JSON.

```bash
OMP_NUM_THREADS=1 python -m vtd_trl.demo.benchmark --output benchmark_demo.json
```
"""

import argparse
import json
import platform
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from vtd_trl.demo.evaluate import evaluate
from vtd_trl.demo.models import demo_model_path
from vtd_trl.demo.task import demo_dataset
from vtd_trl.verify import verify


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _padded(sequences: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(map(len, sequences))
    input_ids = torch.full((len(sequences), length), pad_token_id)
    attention_mask = torch.zeros_like(input_ids)
    for i, sequence in enumerate(sequences):
        input_ids[i, : len(sequence)] = torch.tensor(sequence)
        attention_mask[i, : len(sequence)] = 1
    return input_ids, attention_mask


def step_workload(student, reference_policy, teacher, tokenizer, rows, num_generations: int, max_new_tokens: int):
    """Times the parts of one VtD-like step; returns seconds per part, completion lengths and verdicts."""
    prompts = [
        tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False) for row in rows
    ]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    output, generate_s = _timed(
        lambda: student.generate(
            **batch,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            max_new_tokens=max_new_tokens,
            num_return_sequences=num_generations,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    prompt_length = batch["input_ids"].shape[1]
    completions = tokenizer.batch_decode(output[:, prompt_length:], skip_special_tokens=True)
    golds = [row["answer"] for row in rows for _ in range(num_generations)]
    verdicts = [verify(completion, gold) for completion, gold in zip(completions, golds)]
    completion_lengths = (output[:, prompt_length:] != tokenizer.pad_token_id).sum(1).tolist()
    attention_mask = (output != tokenizer.pad_token_id).long()
    chosen = [
        tokenizer(prompt + row["reference"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        for prompt, row in zip(prompts, rows)
    ]
    chosen_ids, chosen_mask = _padded(chosen, tokenizer.pad_token_id)

    with torch.no_grad():
        _, teacher_s = _timed(lambda: teacher(input_ids=output, attention_mask=attention_mask))
        _, reference_s = _timed(
            lambda: (
                reference_policy(input_ids=output, attention_mask=attention_mask),
                reference_policy(input_ids=chosen_ids, attention_mask=chosen_mask),
            )
        )

    def student_step():
        loss = student(input_ids=output, attention_mask=attention_mask).logits.logsumexp(-1).mean()
        loss = loss + student(input_ids=chosen_ids, attention_mask=chosen_mask).logits.logsumexp(-1).mean()
        loss.backward()
        student.zero_grad()

    _, student_s = _timed(student_step)
    return {
        "generate_s": generate_s,
        "teacher_forward_s": teacher_s,
        "reference_forward_s": reference_s,
        "student_forward_backward_s": student_s,
        "completion_lengths": completion_lengths,
        "verdicts": verdicts,
    }


def token_lengths(tokenizer, rows) -> dict:
    """Mean and max token counts of the rows' chat-formatted prompts and of their references with EOS."""
    prompts = [
        len(
            tokenizer(tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False))[
                "input_ids"
            ]
        )
        for row in rows
    ]
    references = [len(tokenizer(row["reference"] + tokenizer.eos_token)["input_ids"]) for row in rows]
    return {
        "prompt_tokens": {"mean": statistics.mean(prompts), "max": max(prompts)},
        "reference_tokens": {"mean": statistics.mean(references), "max": max(references)},
    }


def print_results(results: dict, args: argparse.Namespace) -> None:
    """The results on the console: the models, the token lengths, the sampled completions and the step timings."""
    print(f"torch threads: {results['torch_threads']}")
    print(f"{'model':<9}{'params':>9}{'MB fp32':>9}{'greedy acc':>12}{'eval s':>9}   ({args.num_eval_rows} held-out)")
    for role in ("student", "teacher"):
        r = results[role]
        print(
            f"{role:<9}{r['num_parameters']:>9}{r['safetensors_mb']:>9}{r['greedy_accuracy']:>12.1%}{r['greedy_eval_s']:>9}"
        )
    print(
        f"tokens: prompt mean {results['prompt_tokens']['mean']:.1f} max {results['prompt_tokens']['max']}, "
        f"reference+eos mean {results['reference_tokens']['mean']:.1f} max {results['reference_tokens']['max']}"
    )
    s = results["sampled_completions"]
    print(
        f"student samples at T=1.0: {s['correct_fraction']:.1%} correct of {s['count']}, completion tokens mean "
        f"{s['mean_tokens']:.1f} max {s['max_tokens']}, {s['prompts_with_mixed_verdicts']}/{s['prompts']} prompts mixed"
    )
    print(f"step-like workload ({args.num_prompts} prompts x {args.num_generations}), median of {args.steps}:")
    for key, value in results["step"].items():
        print(f"  {key:<28}{value:>8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-eval-rows", type=int, default=200)
    parser.add_argument("--num-prompts", type=int, default=8)
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="Step-like workloads to time (on different prompts).")
    parser.add_argument("--output", default=None, help="Write the results as JSON to this file.")
    args = parser.parse_args()
    torch.manual_seed(0)

    tokenizer = AutoTokenizer.from_pretrained(demo_model_path("student"))
    models = {role: AutoModelForCausalLM.from_pretrained(demo_model_path(role)) for role in ("student", "teacher")}
    reference_policy = AutoModelForCausalLM.from_pretrained(demo_model_path("student")).eval()
    eval_rows = demo_dataset("test", args.num_eval_rows)
    train_rows = demo_dataset("train", args.num_prompts * args.steps, seed=1)

    results = {"torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine()}
    for role, model in models.items():
        result, seconds = _timed(lambda model=model: evaluate(model, tokenizer, eval_rows))
        results[role] = {
            "num_parameters": model.num_parameters(),
            "safetensors_mb": round(model.num_parameters() * 4 / 2**20, 2),
            "greedy_accuracy": result.accuracy,
            "greedy_eval_s": round(seconds, 2),
        }

    results.update(token_lengths(tokenizer, eval_rows))

    steps = []
    models["student"].train()
    for i in range(args.steps):
        rows = train_rows.select(range(i * args.num_prompts, (i + 1) * args.num_prompts))
        steps.append(
            step_workload(
                models["student"],
                reference_policy,
                models["teacher"],
                tokenizer,
                rows,
                args.num_generations,
                args.max_new_tokens,
            )
        )
    timings = ("generate_s", "teacher_forward_s", "reference_forward_s", "student_forward_backward_s")
    results["step"] = {key: round(statistics.median(step[key] for step in steps), 3) for key in timings}
    results["step"]["total_s"] = round(sum(results["step"][key] for key in timings), 3)
    lengths = [length for step in steps for length in step["completion_lengths"]]
    verdicts = [verdict for step in steps for verdict in step["verdicts"]]
    results["sampled_completions"] = {
        "count": len(verdicts),
        "correct_fraction": sum(v is True for v in verdicts) / len(verdicts),
        "mean_tokens": statistics.mean(lengths),
        "max_tokens": max(lengths),
        "prompts_with_mixed_verdicts": sum(
            len({v is True for v in step["verdicts"][j * args.num_generations : (j + 1) * args.num_generations]}) == 2
            for step in steps
            for j in range(args.num_prompts)
        ),
        "prompts": args.num_prompts * args.steps,
    }

    print_results(results, args)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
