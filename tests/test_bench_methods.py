"""`scripts/bench/methods.py`: each method's builder really trains at the shared budget, and the score it reports is
recomputed here from the trained model's own greedy completions, graded without `vtd_trl.verify`."""

import dataclasses
import importlib.util
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_methods", ROOT / "scripts" / "bench" / "methods.py")
methods = importlib.util.module_from_spec(spec)
spec.loader.exec_module(methods)

BUDGET = methods.Budget(steps=2, completions=8, max_completion_length=64, eval_rows=12)


def graded_by_hand(model, tokenizer, rows) -> float:
    """Greedy completions one prompt at a time, the last number of the completion against the gold."""
    correct = 0
    model.eval()
    for row in rows:
        text = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=96, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        completion = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        answer = completion.split("</think>")[-1]  # nothing inside the think block is an answer
        numbers = re.findall(r"\d+", answer)
        correct += bool(numbers) and numbers[-1] == row["answer"]
    return correct / len(rows)


@pytest.mark.parametrize(
    ("name", "regime", "prompts_per_step", "task"),
    [
        ("vtd_seed", "strong/think", 1, "additions"),
        ("vtd_k1_di_cw3", "imperfect/terse", 8, "additions"),
        ("vtd_k2_di_cw3_sibref_nll1", "imperfect/terse", 4, "additions"),
        ("kd_reverse", "imperfect/think", 8, "additions"),
        ("grpo", "strong/think", 1, "additions"),
        ("sft", "strong/terse", 8, "additions"),
        ("vtd_k2_di_cw3_sibref_sibnll1", "imperfect/terse", 4, "groups"),
        ("kd_forward", "strong/think", 8, "groups"),
        ("sdpo", "strong/think", 1, "additions"),
        ("iw_opd", "imperfect/think", 8, "additions"),
        ("gkd", "imperfect/terse", 8, "additions"),
    ],
)
def test_each_method_trains_at_the_budget_and_its_score_is_recomputed(name, regime, prompts_per_step, task, tmp_path):
    from vtd_trl.demo.models import demo_model_path
    from vtd_trl.demo.task import demo_dataset

    budget = dataclasses.replace(BUDGET, task=task)
    trainer = methods.build_trainer(name, regime, 0, 3e-4, budget, str(tmp_path))
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()

    assert trainer.state.global_step == BUDGET.steps
    assert trainer.args.per_device_train_batch_size == BUDGET.completions
    assert trainer.model.name_or_path == demo_model_path("student", task)
    # The task's own problems ("Tom has 4 bags of 7 coins. ..." on `groups`)
    decode = trainer.processing_class.decode  # SFT's rows are tokenized, IW-OPD's and GKD's are conversations

    def text(row):
        return (
            row["prompt"][0]["content"]
            if "prompt" in row
            else row["messages"][0]["content"]
            if "messages" in row
            else decode(row["input_ids"])
        )

    texts = [text(row) for row in trainer.train_dataset]
    assert all((" bags of " in text) == (task == "groups") for text in texts)
    changed = [k for k, v in trainer.model.named_parameters() if not torch.equal(v, before[k])]
    assert len(changed) == len(before)  # every parameter moved
    # The method's own sampling: completions per prompt and so prompts per step.
    assert len(trainer.train_dataset) == BUDGET.steps * prompts_per_step
    if name.startswith("vtd"):
        logged = [h for h in trainer.state.log_history if "vtd/distill_fraction" in h]
        assert logged and trainer.args.num_generations == methods.METHODS[name].num_generations
        for option, value in methods.METHODS[name].options.items():
            assert getattr(trainer.args, option) == value, option
    if name == "sft":  # trained on the terse references of the regime, as assistant turns
        text = trainer.processing_class.decode(trainer.train_dataset[0]["input_ids"])
        assert "The answer is" in text and "<think>\n\n</think>" in text  # the chat template's empty think block
    if name == "gkd":  # the regime's references as the off-policy assistant turns
        rows = demo_dataset("train", len(trainer.train_dataset), seed=0, reference_style=regime.split("/")[1])
        assert [row["messages"][-1]["content"] for row in trainer.train_dataset] == rows["reference"]
        assert "The answer is" in rows["reference"][0] and (trainer.lmbda, trainer.beta) == (0.5, 0.5)
    if name == "iw_opd":  # prompts only: every completion is the student's own
        assert all(row["messages"][-1]["role"] == "user" for row in trainer.train_dataset)
        assert trainer.args.lmbda == 1.0 and trainer.args.distillation_objective == "iw_opd"
    if name == "sdpo":  # its teacher is the student reprompted with a verified sibling
        assert trainer.num_generations == 8 and trainer.state.log_history[-1]["self_distillation/reward_mean"] >= 0
    if methods.METHODS[name].uses_teacher:
        teacher = trainer.accelerator.unwrap_model(trainer.teacher_model)
        assert teacher.name_or_path == demo_model_path(methods.TEACHERS[regime.split("/")[0]], task)

    model = trainer.accelerator.unwrap_model(trainer.model)
    reported = methods.held_out_accuracy(model, trainer.processing_class, BUDGET.eval_rows, task)
    rows = demo_dataset("test", BUDGET.eval_rows, task=task)
    assert reported == pytest.approx(graded_by_hand(model, trainer.processing_class, rows))


