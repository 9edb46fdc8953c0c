"""`VtDTrainer`: routing, chosen sequences, the loss against an independent recomputation, training."""

import math
import re

import pytest
import torch
from conftest import arithmetic_rows, fixed_rollout, vtd_args
from datasets import Dataset
from transformers import AutoModelForCausalLM, CohereConfig, GraniteConfig

from vtd_trl import VtDTrainer
from vtd_trl.losses import generalized_jsd

K = 4


def operands(prompt_text: str) -> tuple[int, int]:
    a, b = re.findall(r"\d+", prompt_text)
    return int(a), int(b)


def mixed_completions(prompt_text: str, position: int, row: int = 0) -> str:
    """Positions 0 and 2 are correct, 1 and 3 wrong."""
    a, b = operands(prompt_text)
    return [f"{a}+{b}={a + b}. \\boxed{{{a + b}}}", f"The answer is {a + b + 1}.", f"\\boxed{{{a + b}}}", "7"][
        position
    ]


def make_trainer(
    model_dirs, tmp_path, rows=None, completions=mixed_completions, trainer_cls=VtDTrainer, env_mask=None, **overrides
):
    """A trainer on the fixed rollout `completions`; `env_mask(row, position)` marks tokens not written by the policy."""
    rows = rows if rows is not None else arithmetic_rows(2)
    # One generation batch holds all rows; max_completion_length only bounds the chosen sequences (fixed rollout).
    overrides = {"per_device_train_batch_size": len(rows) * K, "max_completion_length": 64, **overrides}
    args = vtd_args(tmp_path, num_generations=K, **overrides)
    rollout = fixed_rollout(completions)

    def rollout_with_env_mask(prompts, trainer):
        output = rollout(prompts, trainer)
        output["env_mask"] = [
            [env_mask(i, k) for k in range(len(ids))] for i, ids in enumerate(output["completion_ids"])
        ]
        return output

    return trainer_cls(
        model=model_dirs["student"],
        teacher_model=model_dirs["teacher"],
        args=args,
        train_dataset=Dataset.from_list(rows),
        rollout_func=rollout if env_mask is None else rollout_with_env_mask,
    )


def generation_batch(trainer, rows):
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    return trainer._generate_and_score_completions([row for row in rows for _ in range(K)])


def last_metrics(trainer) -> dict:
    return {key: values[-1] for key, values in trainer._metrics["train"].items() if key.startswith("vtd/")}


# ---------------------------------------------------------------------------------------------------- routing


@pytest.mark.parametrize("distill_incorrect", [False, True])
def test_route_table(model_dirs, tmp_path, distill_incorrect):
    trainer = make_trainer(model_dirs, tmp_path, vtd_distill_incorrect=distill_incorrect)
    rewards = torch.tensor([1.0, 0.0, float("nan"), 1.0, 0.0])
    distill, contrast = trainer.route(rewards, [{}] * 5)
    assert contrast.tolist() == [False, True, False, False, True]
    if distill_incorrect:
        assert distill.tolist() == [True, True, False, True, True]
    else:
        assert distill.tolist() == [True, False, False, True, False]


def test_generation_batch_routes_and_counts(model_dirs, tmp_path):
    rows = arithmetic_rows(2)
    rows[1] = {**rows[1], "answer": ""}  # gold unparseable: its 4 completions are unverifiable
    trainer = make_trainer(model_dirs, tmp_path, rows=rows)
    out = generation_batch(trainer, rows)
    assert out["vtd_distill"].tolist() == [True, False, True, False] + [False] * 4
    assert out["vtd_contrast"].tolist() == [False, True, False, True] + [False] * 4
    assert out["vtd_num_completions"].item() == 8
    assert out["vtd_num_pairs"].item() == 2
    distilled_tokens = out["completion_mask"][out["vtd_distill"]].sum()
    assert out["vtd_num_distilled_tokens"].item() == distilled_tokens.item()
    metrics = last_metrics(trainer)
    assert metrics["vtd/accuracy"] == 0.5  # over the verified completions only
    assert metrics["vtd/distill_fraction"] == 0.25
    assert metrics["vtd/contrast_fraction"] == 0.25
    assert metrics["vtd/skip_fraction"] == 0.5


@pytest.mark.parametrize(
    ("completions", "zero_terms"),
    [
        (lambda p, j, i: f"\\boxed{{{sum(operands(p))}}}", {"contrast"}),  # all correct
        (lambda p, j, i: "\\boxed{0}", {"distill"}),  # all incorrect
    ],
)
def test_one_sided_batches_give_finite_losses(model_dirs, tmp_path, completions, zero_terms):
    rows = arithmetic_rows(2)
    trainer = make_trainer(model_dirs, tmp_path, rows=rows, completions=completions)
    loss = trainer.compute_loss(trainer.model, generation_batch(trainer, rows))
    loss.backward()
    metrics = last_metrics(trainer)
    assert torch.isfinite(loss)
    for term in ("distill", "contrast"):
        assert (metrics[f"vtd/{term}_loss"] == 0.0) == (term in zero_terms)
    assert all(torch.isfinite(p.grad).all() for p in trainer.model.parameters() if p.grad is not None)


def test_unverifiable_batch_gives_an_exact_zero_loss(model_dirs, tmp_path):
    rows = [{**row, "answer": ""} for row in arithmetic_rows(2)]
    trainer = make_trainer(model_dirs, tmp_path)  # a dataset of empty answers is refused; a batch of them may come
    loss = trainer.compute_loss(trainer.model, generation_batch(trainer, rows))
    loss.backward()
    assert loss.item() == 0.0
    assert last_metrics(trainer)["vtd/skip_fraction"] == 1.0
    assert all(torch.all(p.grad == 0) for p in trainer.model.parameters() if p.grad is not None)


class DistillEverything(VtDTrainer):
    def route(self, rewards, inputs):
        return torch.ones_like(rewards, dtype=torch.bool), torch.zeros_like(rewards, dtype=torch.bool)


class ContrastEverything(VtDTrainer):
    def route(self, rewards, inputs):
        return torch.zeros_like(rewards, dtype=torch.bool), torch.ones_like(rewards, dtype=torch.bool)


