"""The offline demo: the toy task generator, the demo tokenizer, SFT data, the shipped models and their evaluation."""

import random
import re

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from vtd_trl.demo import pretrain
from vtd_trl.demo.evaluate import EvalResult, evaluate, greedy_completions
from vtd_trl.demo.models import DEMO_ROLES, demo_model_path, resolve_model
from vtd_trl.demo.pretrain import DemoModelSpec, demo_tokenizer, sft_dataset
from vtd_trl.demo.task import TASK_WORDS, demo_dataset, generate_problems, sample_problem
from vtd_trl.demo.tokenizer import build_char_tokenizer
from vtd_trl.verify import verify

# An independent reading of the question: the start count, then each action's verb and amount.
START = re.compile(r"^(\w+) has (\d+) (\w+)\. ")
ACTION = re.compile(r"(buys|finds|gets|sells|loses|gives away) (\d+)( more)?")
STEP = re.compile(r"^(\d+) ([+-]) (\d+) = (\d+)$")
GAIN = {"buys", "finds", "gets"}


def solve_question(question: str) -> tuple[int, list[int]]:
    """Start count and signed amounts of a demo question, read from its text."""
    start = int(START.match(question).group(2))
    amounts = [int(n) if verb in GAIN else -int(n) for verb, n, _ in ACTION.findall(question)]
    return start, amounts


def test_first_rows_are_pinned():
    # The shipped models were trained on this generator: a change to it must be deliberate.
    assert demo_dataset("test", 2, seed=0).to_list() == [
        {
            "prompt": [
                {
                    "role": "user",
                    "content": "Ivy has 23 stamps. She buys 39 more, then buys 18 more. "
                    "How many stamps does Ivy have now?",
                }
            ],
            "answer": "80",
            "reference": "<think>\n23 + 39 = 62\n62 + 18 = 80\n</think>\n\nIvy has \\boxed{80} stamps now.",
        },
        {
            "prompt": [
                {
                    "role": "user",
                    "content": "Tom has 23 coins. He gets 5 more, then gets 19 more, then loses 18. "
                    "How many coins does Tom have now?",
                }
            ],
            "answer": "29",
            "reference": "<think>\n23 + 5 = 28\n28 + 19 = 47\n47 - 18 = 29\n</think>\n\nTom has \\boxed{29} coins now.",
        },
    ]


@pytest.mark.parametrize("split", ["train", "test"])
def test_references_are_arithmetically_right(split):
    for row in demo_dataset(split, 300, seed=3):
        question = row["prompt"][0]["content"]
        start, amounts = solve_question(question)
        assert len(amounts) in (2, 3) and question.endswith(" have now?")

        think, final = re.fullmatch(r"<think>\n(.*)\n</think>\n\n(.*)", row["reference"], re.DOTALL).groups()
        total = start
        for line, amount in zip(think.split("\n"), amounts, strict=True):
            left, op, right, result = STEP.match(line).groups()
            assert int(left) == total
            assert (1 if op == "+" else -1) * int(right) == amount
            total += amount
            assert int(result) == total and 1 <= total <= 99

        assert row["answer"] == str(total)
        assert re.findall(r"\\boxed\{(\d+)\}", final) == [row["answer"]]


