"""What each half of VtD contributes, on the offline demo: VtD vs distillation only vs plain GRPO, over seeds.

Every method starts from the shipped demo student, trains with the settings of `recipes/demo.yaml` (same prompts,
K, lengths, steps, learning rate) and is scored by greedy held-out accuracy (`vtd_trl.verify`):

- `vtd`: the recipe as it is;
- `distill_only`: correct completions distilled, incorrect ones dropped (`vtd_contrast_beta=0`);
- `distill_all`: every verified completion distilled, no contrast (`vtd_distill_incorrect=True, vtd_contrast_beta=0`);
- `vtd_literal_normalizers`: VtD with each term divided by its own count (distilled tokens, DPO pairs);
- `grpo`: TRL's `GRPOTrainer` with the correctness reward (no teacher, no reference solutions).

`--learning-rates` runs every method at each of the given learning rates instead of the recipe's.

    python scripts/bench/demo_methods.py --seeds 0 1 2      # about 15 minutes on 2 cores

Prints a Markdown table (mean and spread over seeds) and writes JSON (`--output`).
"""

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import yaml  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from vtd_trl import VtDConfig, VtDTrainer  # noqa: E402
from vtd_trl.rewards import correctness_reward  # noqa: E402
from vtd_trl.train import VtDScriptArguments, demo_accuracy, load_train_dataset, resolve_model  # noqa: E402

METHODS = {
    "vtd": {},
    "distill_only": {"vtd_contrast_beta": 0.0},
    "distill_all": {"vtd_contrast_beta": 0.0, "vtd_distill_incorrect": True},
    "vtd_literal_normalizers": {"vtd_distill_normalizer": "distilled_tokens", "vtd_contrast_normalizer": "pairs"},
    "grpo": {"grpo": True},
}


def run(recipe: dict, method: str, seed: int, learning_rate: float) -> dict:
    script_keys = set(VtDScriptArguments.__dataclass_fields__)
    script_args = VtDScriptArguments(**{k: v for k, v in recipe.items() if k in script_keys})
    student = resolve_model(recipe["model_name_or_path"])
    teacher = resolve_model(recipe["teacher_model_name_or_path"])
    config = {k: v for k, v in recipe.items() if k in VtDConfig.__dataclass_fields__ and k not in script_keys}
    config.update(output_dir=tempfile.mkdtemp(), seed=seed, learning_rate=learning_rate, logging_steps=10)
    config.update(disable_tqdm=True)
    overrides = dict(METHODS[method])
    grpo = overrides.pop("grpo", False)
    config.update(overrides)
    config.pop("teacher_model_name_or_path")
    tokenizer = AutoTokenizer.from_pretrained(student)
    dataset = load_train_dataset(script_args, seed=seed)
    start = time.perf_counter()
    if grpo:
        grpo_config = GRPOConfig(**{k: v for k, v in config.items() if k in GRPOConfig.__dataclass_fields__})
        trainer = GRPOTrainer(
            model=student, reward_funcs=correctness_reward, args=grpo_config, train_dataset=dataset,
            processing_class=tokenizer,
        )  # fmt: skip
    else:
        trainer = VtDTrainer(
            model=student, teacher_model=teacher, args=VtDConfig(**config),
            train_dataset=dataset, processing_class=tokenizer,
        )  # fmt: skip
    trainer.train()
    seconds = time.perf_counter() - start
    accuracy = demo_accuracy(trainer.accelerator.unwrap_model(trainer.model), tokenizer, script_args)
    return {
        "method": method,
        "learning_rate": learning_rate,
        "seed": seed,
        "accuracy": accuracy,
        "train_seconds": seconds,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=os.path.join(os.path.dirname(__file__), "../../recipes/demo.yaml"))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--learning-rates", nargs="+", type=float, default=None)
    parser.add_argument("--output", default="demo_methods.json")
    args = parser.parse_args()
    with open(args.recipe) as f:
        recipe = yaml.safe_load(f)

    script_args = VtDScriptArguments(dataset_name="vtd-demo", demo_eval_rows=recipe.get("demo_eval_rows", 200))
    student = resolve_model(recipe["model_name_or_path"])
    before = demo_accuracy(student, AutoTokenizer.from_pretrained(student), script_args)
    teacher = demo_accuracy(resolve_model(recipe["teacher_model_name_or_path"]), AutoTokenizer.from_pretrained(student), script_args)  # fmt: skip
    learning_rates = args.learning_rates or [recipe["learning_rate"]]
    results = []
    for method in args.methods:
        for learning_rate in learning_rates:
            for seed in args.seeds:
                results.append(run(recipe, method, seed, learning_rate))
                print(json.dumps(results[-1]), flush=True)

    print(f"\nstudent before training: {before:.1%}; teacher: {teacher:.1%} ({script_args.demo_eval_rows} held-out)")
    print(f"seeds {args.seeds}, {recipe['max_steps']} steps of {recipe['per_device_train_batch_size']} completions\n")
    print("| method | learning rate | held-out accuracy, mean ± std | per seed | train s / run |")
    print("|---|---|---|---|---|")
    for method, learning_rate in [(m, lr) for m in args.methods for lr in learning_rates]:
        runs = [r for r in results if (r["method"], r["learning_rate"]) == (method, learning_rate)]
        scores = [r["accuracy"] for r in runs]
        spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
        per_seed = " / ".join(f"{s:.1%}" for s in scores)
        seconds = statistics.mean(r["train_seconds"] for r in runs)
        print(
            f"| {method} | {learning_rate:g} | {statistics.mean(scores):.1%} ± {spread:.1%} | {per_seed} | "
            f"{seconds:.0f} |"
        )
    with open(args.output, "w") as f:
        json.dump({"before": before, "teacher": teacher, "recipe": recipe, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