@pytest.mark.parametrize(
    ("trainer_cls", "nonzero"), [(DistillEverything, "distill"), (ContrastEverything, "contrast")]
)
def test_subclass_route_decides_the_loss_terms(model_dirs, tmp_path, trainer_cls, nonzero):
    rows = arithmetic_rows(2)
    trainer = make_trainer(model_dirs, tmp_path, trainer_cls=trainer_cls)
    trainer.compute_loss(trainer.model, generation_batch(trainer, rows))
    metrics = last_metrics(trainer)
    assert metrics[f"vtd/{nonzero}_fraction"] == 1.0
    assert metrics[f"vtd/{nonzero}_loss"] > 0
    other = "contrast" if nonzero == "distill" else "distill"
    assert metrics[f"vtd/{other}_loss"] == 0.0


def test_route_returning_wrong_types_is_a_clear_error(model_dirs, tmp_path):
    class BadRoute(VtDTrainer):
        def route(self, rewards, inputs):
            return rewards > 0.5, [True] * len(rewards)

    trainer = make_trainer(model_dirs, tmp_path, trainer_cls=BadRoute)
    with pytest.raises(TypeError, match="contrast_mask"):
        generation_batch(trainer, arithmetic_rows(2))


# ---------------------------------------------------------------------------------------------------- chosen side


def test_reference_is_rendered_as_the_assistant_turn(model_dirs, tmp_path, tokenizer):
    trainer = make_trainer(model_dirs, tmp_path)
    prompt = [{"role": "user", "content": "What is 1+1?"}]
    # Qwen3 in thinking mode: the reference is the reasoning, its last line the answer, as a sampled completion.
    ids = trainer.chosen.reference_ids(prompt, "1+1=2.\nSo \\boxed{2}")
    assert tokenizer.decode(ids) == "<think>\n1+1=2.\nSo \\boxed{2}\n</think>\n\nSo \\boxed{2}<|im_end|>"
    # A reference with its own think block is rendered as it is.
    ids = trainer.chosen.reference_ids(prompt, "<think>\n1+1=2\n</think>\n\n\\boxed{2}")
    assert tokenizer.decode(ids) == "<think>\n1+1=2\n</think>\n\n\\boxed{2}<|im_end|>"
    assert trainer.chosen.reference_ids("What is 1+1?", "2") == tokenizer("2")["input_ids"] + [tokenizer.eos_token_id]
    assert trainer.chosen.reference_ids(prompt, "  ") is None


def test_reference_as_the_visible_answer(model_dirs, tmp_path, tokenizer):
    trainer = make_trainer(model_dirs, tmp_path, vtd_reference_format="answer")
    ids = trainer.chosen.reference_ids([{"role": "user", "content": "1+1?"}], "1+1=2. \\boxed{2}")
    # Qwen3's template renders a final assistant turn with an (empty) think block, then the answer and <|im_end|>.
    assert tokenizer.decode(ids) == "<think>\n\n</think>\n\n1+1=2. \\boxed{2}<|im_end|>"


def test_reference_follows_chat_template_kwargs_and_max_length(model_dirs, tmp_path, tokenizer):
    trainer = make_trainer(
        model_dirs, tmp_path, chat_template_kwargs={"enable_thinking": False}, vtd_max_reference_length=5
    )
    prompt = [{"role": "user", "content": "What is 1+1?"}]
    # With thinking off the generation prompt already holds the empty think block: the chosen part starts after it.
    assert tokenizer.decode(trainer.chosen.reference_ids(prompt, "It is 2.")) == "It is"