def test_terse_references_are_the_same_arithmetic_outside_the_think_format():
    think, terse = (demo_dataset("train", 200, seed=4, reference_style=style) for style in ("think", "terse"))
    tokenizer = demo_tokenizer()
    for a, b in zip(think, terse, strict=True):
        assert (a["prompt"], a["answer"]) == (b["prompt"], b["answer"])
        start, amounts = solve_question(a["prompt"][0]["content"])
        steps, item, answer = re.fullmatch(r"(.*) (\w+)\.\nThe answer is (\d+)\.", b["reference"]).groups()
        total = start
        for step, amount in zip(steps.split(", "), amounts, strict=True):
            left, op, right, result = re.fullmatch(r"(\d+)([+-])(\d+)=(\d+)", step).groups()
            assert int(left) == total and (1 if op == "+" else -1) * int(right) == amount
            total += amount
            assert int(result) == total
        assert answer == a["answer"] == str(total) and item in a["prompt"][0]["content"]
        assert "<think>" not in b["reference"] and "\\boxed" not in b["reference"]
        assert verify(b["reference"], b["answer"]) is True
        # Within the demo's 64-token generation budget, as a chosen sequence must be.
        assert len(tokenizer(b["reference"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]) <= 64


def test_bad_reference_style_names_the_value_and_the_choices():
    with pytest.raises(ValueError, match=r"reference_style='gsm8k'.*\('think', 'terse'\)"):
        demo_dataset("train", 1, reference_style="gsm8k")


def test_splits_never_share_a_problem():
    def arithmetic(split, num_rows, seed):
        return {
            (start, tuple(amounts))
            for start, amounts in (
                solve_question(row["prompt"][0]["content"]) for row in demo_dataset(split, num_rows, seed)
            )
        }

    train = arithmetic("train", 3000, seed=0) | arithmetic("train", 3000, seed=1)
    test = arithmetic("test", 500, seed=0) | arithmetic("test", 500, seed=1)
    assert len(train) > 5000 and len(test) > 900
    assert not train & test


def test_held_out_share_of_all_problems():
    rng = random.Random(0)
    problems = [sample_problem(rng) for _ in range(5000)]
    assert 0.18 < sum(problem.split == "test" for problem in problems) / len(problems) < 0.22


def test_generation_is_deterministic_by_seed():
    assert demo_dataset("train", 50, seed=1).to_list() == demo_dataset("train", 50, seed=1).to_list()
    assert demo_dataset("train", 50, seed=1)["prompt"] != demo_dataset("train", 50, seed=2)["prompt"]
    # A longer draw extends a shorter one: growing the dataset keeps its first rows.
    assert demo_dataset("test", 80, seed=1).to_list()[:30] == demo_dataset("test", 30, seed=1).to_list()
    assert len({(p.start, p.amounts) for p in generate_problems("train", 500)}) == 500


GROUPS = re.compile(r"^(\w+) has (\d) bags of (\d) (\w+)\. ")


@pytest.mark.parametrize("style", ["think", "terse"])
def test_groups_references_start_with_the_product(style):
    # The held-out task: the start is count x size, worked out as the first step, then the additions task's steps.
    tokenizer = demo_tokenizer()
    for row in demo_dataset("train", 300, seed=2, reference_style=style, task="groups"):
        question = row["prompt"][0]["content"]
        count, size = (int(n) for n in GROUPS.match(question).group(2, 3))
        amounts = [int(n) if verb in GAIN else -int(n) for verb, n, _ in ACTION.findall(question)]
        assert 2 <= count <= 9 and 2 <= size <= 9 and len(amounts) in (1, 2)
        if style == "think":
            steps = re.fullmatch(
                r"<think>\n(.*)\n</think>\n\n\w+ has \\boxed\{\d+\} \w+ now\.", row["reference"], re.DOTALL
            )
            lines = steps.group(1).split("\n")
            product = re.fullmatch(r"(\d) \* (\d) = (\d+)", lines[0]).groups()
            sums = [STEP.match(line).groups() for line in lines[1:]]
        else:
            steps = re.fullmatch(r"(.*) \w+\.\nThe answer is \d+\.", row["reference"]).group(1).split(", ")
            product = re.fullmatch(r"(\d)\*(\d)=(\d+)", steps[0]).groups()
            sums = [re.fullmatch(r"(\d+)([+-])(\d+)=(\d+)", step).groups() for step in steps[1:]]
        assert [int(n) for n in product] == [count, size, count * size]
        total = count * size
        for (left, op, right, result), amount in zip(sums, amounts, strict=True):
            assert int(left) == total and (1 if op == "+" else -1) * int(right) == amount
            total += amount
            assert int(result) == total and 1 <= total <= 99
        assert row["answer"] == str(total) and verify(row["reference"], row["answer"]) is True
        assert len(tokenizer(row["reference"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]) <= 64


def test_groups_is_its_own_task_with_its_own_split():
    def arithmetic(split, seed):
        rows = demo_dataset(split, 2000 if split == "train" else 400, seed, task="groups")
        return {
            (GROUPS.match(q).group(2, 3), tuple(ACTION.findall(q))) for q in (r["prompt"][0]["content"] for r in rows)
        }

    train, test = arithmetic("train", 0) | arithmetic("train", 1), arithmetic("test", 0)
    assert len(train) > 3000 and len(test) == 400 and not train & test
    problems = generate_problems("test", 400, task="groups")
    assert all(p.split == "test" and p.groups[0] * p.groups[1] == p.start for p in problems)
    with pytest.raises(ValueError, match=r"task='gsm8k'.*\('additions', 'groups'\)"):
        demo_dataset("train", 1, task="gsm8k")


def test_bad_split_names_the_value_and_the_choices():
    with pytest.raises(ValueError, match=r"split='dev'.*\('train', 'test'\)"):
        demo_dataset("dev", 3)


def test_demo_tokenizer_round_trip_on_task_text():
    tokenizer = demo_tokenizer()
    for row in demo_dataset("train", 200):
        text = (
            tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
            + row["reference"]
            + tokenizer.eos_token
        )
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    assert tokenizer.tokenize("Tom has 23 coins. He gives away 5.") == [
        "Tom", " ", "has", " ", "2", "3", " ", "coins", ".", " ", "He", " ", "gives away", " ", "5", ".",
    ]  # fmt: skip
    assert tokenizer.tokenize("<think>\n\\boxed{40}</think>") == [
        "<think>",
        "\n",
        "\\boxed{",
        "4",
        "0",
        "}",
        "</think>",
    ]


def test_demo_tokenizer_extends_the_character_tokenizer():
    # Same ids for every character and special token, so models and callers of `build_char_tokenizer()` agree.
    base = build_char_tokenizer()
    tokenizer = demo_tokenizer()
    assert base.get_vocab().items() <= tokenizer.get_vocab().items()
    assert len(tokenizer) == len(base) + len(TASK_WORDS)
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.chat_template) == (
        "<|im_end|>",
        "<|endoftext|>",
        base.chat_template,
    )


def test_completions_fit_the_demo_generation_budget():
    tokenizer = demo_tokenizer()
    lengths = [
        len(tokenizer(row["reference"] + tokenizer.eos_token)["input_ids"]) for row in demo_dataset("train", 2000)
    ]
    assert max(lengths) <= 64


def test_sft_sequence_is_the_generation_prompt_then_the_reference_as_generated():
    tokenizer = demo_tokenizer()
    rows = demo_dataset("train", 20)
    for row, example in zip(rows, sft_dataset(rows, tokenizer)):
        ids, mask = example["input_ids"], example["completion_mask"]
        start = mask.index(1)
        assert mask == [0] * start + [1] * (len(ids) - start)
        question = row["prompt"][0]["content"]
        assert tokenizer.decode(ids[:start]) == f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
        assert tokenizer.decode(ids[start:]) == row["reference"] + "<|im_end|>"
        # The chat template renders the reference as an assistant turn in the same way (the chosen side of VtD's
        # DPO pairs), up to the newline it writes after `<|im_end|>`.
        conversation = row["prompt"] + [{"role": "assistant", "content": row["reference"]}]
        assert tokenizer.apply_chat_template(conversation, tokenize=False) == tokenizer.decode(ids) + "\n"


def test_pretrain_stops_at_stop_step_and_saves_a_loadable_model(tmp_path, monkeypatch):
    spec = DemoModelSpec(
        hidden_size=16,
        num_hidden_layers=1,
        intermediate_size=32,
        max_steps=10,
        learning_rate=1e-3,
        stop_step=3,
        batch_size=4,
    )
    monkeypatch.setitem(pretrain.SPECS["additions"], "student", spec)
    monkeypatch.setattr(pretrain, "NUM_TRAIN_ROWS", 40)
    monkeypatch.setattr(pretrain, "NUM_EVAL_ROWS", 2)
    summary = pretrain.pretrain("student", tmp_path)
    assert (summary["steps_trained"], summary["max_steps"]) == (3, 10)
    vocab = len(demo_tokenizer())
    # embeddings + LM head, then per layer q/o (16x16), k/v (16x8), q/k norms (head dim 4), MLP (3 x 16x32), 2 norms
    expected = 2 * vocab * 16 + (2 * 256 + 2 * 128 + 2 * 4 + 3 * 512 + 2 * 16) + 16
    assert summary["num_parameters"] == expected
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "student").num_parameters() == expected
    assert AutoTokenizer.from_pretrained(tmp_path / "student").get_vocab() == demo_tokenizer().get_vocab()