def test_methods_that_ignore_an_axis_fill_its_columns_from_one_run():
    runs = methods.regime_runs(methods.METHODS["grpo"], methods.REGIMES)
    assert set(runs.values()) == {"strong/think"}
    runs = methods.regime_runs(methods.METHODS["kd_forward"], methods.REGIMES)
    assert runs == {r: r.split("/")[0] + "/think" for r in methods.REGIMES}
    runs = methods.regime_runs(methods.METHODS["sft"], methods.REGIMES)
    assert runs == {r: "strong/" + r.split("/")[1] for r in methods.REGIMES}
    assert methods.regime_runs(methods.METHODS["vtd_seed"], methods.REGIMES) == {r: r for r in methods.REGIMES}
    # SDPO reads neither (its teacher is the student itself), IW-OPD the teacher only, GKD both
    assert set(methods.regime_runs(methods.METHODS["sdpo"], methods.REGIMES).values()) == {"strong/think"}
    runs = methods.regime_runs(methods.METHODS["iw_opd"], methods.REGIMES)
    assert runs == {r: r.split("/")[0] + "/think" for r in methods.REGIMES}
    assert methods.regime_runs(methods.METHODS["gkd"], methods.REGIMES) == {r: r for r in methods.REGIMES}


def test_written_references_are_the_teachers_verified_solutions():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vtd_trl.demo.models import demo_model_path
    from vtd_trl.demo.task import demo_dataset

    teacher = demo_model_path("teacher_imperfect")
    tokenizer = AutoTokenizer.from_pretrained(demo_model_path("student"))
    model = AutoModelForCausalLM.from_pretrained(teacher)
    terse = demo_dataset("train", 16, seed=0, reference_style="terse")
    rows = methods.written_references(16, 0, teacher, tokenizer, verified_only=False)
    solved = [graded_by_hand(model, tokenizer, [row]) == 1.0 for row in terse]
    assert 0 < sum(solved) < len(solved)  # the imperfect teacher solves some of them
    for row, original, right in zip(rows, terse, solved):
        assert row["prompt"] == original["prompt"] and row["answer"] == original["answer"]
        if right:  # its own solution, in the thinking format
            assert row["reference"].startswith("<think>\n") and f"\\boxed{{{row['answer']}}}" in row["reference"]
        else:
            assert row["reference"] == original["reference"]
    kept = methods.written_references(8, 0, teacher, tokenizer, verified_only=True)  # the `verified` regime
    assert len(kept) == 8 and all(f"\\boxed{{{r['answer']}}}" in r["reference"] for r in kept)
    # The references are written by the regime's teacher, so SFT on them depends on the teacher; KD does not
    written = methods.WRITTEN_REGIMES
    assert methods.regime_runs(methods.METHODS["sft"], written) == {r: r for r in written}
    assert methods.regime_runs(methods.METHODS["kd_forward"], written) == {
        r: r.split("/")[0] + "/think" for r in written
    }


def test_summary_takes_the_best_mean_learning_rate_and_its_spread():
    results = [
        {"method": "grpo", "regime": "strong/think", "seed": s, "learning_rate": lr, "accuracy": a, "train_seconds": 1}
        for lr, accuracies in ((1e-4, (0.5, 0.6, 0.7)), (3e-4, (0.9, 0.1, 0.2)), (1e-3, (0.95,)))
        for s, a in enumerate(accuracies)
    ]  # 1e-3 ran on one seed only: its mean is not over the same seeds, so it does not compete
    (row,) = methods.summarize(results, ["grpo"], ["strong/think", "imperfect/terse"])
    for regime in ("strong/think", "imperfect/terse"):
        cell = row["cells"][regime]
        assert cell["learning_rate"] == 1e-4 and cell["seeds"] == [0.5, 0.6, 0.7]
        assert cell["mean"] == pytest.approx(0.6) and cell["std"] == pytest.approx(0.1)
        assert cell["by_learning_rate"] == pytest.approx({1e-4: 0.6, 3e-4: 0.4})
    table = methods.markdown([row], ["strong/think", "imperfect/terse"], "header")
    assert "| grpo | 60.0% ± 10.0% @0.0001 | 60.0% ± 10.0% @0.0001 (= strong/think) | 1 |" in table


