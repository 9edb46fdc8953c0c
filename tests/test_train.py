"""`scripts/vtd.py` and `vtd_trl.train`: recipes and overrides, the help, bad input, resume after SIGKILL, push failure,
card, and what the console shows."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from trl import ModelConfig, TrlParser

from vtd_trl import VtDConfig
from vtd_trl.cli import VtDParser, main
from vtd_trl.train import (
    VtDScriptArguments,
    describe_processes,
    describe_run,
    end_block,
    log_line,
    run,
    set_init_kwargs,
)

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def parse(args: list[str]):
    return TrlParser((VtDScriptArguments, VtDConfig, ModelConfig)).parse_args_and_config(args)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipes_parse_and_flags_override_them(recipe):
    # bf16 recipes need a GPU to validate; `--use_cpu true` lets this machine check them.
    script, training, model = parse(["--config", str(recipe), "--use_cpu", "true", "--vtd_distill_alpha", "2.5"])
    assert training.vtd_distill_alpha == 2.5  # the command line wins over the recipe
    assert training.num_generations in (2, 8)
    assert bool(training.teacher_model_name_or_path) != bool(training.teacher_server_base_url)  # one teacher
    assert script.dataset_name and model.model_name_or_path


@pytest.mark.parametrize(("tuned", "seed"), [("demo_tuned.yaml", "demo.yaml"), ("qwen3_tuned.yaml", "qwen3.yaml")])
def test_tuned_recipes_change_only_the_measured_options_at_the_same_compute(tuned, seed):
    import yaml

    tuned, seed = (yaml.safe_load((ROOT / "recipes" / name).read_text()) for name in (tuned, seed))
    measured = {
        "num_generations": 2,
        "vtd_contrast_beta": 3.0,
        "vtd_distill_incorrect": True,
        "vtd_chosen_source": "sibling_then_reference",
        "vtd_chosen_nll_weight": 1.0,
        "vtd_chosen_nll_source": "sibling",
    }
    assert {k: tuned[k] for k in measured} == measured and not seed.get("vtd_distill_incorrect", False)
    sizes = {"demo_train_rows", "num_train_epochs", "output_dir"}  # the same completions at K = 2 instead of 8
    changed = {k for k in tuned.keys() | seed.keys() if tuned.get(k) != seed.get(k)}
    assert changed == set(measured) | (sizes & changed)
    completions = {
        name: r.get("demo_train_rows", 1) * r.get("num_train_epochs", 1) * r["num_generations"]
        for name, r in (("tuned", tuned), ("seed", seed))
    }
    assert completions["tuned"] == completions["seed"]


def test_the_script_parser_parses_as_trl_parser_does():
    args = ["--config", str(ROOT / "recipes/qwen3_lora.yaml"), "--use_cpu", "true", "--lora_r", "8",
            "--adam_beta1", "0.8", "--vtd_contrast_beta", "0.5", "--no_shuffle_dataset"]  # fmt: skip
    assert VtDParser().parse_args_and_config(args) == parse(args)


def help_text(flag: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([flag])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_help_shows_the_recipe_then_vtd_options_then_the_most_used_training_ones(capsys):
    text = help_text("--help", capsys)
    lines = text.splitlines()
    assert len(lines) <= 150 and max(map(len, lines)) <= 140
    assert "recipes/demo_tuned.yaml" in text and "docs/" in text  # the description: an example and the docs
    flags = [line.split()[0] for line in lines if line.startswith("  --")]
    assert flags[0] == "--config"
    vtd = [flags.index(f"--{name}") for name in VtDConfig.__annotations__]
    script = [flags.index(f"--{name}") for name in VtDScriptArguments.__dataclass_fields__]
    model = [flags.index(f"--{name}") for name in ("model_name_or_path", "use_peft", "lora_r")]
    training = [flags.index(f"--{name}") for name in ("learning_rate", "max_steps", "num_generations", "seed")]
    assert max(vtd + script + model) < min(training)
    assert "--adam_beta1" not in flags and "--help-all" in text


def test_help_all_lists_every_option(capsys):
    text = help_text("--help-all", capsys)
    for flag in ("--adam_beta1", "--lr_scheduler_type", "--vtd_distill_alpha", "--dataset_name", "--lora_dropout"):
        assert flag in text, flag


def test_missing_teacher_is_refused_naming_the_flags():
    _, training, model = parse(["--dataset_name", "vtd-demo", "--model_name_or_path", "vtd-demo/student",
                                "--use_cpu", "true"])  # fmt: skip
    script = VtDScriptArguments(dataset_name="vtd-demo")
    with pytest.raises(ValueError, match="--teacher_model_name_or_path.*--teacher_server_url"):
        run(script, training, model)


@pytest.mark.parametrize(
    ("processes", "distributed", "device", "stage", "words"),
    [
        (1, "NO", "cpu", None, "1 process on CPU"),
        (2, "MULTI_CPU", "cpu", None, "2 processes, DDP on CPU"),
        (8, "MULTI_GPU", "cuda", None, "8 processes, DDP on CUDA"),
        (4, "DEEPSPEED", "cuda", 3, "4 processes, DeepSpeed ZeRO-3 on CUDA"),
        (2, "FSDP", "cpu", None, "2 processes, FSDP on CPU"),
    ],
)
def test_processes_in_words(processes, distributed, device, stage, words):
    assert describe_processes(processes, distributed, device, stage) == words


def test_log_line_is_short():
    logs = {"loss": 2.1812, "grad_norm": 6.748, "learning_rate": 3e-4, "vtd/accuracy": 0.234375,
            "vtd/distill_loss": 0.1147, "vtd/contrast_loss": 0.5359, "step_time": 1.212, "vtd/dpo_margin": 0.01,
            "completions/mean_length": 50.1, "rewards/correctness_reward/mean": 0.23}  # fmt: skip
    line = log_line(logs, 10, 50)
    assert line == (
        "step 10/50  loss 2.181  correct 23.4%  distill 0.115  contrast 0.536  grad 6.75  lr 3.0e-04  1.21 s/step"
    )
    assert log_line({"loss": 1.0}, 3, 200) == "step   3/200  loss 1.000"


def test_end_block_of_a_hub_dataset_run():
    script, training, _ = parse(["--dataset_name", "openai/gsm8k", "--use_cpu", "true", "--output_dir", "out/run",
                                 "--teacher_model_name_or_path", "t"])  # fmt: skip
    assert end_block(script, training, 3725.0).splitlines() == [
        "",
        "wall time 1 h 2 min",
        "saved     out/run",
        "evaluate  python scripts/eval/eval_gsm8k.py --model out/run (or eval_aime24.py, ...)",
        "push      hf upload <user>/run out/run",
    ]
    pushed = end_block(script, training, 59.6, pushed_url="https://huggingface.co/me/run").splitlines()
    assert pushed[1] == "wall time 1 min 0 s" and pushed[-1] == "pushed    https://huggingface.co/me/run"


def test_qwen3_recipe_is_the_seed_setup():
    script, training, model = parse(["--config", str(ROOT / "recipes/qwen3.yaml"), "--use_cpu", "true"])
    assert (model.model_name_or_path, training.teacher_model_name_or_path) == ("Qwen/Qwen3-1.7B", "Qwen/Qwen3-8B")
    assert (script.dataset_name, script.dataset_config) == ("openai/gsm8k", "main")
    assert (training.vtd_distill_alpha, training.vtd_contrast_beta, training.num_generations) == (5.0, 0.1, 8)
    assert training.use_vllm and training.vllm_mode == "colocate" and training.bf16
    # 4 GPUs x 8 x 8 accumulation = 32 prompts x K 8 per optimizer step
    assert 4 * training.per_device_train_batch_size * training.gradient_accumulation_steps == 32 * 8


def test_init_kwargs_from_model_config():
    """ModelConfig sets how both models load; under mixed precision the teacher keeps the compute dtype."""
    recipe = ["--config", str(ROOT / "recipes/demo.yaml"), "--attn_implementation", "sdpa"]
    _, training, model = parse([*recipe, "--model_init_kwargs", '{"revision": "v2"}'])
    set_init_kwargs(training, model)
    assert training.model_init_kwargs == {"revision": "v2", "attn_implementation": "sdpa", "dtype": "float32"}
    assert training.teacher_model_init_kwargs == {"attn_implementation": "sdpa", "dtype": "float32"}
    # ModelConfig's default fp32 with bf16 mixed precision: no teacher dtype, so the trainer loads it in bf16
    _, training, model = parse([*recipe, "--dtype", "float32"])
    training.bf16 = True  # set after validation: this machine has no bf16-capable device
    set_init_kwargs(training, model)
    assert "dtype" not in training.teacher_model_init_kwargs
    _, training, model = parse([*recipe, "--dtype", "bfloat16", "--teacher_model_init_kwargs", '{"dtype": "float16"}'])
    set_init_kwargs(training, model)
    assert training.teacher_model_init_kwargs["dtype"] == "float16"  # explicit teacher kwargs win


def test_run_summary_counts_steps_when_a_generation_spans_several():
    script, training, model = parse(
        ["--config", str(ROOT / "recipes/demo.yaml"), "--per_device_train_batch_size", "2", "--max_steps", "-1",
         "--steps_per_generation", "4", "--num_generations", "8", "--num_train_epochs", "1"]
    )  # fmt: skip
    summary = describe_run(script, training, model, Dataset.from_list([{"prompt": "x"}] * 10))
    # 2 completions per optimizer step = 1/4 prompt: 10 prompts x 8 completions / 2 = 40 steps
    assert "0.25 prompts/step" in summary and "40 optimizer steps" in summary


def run_script(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "vtd.py"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    return output


def test_unknown_key_fails_before_any_model_is_loaded(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model_name_or_path: /nonexistent\nteacher_model_name_or_path: /nonexistent\n"
                      "dataset_name: vtd-demo\nuse_cpu: true\nbf16: false\nvtd_distil_alpha: 2.0\n")  # fmt: skip
    process = run_script(["--config", str(recipe)])
    output = finish(process, 120)
    assert process.returncode != 0
    assert output.strip().splitlines() == [
        f"error: {recipe}: unknown key `vtd_distil_alpha`; did you mean `vtd_distill_alpha`?  (--debug for the traceback)"
    ]


def test_bad_value_fails_naming_the_key(tmp_path):
    with pytest.raises(ValueError, match="`vtd_distill_beta` must be in"):
        parse(["--dataset_name", "x", "--use_cpu", "true", "--vtd_distill_beta", "2"])


def gsm8k_file(path: Path, n: int) -> Path:
    rows = [
        {"question": f"Tom has {a} apples and buys {a + 3} more. How many apples?",
         "answer": f"Tom has {a}+{a + 3}=<<{a}+{a + 3}={2 * a + 3}>>{2 * a + 3} apples.\n#### {2 * a + 3}"}
        for a in range(10, 10 + n)
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(row) for row in rows))
    return path


def common_args(model_dirs, data: Path, output_dir: Path) -> list[str]:
    return [
        "--model_name_or_path", model_dirs["student"],
        "--teacher_model_name_or_path", model_dirs["teacher"],
        "--dataset_name", str(data),
        "--output_dir", str(output_dir),
        "--num_generations", "4",
        "--per_device_train_batch_size", "8",
        "--max_completion_length", "8",
        "--learning_rate", "1e-3",
        "--use_cpu", "true", "--bf16", "false", "--gradient_checkpointing", "false",
        "--report_to", "none", "--logging_steps", "1", "--log_completions", "true",
        "--disable_dropout", "true", "--seed", "3",
    ]  # fmt: skip


def prompts_per_step(output_dir: Path) -> dict[int, list[str]]:
    steps = {}
    for file in sorted((output_dir / "completions").glob("completions_*.parquet")):
        frame = pd.read_parquet(file)
        steps[int(frame["step"].iloc[0])] = sorted(str(p) for p in frame["prompt"])
    return steps


def test_resume_after_sigkill_sees_every_prompt_once(model_dirs, tmp_path):
    data = gsm8k_file(tmp_path / "train.jsonl", 24)
    steps = ["--max_steps", "6", "--save_strategy", "steps", "--save_steps", "2"]
    reference_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "interrupted"
    reference = run_script([*common_args(model_dirs, data, reference_dir), *steps])

    killed = run_script([*common_args(model_dirs, data, run_dir), *steps])
    deadline = time.time() + 240
    while not (run_dir / "checkpoint-2" / "trainer_state.json").exists():
        assert killed.poll() is None and time.time() < deadline, "no checkpoint before the run ended"
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    finish(killed)
    assert killed.returncode == -signal.SIGKILL and not (run_dir / "checkpoint-6").exists()

    resumed = run_script([*common_args(model_dirs, data, run_dir), *steps, "--resume_from_checkpoint",
                          str(run_dir / "checkpoint-2")])  # fmt: skip
    output = finish(resumed)
    assert resumed.returncode == 0, output[-3000:]
    assert finish(reference) and reference.returncode == 0

    state = json.loads((run_dir / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    seen, expected = prompts_per_step(run_dir), prompts_per_step(reference_dir)
    assert sorted(seen) == list(range(1, 7)) and seen == expected  # same prompts at every step
    all_prompts = [p for step in seen.values() for p in set(step)]
    assert len(all_prompts) == len(set(all_prompts)) == 12  # 2 prompts per step, none twice, none skipped
    # Finished from the step-2 checkpoint (model, optimizer, scheduler, RNG states), the weights are the same.
    final, uninterrupted = load_file(run_dir / "model.safetensors"), load_file(reference_dir / "model.safetensors")
    assert all((final[k] == uninterrupted[k]).all() for k in final)


def test_push_failure_keeps_the_local_save(model_dirs, tmp_path):
    data = gsm8k_file(tmp_path / "train.jsonl", 4)
    output_dir = tmp_path / "out"
    args = [*common_args(model_dirs, data, output_dir), "--max_steps", "1", "--save_strategy", "no",
            "--push_to_hub", "true", "--hub_model_id", "someone/tiny-vtd"]  # fmt: skip
    process = run_script(args)
    output = finish(process)
    assert process.returncode == 0, output[-3000:]
    assert "Pushing to the hub failed" in output and f"saved locally in {output_dir}" in output
    assert (output_dir / "model.safetensors").exists() and (output_dir / "config.json").exists()
    card = (output_dir / "README.md").read_text()
    for expected in ("teacher", str(data), "`vtd_distill_alpha`", "| completions per prompt (K, `num_generations`) | `4` |",
                     "DPO pair", "@software{vtd_trl", "- vtd"):  # fmt: skip
        assert expected in card, expected
    # The run summary printed at start names what was run
    for expected in ("student   ", "teacher   ", "(4 prompts)", "K=4", "5.0 * distill", "0.1 * DPO", "fp32"):
        assert expected in output, expected


PYTHON = [sys.executable]
# `accelerate launch`, which without a config file warns about each of these it is not given
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip


@pytest.mark.parametrize(
    ("recipe", "prompts", "launcher"), [("demo_tuned.yaml", 64, PYTHON), ("demo.yaml", 16, ACCELERATE)]
)
def test_demo_recipe_shortened(recipe, prompts, launcher, tmp_path):
    """The README's demo commands, cut to 2 steps: summary, training, save, and the held-out accuracies they print,
    in a console without warnings, with one short line per logging step and an end block."""
    from transformers import AutoModelForCausalLM

    from vtd_trl.demo.evaluate import evaluate
    from vtd_trl.demo.models import demo_model_path
    from vtd_trl.demo.task import demo_dataset

    output_dir = tmp_path / "demo"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [*launcher, str(ROOT / "scripts" / "vtd.py"), "--config", str(ROOT / "recipes" / recipe),
               "--max_steps", "2", "--logging_steps", "1", "--demo_train_rows", str(prompts),
               "--demo_eval_rows", "16", "--output_dir", str(output_dir)]  # fmt: skip
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    output = result.stdout
    assert result.returncode == 0, output[-3000:]
    assert f"dataset   vtd-demo ({prompts} prompts)" in output and "backend chunked" in output
    assert "fp32, 1 process on CPU" in output
    for noise in ("FutureWarning", "were not passed to", "process(es)", "Setting accelerator", "Loading weights",
                  "Writing model shards", "{'loss'", "train_runtime"):  # fmt: skip
        assert noise not in output, noise
    steps = [line for line in output.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in steps] == ["1/2", "2/2"] and all(len(line) < 120 for line in steps)

    end = output.splitlines()[-5:]
    assert end[0].startswith("Held-out greedy accuracy (16 problems): student before ")
    before, after, teacher = (float(v) / 100 for v in re.findall(r"([\d.]+)%", end[0]))
    assert re.fullmatch(r"wall time \d+ (min \d+ )?s", end[1])
    assert end[2:] == [
        f"saved     {output_dir}",
        f"evaluate  python -m vtd_trl.demo.evaluate --model {output_dir} --num-rows 16",
        f"push      hf upload <user>/demo {output_dir}",
    ]

    held_out = demo_dataset("test", 16)
    shipped = AutoModelForCausalLM.from_pretrained(demo_model_path("student"))
    trained = AutoModelForCausalLM.from_pretrained(output_dir)
    assert before == pytest.approx(
        evaluate(shipped, tokenizer_of(output_dir), held_out).accuracy, abs=6e-4
    )  # printed to 0.1%
    assert after == pytest.approx(
        evaluate(trained, tokenizer_of(output_dir), held_out).accuracy, abs=6e-4
    )  # printed to 0.1%
    assert teacher > before
    changed = [not torch.equal(a, b) for a, b in zip(shipped.state_dict().values(), trained.state_dict().values())]
    assert any(changed)
    assert "vtd-demo" in (output_dir / "README.md").read_text()


def tokenizer_of(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