def test_eval_result_counts_unverifiable_rows_as_wrong():
    result = EvalResult(completions=["a", "b", "c", "d"], verdicts=[True, None, False, True])
    assert result.accuracy == 0.5


def test_evaluate_names_a_missing_column():
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": "1+1?"}], "gold": "2"}])
    with pytest.raises(ValueError, match=r"no column 'answer'.*\['prompt', 'gold'\]"):
        evaluate(None, None, dataset)


def test_demo_model_path_rejects_an_unknown_role():
    with pytest.raises(ValueError, match=r"role='grader'.*\('student', 'teacher', 'teacher_imperfect'\)"):
        demo_model_path("grader")
    with pytest.raises(ValueError, match=r"task='gsm8k'.*\('additions', 'groups'\)"):
        demo_model_path("student", task="gsm8k")


def test_resolve_model_maps_demo_names_to_the_shipped_models():
    assert resolve_model("vtd-demo/student") == demo_model_path("student")
    assert resolve_model("vtd-demo/teacher_imperfect") == demo_model_path("teacher_imperfect")
    assert resolve_model("Qwen/Qwen3-1.7B") == "Qwen/Qwen3-1.7B" and resolve_model("vtd-demo") == "vtd-demo"
    model = torch.nn.Linear(1, 1)
    assert resolve_model(model) is model and resolve_model(None) is None  # an instance or nothing passes through
    with pytest.raises(ValueError, match="role='grader'"):
        resolve_model("vtd-demo/grader")