@pytest.mark.parametrize(
    ("source", "has_reference", "pairs"),
    [
        ("reference", [True, False], [True, True, False, False]),
        ("sibling", [True, True], [True, True, True, True]),
        ("reference_then_sibling", [True, False], [True, True, True, True]),
        ("sibling_then_reference", [True, False], [True, True, True, True]),
    ],
)
def test_chosen_sources(model_dirs, tmp_path, tokenizer, source, has_reference, pairs):
    rows = arithmetic_rows(2)
    for row, keep in zip(rows, has_reference):
        row["reference"] = row["reference"] if keep else ""
    trainer = make_trainer(model_dirs, tmp_path, rows=rows, vtd_chosen_source=source)
    out = generation_batch(trainer, rows)
    assert out["vtd_contrast"][[1, 3, 5, 7]].tolist() == pairs
    for row_index in (1, 5):
        if not out["vtd_contrast"][row_index]:
            continue
        chosen = out["vtd_chosen_ids"][row_index][out["vtd_chosen_mask"][row_index].bool()]
        uses_reference = source in ("reference", "reference_then_sibling") and has_reference[row_index // K]
        a, b = operands(rows[row_index // K]["prompt"][0]["content"])
        reference = rows[row_index // K]["reference"]
        expected = f"<think>\n{reference}\n</think>\n\n{reference}" if uses_reference else None
        expected = expected or mixed_completions(f"{a}+{b}", 0)  # the first correct sibling
        assert tokenizer.decode(chosen) == expected + "<|im_end|>"
    assert last_metrics(trainer)["vtd/no_chosen_fraction"] == 0.25 * pairs.count(False) / 2


def first_prompt_all_wrong(prompt_text: str, position: int, row: int) -> str:
    """The first prompt's completions are all wrong, the second's mixed (positions 0 and 2 correct)."""
    return "7" if row < K else mixed_completions(prompt_text, position)


@pytest.mark.parametrize("has_reference", [True, False])
def test_sibling_then_reference_falls_back_to_the_reference(model_dirs, tmp_path, tokenizer, has_reference):
    rows = arithmetic_rows(2)
    for row in rows:
        row["reference"] = row["reference"] if has_reference else ""
    trainer = make_trainer(
        model_dirs, tmp_path, rows=rows, completions=first_prompt_all_wrong, vtd_chosen_source="sibling_then_reference"
    )
    out = generation_batch(trainer, rows)
    # The first prompt has no correct sibling: its 4 pairs take the reference (none without one), the second's the
    # first correct sibling, even though the row has a reference.
    assert out["vtd_contrast"].tolist() == [has_reference] * K + [False, True, False, True]

    def chosen_text(i):
        return tokenizer.decode(out["vtd_chosen_ids"][i][out["vtd_chosen_mask"][i].bool()])

    if has_reference:
        reference = rows[0]["reference"]
        assert {chosen_text(i) for i in range(K)} == {f"<think>\n{reference}\n</think>\n\n{reference}<|im_end|>"}
        assert out["vtd_chosen_key"][:K].unique().numel() == 1  # one chosen sequence, scored once
    a, b = operands(rows[1]["prompt"][0]["content"])
    for i in (K + 1, K + 3):
        assert chosen_text(i) == mixed_completions(f"{a}+{b}", 0) + "<|im_end|>"
    assert last_metrics(trainer)["vtd/no_chosen_fraction"] == (0.0 if has_reference else 0.5)


@pytest.mark.parametrize("teacher_is_right", [True, False])
def test_teacher_generation_is_the_chosen_sequence_where_nothing_else_is(
    model_dirs, tmp_path, tokenizer, monkeypatch, teacher_is_right
):
    rows = arithmetic_rows(2)
    trainer = make_trainer(
        model_dirs,
        tmp_path,
        rows=rows,
        completions=first_prompt_all_wrong,
        vtd_chosen_source="sibling",
        vtd_chosen_teacher_generation=True,
        vtd_chosen_nll_weight=1.0,
        vtd_chosen_nll_source="in_format",
    )
    calls = []

    def generate(prompt_ids, prompt_mask, max_new_tokens, eos_token_ids, pad_id):
        calls.append((tokenizer.batch_decode(prompt_ids, skip_special_tokens=True), max_new_tokens))
        a, b = operands(calls[-1][0][0].split("user")[-1])
        answer = a + b if teacher_is_right else a + b + 1
        return [
            tokenizer(f"{a}+{b}={answer}. \\boxed{{{answer}}}", add_special_tokens=False)["input_ids"]
            + [eos_token_ids[0]]
        ]

    monkeypatch.setattr(trainer.teacher, "generate", generate)
    out = generation_batch(trainer, rows)
    # Only the first prompt has no correct sibling: one generation, for it alone, up to the chosen sequences' length
    assert len(calls) == 1 and len(calls[0][0]) == 1 and "What is 10+3?" in calls[0][0][0] and calls[0][1] == 64
    assert out["vtd_contrast"].tolist() == [teacher_is_right] * K + [False, True, False, True]
    if teacher_is_right:
        for i in range(K):
            chosen = out["vtd_chosen_ids"][i][out["vtd_chosen_mask"][i].bool()]
            assert tokenizer.decode(chosen) == "10+3=13. \\boxed{13}<|im_end|>"
        assert out["vtd_chosen_key"][:K].tolist() == [2 * 2 * K + 0] * K  # after every sibling's key
        assert not out["vtd_chosen_is_sibling"][:K].any() and out["vtd_chosen_in_format"][:K].all()
    assert out["vtd_chosen_is_sibling"][[K + 1, K + 3]].all()
    assert last_metrics(trainer)["vtd/no_chosen_fraction"] == (0.0 if teacher_is_right else 0.5)
    loss = trainer.compute_loss(trainer.model, out)
    assert torch.isfinite(loss) and loss.item() > 0


def think_reference(row: dict) -> dict:
    """The row with its reference written in the student's thinking format, with its own think block."""
    a, b = operands(row["prompt"][0]["content"])
    return {**row, "reference": f"<think>\n{a}+{b}={a + b}\n</think>\n\n\\boxed{{{a + b}}}"}


@pytest.mark.parametrize(
    ("nll_source", "in_format_reference", "reference_has_nll"),
    [("sibling", False, False), ("sibling", True, False), ("in_format", False, False), ("in_format", True, True)],
)
def test_chosen_nll_on_some_pairs_only(
    model_dirs, tmp_path, tokenizer, nll_source, in_format_reference, reference_has_nll
):
    """The NLL term of `vtd_chosen_nll_source` 'sibling' and 'in_format', recomputed by hand from a plain forward."""
    rows = arithmetic_rows(2)
    rows[0] = think_reference(rows[0]) if in_format_reference else rows[0]
    weight, nll_weight = 0.5, 0.7
    losses, metrics = [], []
    for w in (0.0, nll_weight):
        trainer = make_trainer(
            model_dirs,
            tmp_path,
            rows=rows,
            completions=first_prompt_all_wrong,
            vtd_chosen_source="sibling_then_reference",
            vtd_contrast_beta=weight,
            vtd_chosen_nll_weight=w,
            vtd_chosen_nll_source=nll_source if w else "all",
        )
        out = generation_batch(trainer, rows)
        assert out["vtd_chosen_is_sibling"].tolist() == [False] * K + [False, True, False, True]
        assert out["vtd_chosen_in_format"].tolist() == [in_format_reference] * K + [False, True, False, True]
        losses.append(trainer.compute_loss(trainer.model, out).item())
        metrics.append(last_metrics(trainer))
    policy = AutoModelForCausalLM.from_pretrained(model_dirs["student"])

    def mean_nll(row, part_ids):
        prompt_ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)
        prompt_ids = list(prompt_ids["input_ids"] if hasattr(prompt_ids, "keys") else prompt_ids)
        with torch.no_grad():
            return -sequence_logps(policy, prompt_ids, part_ids).item() / len(part_ids)

    a, b = operands(rows[1]["prompt"][0]["content"])
    sibling = tokenizer(mixed_completions(f"{a}+{b}", 0), add_special_tokens=False)["input_ids"]
    nlls = [mean_nll(rows[1], sibling + [tokenizer.eos_token_id])] * 2  # the second prompt's 2 sibling pairs
    if reference_has_nll:  # and the first prompt's 4 pairs, whose chosen is its in-format reference
        nlls += [mean_nll(rows[0], out["vtd_chosen_ids"][0][out["vtd_chosen_mask"][0].bool()].tolist())] * K
    # out of 8 completions
    assert losses[1] - losses[0] == pytest.approx(weight * nll_weight * sum(nlls) / (2 * K), rel=1e-5)
    assert metrics[1]["vtd/chosen_nll"] == pytest.approx(sum(nlls) / len(nlls), rel=1e-5)
    assert metrics[1]["vtd/contrast_loss"] - metrics[0]["vtd/contrast_loss"] == pytest.approx(
        nll_weight * sum(nlls) / (2 * K), rel=1e-5
    )


def test_auto_chosen_source_prefers_references_in_the_students_format(model_dirs, tmp_path, tokenizer):
    # Prompt 0: all wrong, a terse reference; prompt 1: a correct sibling and a reference in the thinking format;
    # prompt 2: a correct sibling and a terse reference.
    rows = arithmetic_rows(3)
    rows[1] = think_reference(rows[1])
    trainer = make_trainer(
        model_dirs, tmp_path, rows=rows, completions=first_prompt_all_wrong, vtd_chosen_source="auto"
    )
    assert [trainer.chosen.in_format(row["prompt"], row["reference"]) for row in rows] == [False, True, False]
    out = generation_batch(trainer, rows)
    pairs = out["vtd_contrast"].tolist()
    assert pairs == [True] * K + [False, True, False, True] * 2
    keys = out["vtd_chosen_key"].tolist()
    assert keys[:K] == [0] * K  # the terse reference: no sibling is right
    assert [keys[K + 1], keys[K + 3]] == [1, 1]  # the in-format reference, although a sibling is right
    assert [keys[2 * K + 1], keys[2 * K + 3]] == [3 * K + 2 * K] * 2  # the first correct sibling (row 2K)
    assert out["vtd_chosen_in_format"].tolist() == [False] * K + [False, True, False, True] * 2
    text = tokenizer.decode(out["vtd_chosen_ids"][K + 1][out["vtd_chosen_mask"][K + 1].bool()])
    a, b = operands(rows[1]["prompt"][0]["content"])
    assert f"{a}+{b}={a + b}\n</think>" in text and text.endswith("\\boxed{" + str(a + b) + "}<|im_end|>")


def test_chosen_reference_logps_are_computed_once_per_prompt(model_dirs, tmp_path, monkeypatch):
    rows = arithmetic_rows(2)
    trainer = make_trainer(model_dirs, tmp_path, rows=rows)
    scored = []
    original = trainer._reference_sequence_logps
    monkeypatch.setattr(
        trainer, "_reference_sequence_logps", lambda batch: scored.append(len(batch)) or original(batch)
    )
    generation_batch(trainer, rows)
    assert sum(scored) == 4 + 2  # 4 rejected completions, 2 chosen sequences (not one per pair)


@pytest.mark.parametrize(("when", "calls_in_loss"), [("generation_batch", 0), ("micro_batch", 1)])
def test_teacher_runs_once_and_only_on_distilled_rows(model_dirs, tmp_path, monkeypatch, when, calls_in_loss):
    rows = arithmetic_rows(2)
    trainer = make_trainer(model_dirs, tmp_path, rows=rows, vtd_teacher_signal=when)
    seen = []
    original = trainer.teacher.signal
    monkeypatch.setattr(trainer.teacher, "signal", lambda batch: seen.append(len(batch)) or original(batch))
    out = generation_batch(trainer, rows)
    before_loss = len(seen)
    trainer.compute_loss(trainer.model, out)
    assert len(seen) - before_loss == calls_in_loss
    assert seen == [int(out["vtd_distill"].sum())] == [4]


@pytest.mark.parametrize(("completions", "gathered"), [(mixed_completions, True), (lambda p, j, i: "7", False)])
def test_teacher_head_is_gathered_only_when_some_process_distils(
    model_dirs, tmp_path, monkeypatch, completions, gathered
):
    import vtd_trl.trainer as trainer_module

    rows = arithmetic_rows(2)
    trainer = make_trainer(model_dirs, tmp_path, rows=rows, completions=completions)
    out = generation_batch(trainer, rows)
    teacher_head = trainer.teacher_model.get_output_embeddings().weight
    gathers, full = [], []
    original_ctx, original_full = trainer_module.maybe_gather_lm_head_ctx, trainer_module.full_tensor
    monkeypatch.setattr(trainer_module, "maybe_gather_lm_head_ctx", lambda *p: gathers.append(p) or original_ctx(*p))
    monkeypatch.setattr(trainer_module, "full_tensor", lambda w: full.append(w) or original_full(w))
    trainer.compute_loss(trainer.model, out)
    assert out["vtd_distill"].any() == gathered
    # ZeRO-3's gather context and FSDP2's full_tensor: the teacher's head in both or in neither
    assert any(p is teacher_head for params in gathers for p in params) == gathered
    assert any(w is teacher_head for w in full) == gathered


def test_env_mask_tokens_count_neither_in_policy_nor_reference(model_dirs, tmp_path):
    """With tokens masked out of the loss (tool output, `env_mask`), both DPO log-ratios skip the same tokens."""
    rows = arithmetic_rows(2)
    trainer = make_trainer(model_dirs, tmp_path, rows=rows, env_mask=lambda row, k: int(k % 3 != 1))
    trainer.compute_loss(trainer.model, generation_batch(trainer, rows))
    metrics = last_metrics(trainer)
    assert abs(metrics["vtd/dpo_margin"]) < 1e-5  # policy == reference at the start: no margin
    assert metrics["vtd/contrast_loss"] == pytest.approx(4 * math.log(2) / 8, rel=1e-5)


def test_sibling_with_tool_output_is_not_a_chosen_sequence(model_dirs, tmp_path, tokenizer):
    """A correct completion holding tokens the policy did not write (tool output) is passed over as a chosen one."""
    rows = arithmetic_rows(2)
    # The first completion of each group (correct) carries two tokens of tool output.
    trainer = make_trainer(
        model_dirs, tmp_path, rows=rows, vtd_chosen_source="sibling",
        env_mask=lambda row, k: int(not (row % K == 0 and 2 <= k < 4)),
    )  # fmt: skip
    out = generation_batch(trainer, rows)
    for row_index in (1, 3, 5, 7):
        chosen = out["vtd_chosen_ids"][row_index][out["vtd_chosen_mask"][row_index].bool()]
        expected = mixed_completions(rows[row_index // K]["prompt"][0]["content"], 2)  # the second correct sibling
        assert tokenizer.decode(chosen) == expected + "<|im_end|>"


def truncating_completions(prompt_text: str, position: int, row: int = 0) -> str:
    """Position 0 correct but truncated (no EOS), 1 wrong and truncated, 2 correct, 3 wrong."""
    a, b = operands(prompt_text)
    return [f"\\boxed{{{a + b}}} and so on...", "I think...", f"\\boxed{{{a + b}}}", "7"][position]


def test_masked_truncated_completions_are_skipped(model_dirs, tmp_path, tokenizer):
    rows = arithmetic_rows(2)
    trainer = make_trainer(
        model_dirs,
        tmp_path,
        completions=truncating_completions,
        mask_truncated_completions=True,
        vtd_chosen_source="sibling",
    )
    out = generation_batch(trainer, rows)
    assert out["vtd_distill"].tolist() == [False, False, True, False] * 2
    assert out["vtd_contrast"].tolist() == [False, False, False, True] * 2
    # The sibling is the correct completion that kept its tokens, not the truncated one before it.
    chosen = out["vtd_chosen_ids"][3][out["vtd_chosen_mask"][3].bool()]
    assert tokenizer.decode(chosen) == truncating_completions(rows[0]["prompt"][0]["content"], 2) + "<|im_end|>"
    assert last_metrics(trainer)["vtd/skip_fraction"] == 0.5


@pytest.mark.parametrize(
    ("policy", "distill", "contrast"),
    [
        ("contrast", [True, False, True, False], [False, True, False, True]),
        ("distill", [True, True, True, False], [False, False, False, True]),
        ("skip", [True, False, True, False], [False, False, False, True]),
    ],
)
def test_truncated_completions_follow_their_policy(model_dirs, tmp_path, policy, distill, contrast):
    rows = arithmetic_rows(2)
    trainer = make_trainer(model_dirs, tmp_path, completions=truncating_completions, vtd_truncated_completions=policy)
    out = generation_batch(trainer, rows)
    assert out["vtd_truncated"].tolist() == [True, True, False, False] * 2
    assert out["vtd_distill"].tolist() == distill * 2
    assert out["vtd_contrast"].tolist() == contrast * 2
    assert last_metrics(trainer)["vtd/truncated_fraction"] == 0.5


def test_route_overrides_with_and_without_the_generation_output(model_dirs, tmp_path):
    seen = []

    class LengthRoute(VtDTrainer):  # the new signature: sees the generation output
        def route(self, rewards, inputs, generation=None):
            seen.append(generation["vtd_truncated"].tolist())
            short = generation["completion_mask"].sum(1) <= 3
            return short, ~short

    class OldRoute(VtDTrainer):  # the two-argument signature keeps working, and its super() call too
        def route(self, rewards, inputs):
            distill, contrast = super().route(rewards, inputs)
            return distill, contrast & False

    rows = arithmetic_rows(2)
    out = generation_batch(
        make_trainer(model_dirs, tmp_path, completions=truncating_completions, trainer_cls=LengthRoute), rows
    )
    assert seen == [[True, True, False, False] * 2]
    assert out["vtd_distill"].tolist() == [False, False, False, True] * 2  # "7" + EOS is the only short one
    out = generation_batch(
        make_trainer(
            model_dirs,
            tmp_path,
            completions=truncating_completions,
            trainer_cls=OldRoute,
            vtd_truncated_completions="distill",
        ),
        rows,
    )
    # Without the generation output the default rule cannot see truncation: the cut wrong completion is not distilled
    assert out["vtd_distill"].tolist() == [True, False, True, False] * 2
    assert not out["vtd_contrast"].any()


@pytest.mark.parametrize(
    ("source", "drop", "pairs", "chosen_truncated"),
    [
        ("reference", False, [True, True], 1.0),  # kept, cut before its answer and EOS
        ("reference", True, [False, False], 1.0),  # dropped: no pair
        ("reference_then_sibling", True, [True, True], 0.0),  # dropped, replaced by the short correct sibling
        ("sibling", False, [True, True], 1.0),  # the first correct sibling is cut by the same limit
    ],
)
def test_truncated_chosen_sequences_are_counted_and_can_be_dropped(
    model_dirs, tmp_path, tokenizer, source, drop, pairs, chosen_truncated
):
    rows = arithmetic_rows(2)
    short = tokenizer("\\boxed{13}", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    trainer = make_trainer(
        model_dirs,
        tmp_path,
        rows=rows,
        vtd_chosen_source=source,
        vtd_drop_truncated_chosen=drop,
        vtd_max_reference_length=len(short),  # the references and the long sibling are cut, "\\boxed{13}" is not
    )
    out = generation_batch(trainer, rows)
    assert out["vtd_contrast"][[1, 3]].tolist() == pairs
    metrics = last_metrics(trainer)
    assert metrics["vtd/chosen_truncated_fraction"] == chosen_truncated
    assert metrics["vtd/no_chosen_fraction"] == (0.0 if all(pairs) else 0.5)
    if source == "reference_then_sibling":
        chosen = out["vtd_chosen_ids"][1][out["vtd_chosen_mask"][1].bool()]
        assert chosen.tolist() == short


def test_no_unused_forward_when_generation_and_updates_are_misaligned(model_dirs, tmp_path, monkeypatch):
    """GRPO computes old log-probs when steps_per_generation != accumulation; VtD's loss reads none of them."""
    trainer = make_trainer(model_dirs, tmp_path, steps_per_generation=2, max_steps=2, per_device_train_batch_size=4)
    forwards = []
    original = type(trainer).__mro__[1]._get_per_token_logps_and_entropies
    monkeypatch.setattr(
        type(trainer).__mro__[1],
        "_get_per_token_logps_and_entropies",
        lambda *a, **k: forwards.append(1) or original(*a, **k),
    )
    trainer.train()
    assert forwards == []
    assert all(math.isfinite(e["loss"]) for e in trainer.state.log_history if "loss" in e)


# ---------------------------------------------------------------------------------------------------- the loss


def sequence_logps(model, prompt_ids, part_ids) -> torch.Tensor:
    ids = torch.tensor([prompt_ids + part_ids])
    logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].double()
    return logits.log_softmax(-1).gather(-1, torch.tensor(part_ids).unsqueeze(-1)).sum()


@pytest.fixture(scope="module")
def scaled_model_dirs(tmp_path_factory, tokenizer):
    """A Granite student that divides its logits by 4 and a Cohere teacher that multiplies them by 0.5."""
    root = tmp_path_factory.mktemp("scaled")
    common = dict(
        vocab_size=len(tokenizer),
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    paths = {}
    for name, config in (
        ("student", GraniteConfig(hidden_size=32, logits_scaling=4.0, **common)),
        ("teacher", CohereConfig(hidden_size=48, logit_scale=0.5, **common)),
    ):
        torch.manual_seed(len(name))
        AutoModelForCausalLM.from_config(config).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths[name] = str(root / name)
    return paths


@pytest.mark.parametrize(
    ("backend", "distill_incorrect", "scaled", "nll_weight", "loss_type", "when", "levers"),
    [
        ("naive", False, False, 0.0, "sigmoid", "generation_batch", {}),
        ("chunked", False, False, 0.0, "sigmoid", "generation_batch", {}),
        ("chunked", False, False, 0.0, "sigmoid", "micro_batch", {}),
        ("chunked", True, False, 0.0, "sigmoid", "generation_batch", {}),
        ("chunked", False, True, 0.0, "sigmoid", "generation_batch", {}),
        ("chunked", True, False, 0.7, "sigmoid", "generation_batch", {}),  # RPO: the chosen sequence's NLL
        ("chunked", False, False, 0.0, "length_normalized", "generation_batch", {}),
        ("naive", False, True, 0.7, "length_normalized", "micro_batch", {}),
        ("naive", False, True, 0.0, "sigmoid", "micro_batch", {}),
        # The teacher's divergence on each pair's chosen sequence (teacher-forced), in the distillation term
        ("chunked", False, False, 0.0, "sigmoid", "generation_batch", {"vtd_chosen_distill_weight": 0.6}),
        ("naive", True, True, 0.7, "sigmoid", "micro_batch", {"vtd_chosen_distill_weight": 1.5}),
        # Distilled tokens weighted by the entropy gap between student and teacher
        ("chunked", True, False, 0.0, "sigmoid", "generation_batch", {"vtd_distill_entropy_gap": 2.0}),
        (
            "naive",
            False,
            True,
            0.0,
            "sigmoid",
            "micro_batch",
            {"vtd_distill_entropy_gap": -1.0, "vtd_chosen_distill_weight": 0.6},
        ),
    ],
)
def test_loss_and_gradient_match_an_independent_recomputation(
    model_dirs,
    scaled_model_dirs,
    tmp_path,
    tokenizer,
    backend,
    distill_incorrect,
    scaled,
    nll_weight,
    loss_type,
    when,
    levers,
):
    """The whole VtD loss of one generation batch, recomputed from plain full-logit forwards of fresh models."""
    model_dirs = scaled_model_dirs if scaled else model_dirs
    rows = [dict(arithmetic_rows(1)[0]), dict(arithmetic_rows(1, start=200)[0])]  # prompts of different lengths
    alpha, weight, dpo_beta, distill_beta, temperature = 5.0, 0.1, 0.5, 0.5, 0.8
    trainer = make_trainer(
        model_dirs,
        tmp_path,
        rows=rows,
        vtd_distill_backend=backend,
        vtd_dpo_beta=dpo_beta,
        vtd_distill_beta=distill_beta,
        vtd_distill_temperature=temperature,
        vtd_distill_incorrect=distill_incorrect,
        vtd_teacher_signal=when,
        vtd_chosen_nll_weight=nll_weight,
        vtd_dpo_loss_type=loss_type,
        **levers,
    )
    # Move the policy away from the reference, so the DPO term is not at its log(2) starting point.
    torch.manual_seed(3)
    with torch.no_grad():
        for param in trainer.model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    out = generation_batch(trainer, rows)
    assert out["prompt_mask"].sum(1).unique().numel() == 2  # left padding is exercised
    loss = trainer.compute_loss(trainer.model, out)
    loss.backward()

    policy = AutoModelForCausalLM.from_pretrained(model_dirs["student"])
    policy.load_state_dict(trainer.model.state_dict())
    reference = AutoModelForCausalLM.from_pretrained(model_dirs["student"])
    teacher = AutoModelForCausalLM.from_pretrained(model_dirs["teacher"])
    distill_sum, contrast_sum, num_tokens, nlls = 0.0, 0.0, 0, []
    chosen_distill, a = levers.get("vtd_chosen_distill_weight", 0.0), levers.get("vtd_distill_entropy_gap", 0.0)

    def divergence(s, t):  # summed over tokens, each weighted by 2 sigmoid(a (H_s - H_t)) (1 when a = 0)
        with torch.no_grad():
            gap = torch.special.entr(s.softmax(-1)).sum(-1) - torch.special.entr(t.softmax(-1)).sum(-1)
        return (2 * torch.sigmoid(a * gap) * generalized_jsd(s, t, distill_beta)).sum()

    for row in rows:
        prompt_ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)
        prompt_ids = list(prompt_ids["input_ids"] if hasattr(prompt_ids, "keys") else prompt_ids)
        # Thinking mode: the reference inside the think block, its last line repeated as the answer
        chosen_text = f"<think>\n{row['reference']}\n</think>\n\n{row['reference']}<|im_end|>"
        chosen_ids = tokenizer(chosen_text, add_special_tokens=False)["input_ids"]
        for position in range(K):
            text = mixed_completions(row["prompt"][0]["content"], position)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            num_tokens += len(ids)
            full = torch.tensor([prompt_ids + ids])
            correct = position in (0, 2)
            if correct or distill_incorrect:
                s = policy(input_ids=full).logits[0, len(prompt_ids) - 1 : -1].double() / temperature
                with torch.no_grad():
                    t = teacher(input_ids=full).logits[0, len(prompt_ids) - 1 : -1].double() / temperature
                distill_sum = distill_sum + divergence(s, t)
            if not correct:  # a DPO pair against the reference
                # Length-normalised DPO divides each sequence's log-probs (and so its log-ratio) by its token count
                n_c, n_r = (len(chosen_ids), len(ids)) if loss_type == "length_normalized" else (1, 1)
                with torch.no_grad():
                    ref_margin = (
                        sequence_logps(reference, prompt_ids, chosen_ids) / n_c
                        - sequence_logps(reference, prompt_ids, ids) / n_r
                    )
                policy_chosen = sequence_logps(policy, prompt_ids, chosen_ids)
                margin = policy_chosen / n_c - sequence_logps(policy, prompt_ids, ids) / n_r
                contrast_sum = contrast_sum - torch.nn.functional.logsigmoid(dpo_beta * (margin - ref_margin))
                nlls.append(-policy_chosen / len(chosen_ids))  # mean over the chosen sequence's tokens
                contrast_sum = contrast_sum + nll_weight * nlls[-1]
                if chosen_distill:  # each pair distils its chosen sequence, teacher-forced
                    chosen_full = torch.tensor([prompt_ids + chosen_ids])
                    s = policy(input_ids=chosen_full).logits[0, len(prompt_ids) - 1 : -1].double() / temperature
                    with torch.no_grad():
                        t = teacher(input_ids=chosen_full).logits[0, len(prompt_ids) - 1 : -1].double() / temperature
                    distill_sum = distill_sum + chosen_distill * divergence(s, t)
    expected = alpha * distill_sum / num_tokens
    expected = expected + weight * contrast_sum / (len(rows) * K)
    expected.backward()

    # Granite's and Cohere's multipliers add fp32 rounding of their own (a wrong logit scale is off by O(1))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4 if scaled else 1e-5)
    if nll_weight:
        chosen_nll = last_metrics(trainer)["vtd/chosen_nll"]
        assert chosen_nll == pytest.approx(sum(n.item() for n in nlls) / len(nlls), rel=1e-4 if scaled else 1e-5)
    else:
        assert "vtd/chosen_nll" not in last_metrics(trainer)
    for (name, param), (_, ref_param) in zip(trainer.model.named_parameters(), policy.named_parameters()):
        torch.testing.assert_close(param.grad, ref_param.grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def spread_completions(prompt_text: str, position: int, row: int) -> str:
    """The first prompt's completions are short, the second's long: all correct."""
    a, b = operands(prompt_text)
    return ("" if row < K else f"{a}+{b}={a + b}. " * 4) + f"\\boxed{{{a + b}}}"


def test_each_micro_batch_runs_at_its_own_longest_row(model_dirs, tmp_path, monkeypatch):
    from trl.trainer.utils import split_tensor_dict

    import vtd_trl.packing as packing
    import vtd_trl.teachers as teachers
    import vtd_trl.trainer as trainer_module

    rows = [dict(arithmetic_rows(1)[0]), dict(arithmetic_rows(1, start=200)[0])]  # prompts of different lengths
    trainer = make_trainer(
        model_dirs,
        tmp_path,
        rows=rows,
        completions=spread_completions,
        vtd_contrast_beta=0.0,
        vtd_teacher_signal="micro_batch",  # the teacher's forward runs in each micro-batch's loss too
    )
    out = generation_batch(trainer, rows)
    widths = []
    original = packing.hidden_states
    for module in (trainer_module, teachers):  # the student's and the teacher's forwards
        monkeypatch.setattr(
            module, "hidden_states", lambda m, b, a: widths.append(b.input_ids.shape) or original(m, b, a)
        )

    def losses():
        return [trainer._vtd_loss(trainer.model, half, "eval")[1][0].item() for half in split_tensor_dict(out, 2)]

    trimmed = losses()
    lengths = out["completion_mask"].sum(1)
    prompt_lengths = out["prompt_mask"].sum(1)
    # student and teacher forwards of each half, at that half's own prompt + completion width
    expected = [(K, int(prompt_lengths[h].max() + lengths[h].max())) for h in (slice(0, K), slice(K, 2 * K))]
    assert widths == [expected[0], expected[0], expected[1], expected[1]]
    assert widths[0][1] < out["prompt_ids"].shape[1] + out["completion_ids"].shape[1]
    widths.clear()
    monkeypatch.setattr(packing.Batch, "trimmed", lambda self: self)
    untrimmed = losses()
    assert widths[0][1] == out["prompt_ids"].shape[1] + out["completion_ids"].shape[1]
    assert trimmed == pytest.approx(untrimmed, rel=1e-5)  # the same sums: only padding (and RoPE offsets) went


def test_dpo_sequence_logps_of_a_bf16_model_are_computed_from_fp32_logits():
    from trl.kernels import ChunkedLogProbFunction

    from vtd_trl.packing import Batch, sequence_logps_from_hidden

    generator = torch.Generator().manual_seed(0)
    n, length, hidden_size, vocab = 2, 256, 64, 1000
    # Logits of std 4: bf16 rounds them by up to 0.03
    hidden = (torch.randn(n, length, hidden_size, generator=generator) * 2).bfloat16()
    weight = (torch.randn(vocab, hidden_size, generator=generator) * 2 / hidden_size**0.5).bfloat16()
    logits = hidden.double() @ weight.double().t()
    targets = torch.multinomial(logits.view(-1, vocab).softmax(-1), 1, generator=generator).view(n, length)  # sampled
    ones = torch.ones(n, length, dtype=torch.long)
    batch = Batch(torch.zeros(n, 1, dtype=torch.long), torch.ones(n, 1, dtype=torch.long), targets, ones, ones)
    exact = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1).sum(1)
    logps = sequence_logps_from_hidden(hidden, weight, batch)
    bf16_tiles = ChunkedLogProbFunction.apply(
        hidden.reshape(-1, hidden_size), weight, None, targets.reshape(-1), 1.0, 4096, None, 1.0, ("log_probs",)
    )[0]
    assert (bf16_tiles.double().view(n, length).sum(1) - exact).abs().max() > 0.05  # what bf16 tiles would cost
    assert (logps.double() - exact).abs().max() < 1e-3  # the fp32 sum of ~600 nats


def test_literal_normalizers(model_dirs, tmp_path):
    rows = arithmetic_rows(2)
    kwargs = dict(vtd_distill_backend="naive")
    default = make_trainer(model_dirs, tmp_path, **kwargs)
    default.compute_loss(default.model, generation_batch(default, rows))
    literal = make_trainer(
        model_dirs, tmp_path, vtd_distill_normalizer="distilled_tokens", vtd_contrast_normalizer="pairs", **kwargs
    )
    out = generation_batch(literal, rows)
    literal.compute_loss(literal.model, out)
    tokens_ratio = out["num_items_in_batch"].item() / out["vtd_num_distilled_tokens"].item()
    base, lit = last_metrics(default), last_metrics(literal)
    assert lit["vtd/distill_loss"] == pytest.approx(base["vtd/distill_loss"] * tokens_ratio, rel=1e-5)
    assert lit["vtd/contrast_loss"] == pytest.approx(base["vtd/contrast_loss"] * 8 / 4, rel=1e-5)


# ---------------------------------------------------------------------------------------------------- training


def one_step_update(model_dirs, tmp_path, per_device, accumulation, completions=mixed_completions):
    rows = arithmetic_rows(4)
    args = dict(
        num_generations=K,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        optim="sgd",
        learning_rate=1.0,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
    )
    trainer = VtDTrainer(
        model=model_dirs["student"],
        teacher_model=model_dirs["teacher"],
        args=vtd_args(tmp_path / f"{per_device}x{accumulation}", **args),
        train_dataset=Dataset.from_list(rows),
        rollout_func=fixed_rollout(completions),
    )
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    return {name: before[name] - p.detach() for name, p in trainer.model.named_parameters()}


def test_gradient_is_independent_of_accumulation(model_dirs, tmp_path):
    """One generation batch of 16 completions: 1 micro-batch of 16, 2 of 8 or 4 of 4 give the same update."""
    reference = one_step_update(model_dirs, tmp_path, per_device=16, accumulation=1)
    assert max(d.abs().max().item() for d in reference.values()) > 1e-4
    for per_device, accumulation in ((8, 2), (4, 4)):
        update = one_step_update(model_dirs, tmp_path, per_device, accumulation)
        for name, delta in reference.items():
            torch.testing.assert_close(update[name], delta, rtol=1e-4, atol=1e-7, msg=name)


def test_training_changes_the_student_and_never_the_teacher(model_dirs, tmp_path):
    trainer = make_trainer(model_dirs, tmp_path, max_steps=3)
    teacher = trainer.accelerator.unwrap_model(trainer.teacher_model)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())
    assert any(not torch.equal(student_before[k], v) for k, v in trainer.model.state_dict().items())
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    logged = set().union(*trainer.state.log_history)
    for name in ("accuracy", "distill_fraction", "contrast_fraction", "skip_fraction", "distill_loss",
                 "contrast_loss", "dpo_margin", "dpo_accuracy"):  # fmt: skip
        assert f"vtd/{name}" in logged


def test_zero3_reloads_the_reference_of_a_student_instance(model_dirs, tmp_path, tokenizer, monkeypatch):
    """Under ZeRO-3 a partitioned student can't be deep-copied: the DPO reference is loaded again from its path."""
    monkeypatch.setattr("vtd_trl.setup.is_deepspeed_zero3_enabled", lambda: True)
    student = AutoModelForCausalLM.from_pretrained(model_dirs["student"])
    saved_norm = student.model.norm.weight.detach().clone()
    with torch.no_grad():
        student.model.norm.weight.add_(1.0)  # the instance now differs from its saved weights
    trainer = VtDTrainer(
        model=student,
        teacher_model=model_dirs["teacher"],
        args=vtd_args(tmp_path),
        train_dataset=Dataset.from_list(arithmetic_rows(2)),
        processing_class=tokenizer,
    )
    reference = trainer.accelerator.unwrap_model(trainer.reference_model)
    assert torch.equal(reference.model.norm.weight, saved_norm)

    in_memory = AutoModelForCausalLM.from_config(student.config)
    in_memory.config._name_or_path = ""
    with pytest.raises(ValueError, match=r"reloaded from the student's path.*Save it first"):
        VtDTrainer(
            model=in_memory,
            teacher_model=model_dirs["teacher"],
            args=vtd_args(tmp_path),
            train_dataset=Dataset.from_list(arithmetic_rows(2)),
            processing_class=tokenizer,
        )


def test_lora_training_and_adapter_free_reference(model_dirs, tmp_path):
    from peft import LoraConfig

    rows = arithmetic_rows(2)
    # Gradient checkpointing on: PEFT needs input gradients for it, the hidden-state path must keep working.
    args = vtd_args(
        tmp_path, num_generations=K, per_device_train_batch_size=8, max_steps=2, gradient_checkpointing=True
    )
    trainer = VtDTrainer(
        model=model_dirs["student"],
        teacher_model=model_dirs["teacher"],
        args=args,
        train_dataset=Dataset.from_list(rows),
        rollout_func=fixed_rollout(mixed_completions),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    assert trainer.reference_model is None  # the reference is the base model, adapters disabled
    out = generation_batch(trainer, rows)
    base = AutoModelForCausalLM.from_pretrained(model_dirs["student"])
    prompt_ids = out["prompt_ids"][1][out["prompt_mask"][1].bool()].tolist()
    rejected = out["completion_ids"][1][out["completion_mask"][1].bool()].tolist()
    expected = sequence_logps(base, prompt_ids, rejected)
    assert out["vtd_ref_rejected_logps"][1].item() == pytest.approx(expected.item(), rel=1e-5)
    lora_before = {n: p.clone() for n, p in trainer.model.named_parameters() if "lora" in n}
    frozen_before = {n: p.clone() for n, p in trainer.model.named_parameters() if "lora" not in n}
    trainer.train()
    params = dict(trainer.model.named_parameters())
    assert any(not torch.equal(lora_before[n], params[n]) for n in lora_before)
    assert all(torch.equal(frozen_before[n], params[n]) for n in frozen_before)
    assert all(math.isfinite(e["loss"]) for e in trainer.state.log_history if "loss" in e)


# ---------------------------------------------------------------------------------------------------- setup errors


def test_vocabulary_mismatch_is_a_clear_error(model_dirs, tmp_path):
    from vtd_trl.demo.models import tiny_qwen3
    from vtd_trl.demo.tokenizer import build_char_tokenizer

    other = build_char_tokenizer(extra_tokens=["<answer>"])
    path = tmp_path / "other-teacher"
    tiny_qwen3(other, hidden_size=32).save_pretrained(path)
    other.save_pretrained(path)
    with pytest.raises(ValueError, match=r"teacher's vocabulary \(106 tokens\) differs from the student's \(105"):
        VtDTrainer(
            model=model_dirs["student"],
            teacher_model=str(path),
            args=vtd_args(tmp_path),
            train_dataset=Dataset.from_list(arithmetic_rows(2)),
        )


def test_missing_columns_and_teacher_are_clear_errors(model_dirs, tmp_path):
    rows = [{"prompt": r["prompt"], "answer": r["answer"]} for r in arithmetic_rows(2)]
    with pytest.raises(ValueError, match="'reference'.*vtd_chosen_source='sibling'"):
        VtDTrainer(model_dirs["student"], model_dirs["teacher"], vtd_args(tmp_path), Dataset.from_list(rows))
    with pytest.raises(ValueError, match="'gold'.*vtd_answer_column"):
        VtDTrainer(
            model_dirs["student"],
            model_dirs["teacher"],
            vtd_args(tmp_path, vtd_answer_column="gold"),
            Dataset.from_list(arithmetic_rows(2)),
        )
    with pytest.raises(ValueError, match="teacher_model_name_or_path"):
        VtDTrainer(model_dirs["student"], args=vtd_args(tmp_path), train_dataset=Dataset.from_list(arithmetic_rows(2)))


def test_model_card_names_the_method(model_dirs, tmp_path):
    trainer = make_trainer(model_dirs, tmp_path)
    trainer.create_model_card(model_name="tiny-vtd")
    card = (tmp_path / "README.md").read_text()
    assert "- vtd" in card and "VtD" in card
    args = trainer.args
    for name, value in [
        ("`num_generations`", args.num_generations),
        ("`vtd_distill_alpha`", args.vtd_distill_alpha),
        ("`vtd_contrast_beta`", args.vtd_contrast_beta),
        ("`vtd_distill_top_k`", "full vocabulary"),
        ("teacher scored", "locally, per generation batch"),
    ]:
        row = next(line for line in card.splitlines() if name in line)
        assert f"`{value}`" in row, row