def test_the_table_is_of_the_commands_seeds_and_learning_rates(tmp_path, monkeypatch, capsys):
    import json
    import sys

    runs = [
        {"method": "sft", "regime": regime, "seed": s, "learning_rate": lr, "accuracy": a, "train_seconds": 1}
        for regime in ("strong/think", "strong/terse")
        for s, lr, a in ((0, 3e-4, 0.5), (1, 3e-4, 0.7), (2, 3e-4, 0.0), (0, 1e-4, 0.9))
    ]
    output = tmp_path / "runs.json"
    output.write_text(json.dumps({"budget": methods.Budget().__dict__, "results": runs}))
    argv = ["methods.py", "--methods", "sft", "--seeds", "0", "1", "--output", str(output), "--table-only"]
    monkeypatch.setattr(sys, "argv", [*argv, "--markdown", str(tmp_path / "table.md")])
    methods.main()
    table = (tmp_path / "table.md").read_text()
    # Seeds 0 and 1 at 3e-4 (1e-4 ran on one seed only); seed 2 is in the file but not asked for
    assert "| sft | 60.0% ± 14.1% @0.0003 | 60.0% ± 14.1% @0.0003 |" in table
    assert table in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", [*argv, "--steps", "7"])
    with pytest.raises(SystemExit):  # runs at another budget are not mixed
        methods.main()


def test_the_curve_is_recorded_at_its_steps_and_ends_at_the_final_score():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vtd_trl.demo.models import demo_model_path

    budget = dataclasses.replace(BUDGET, steps=3)
    result = methods.run("gkd", "strong/think", 0, 3e-4, budget, curve_every=2)
    steps = [step for step, _ in result["curve"]]
    assert steps == [0, 2, 3] and result["curve"][-1][1] == result["accuracy"]
    student = demo_model_path("student")
    start = methods.held_out_accuracy(
        AutoModelForCausalLM.from_pretrained(student), AutoTokenizer.from_pretrained(student), BUDGET.eval_rows
    )
    assert result["curve"][0][1] == start  # step 0 is the untrained student on the same problems
    assert "curve" not in methods.run("gkd", "strong/think", 0, 3e-4, budget, curve_every=0)


@pytest.mark.parametrize("name", ["gkd", "vtd_k2_di_cw3_sibref_sibnll1"])
def test_a_run_trains_the_same_with_its_curve(name, tmp_path):
    """Greedy evaluation draws no random numbers: GKD's on/off-policy draws and VtD's samples are unchanged."""
    models = []
    for curve in (None, methods.curve_callback(1, BUDGET.eval_rows, "additions")):
        trainer, _ = methods.train(name, "strong/think", 0, 3e-4, BUDGET, str(tmp_path), curve)
        models.append(dict(trainer.model.named_parameters()))
    assert [step for step, _ in curve.points] == [0, 1]
    assert all(torch.equal(models[0][k], models[1][k]) for k in models[0])


def test_sdpos_self_teacher_is_the_demo_student_that_cannot_read_a_solution_in_its_prompt():
    """SDPO's teacher is the student prompted with a verified solution (its templates); the demo student never saw
    such a prompt: with a correct solution in it, it solves none of the 200 held-out problems it solves 43% of alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.sdpo import SDPOConfig

    from vtd_trl.demo.evaluate import evaluate
    from vtd_trl.demo.models import demo_model_path
    from vtd_trl.demo.task import demo_dataset

    student = demo_model_path("student")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(student), AutoTokenizer.from_pretrained(student)
    config = SDPOConfig(output_dir="unused", use_cpu=True, report_to="none")
    rows = demo_dataset("test", 200)

    def reprompt(row):  # the reference is in the student's own format, as a correct sibling would be
        solution = config.solution_template.format(successful_previous_attempt=row["reference"])
        text = config.reprompt_template.format(prompt=row["prompt"][-1]["content"], solution=solution, feedback="")
        return {"prompt": row["prompt"][:-1] + [{"role": "user", "content": text}]}

    assert evaluate(model, tokenizer, rows).accuracy == pytest.approx(0.43)
    assert evaluate(model, tokenizer, rows.map(reprompt)).accuracy == 0.0