@pytest.fixture(scope="module")
def shipped():
    tokenizer = AutoTokenizer.from_pretrained(demo_model_path("student"))
    models = {role: AutoModelForCausalLM.from_pretrained(demo_model_path(role)) for role in ("student", "teacher")}
    return tokenizer, models


def test_shipped_models_load_with_the_demo_tokenizer(shipped):
    tokenizer, models = shipped
    expected = demo_tokenizer()
    for role, model in models.items():
        assert AutoTokenizer.from_pretrained(demo_model_path(role)).get_vocab() == expected.get_vocab()
        assert model.config.model_type == "qwen3"
        assert model.config.vocab_size == len(expected)
        assert model.config.eos_token_id == expected.eos_token_id
    assert tokenizer.chat_template == expected.chat_template
    assert models["student"].num_parameters() < models["teacher"].num_parameters()


def test_teacher_beats_student_on_held_out_problems(shipped):
    tokenizer, models = shipped
    rows = demo_dataset("test", 32)
    teacher, student = (evaluate(models[role], tokenizer, rows, batch_size=32) for role in ("teacher", "student"))
    # Measured on these 32 problems: teacher 32/32, student 17/32 (200 problems: 99.5% and 43%).
    assert teacher.accuracy >= 30 / 32
    assert 8 / 32 <= student.accuracy <= 22 / 32
    # Both write the reference's shape; the student's mistakes are in the arithmetic, which is what VtD can teach.
    shape = re.compile(r"<think>\n(\d+ [+-] \d+ = \d+\n){2,3}</think>\n\n\w+ has \\boxed\{\d+\} \w+ now\.")
    assert all(shape.fullmatch(completion) for completion in teacher.completions + student.completions)


def test_imperfect_teacher_as_shipped():
    # Measured on the 200 held-out problems: 61.5% (the strong teacher: 99.5%, the student: 43%).
    tokenizer = AutoTokenizer.from_pretrained(demo_model_path("teacher_imperfect"))
    model = AutoModelForCausalLM.from_pretrained(demo_model_path("teacher_imperfect"))
    assert tokenizer.get_vocab() == demo_tokenizer().get_vocab()
    spec = pretrain.SPECS["additions"]["teacher_imperfect"]
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (spec.hidden_size, spec.num_hidden_layers)
    assert 0.60 <= evaluate(model, tokenizer, demo_dataset("test", 200)).accuracy <= 0.70


def test_groups_models_as_shipped():
    # Measured on the 200 held-out `groups` problems: student 43.0%, teacher 99.5%, imperfect teacher 68.0%.
    rows = demo_dataset("test", 200, task="groups")
    tokenizer = AutoTokenizer.from_pretrained(demo_model_path("student", "groups"))
    assert tokenizer.get_vocab() == demo_tokenizer().get_vocab()
    accuracy = {}
    for role in DEMO_ROLES:
        model = AutoModelForCausalLM.from_pretrained(demo_model_path(role, "groups"))
        spec = pretrain.SPECS["groups"][role]
        assert (model.config.hidden_size, model.config.num_hidden_layers) == (spec.hidden_size, spec.num_hidden_layers)
        accuracy[role] = evaluate(model, tokenizer, rows).accuracy
    assert accuracy["teacher"] >= 0.97
    assert 0.60 <= accuracy["teacher_imperfect"] <= 0.70
    assert 0.38 <= accuracy["student"] <= 0.48


def test_batched_greedy_completions_equal_one_by_one(shipped):
    # Left padding and the attention mask must not change what a prompt generates.
    tokenizer, models = shipped
    prompts = demo_dataset("test", 8)["prompt"]
    batched = greedy_completions(models["student"], tokenizer, prompts, batch_size=8)
    assert batched == greedy_completions(models["student"], tokenizer, prompts, batch_size=1)
