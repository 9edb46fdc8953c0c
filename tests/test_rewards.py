import pickle

import pytest

from vtd_trl.rewards import completion_text, correctness_reward, make_correctness_reward, think_boxed_format_reward


def test_correctness_reward_plain_completions():
    completions = [r"so \boxed{72}", "#### 71", r"\boxed{\frac{1}{2}}", "no answer", r"\boxed{5}"]
    answers = ["72", "72", "0.5", "3", ""]
    assert correctness_reward(completions=completions, answer=answers) == [1.0, 0.0, 1.0, 0.0, None]


def test_correctness_reward_conversational_completions():
    completions = [
        [{"role": "assistant", "content": r"<think>6*7</think>\boxed{42}"}],
        [{"role": "assistant", "content": [{"type": "text", "text": r"\boxed{4"}, {"type": "text", "text": "1}"}]}],
        [{"role": "assistant", "content": r"\boxed{41}"}],
        [{"role": "tool", "content": r"\boxed{42}"}, {"role": "assistant", "content": "I give up"}],
        [{"role": "assistant", "content": [r"\boxed{4", "2}"]}],  # content parts as plain strings
        [r"\boxed{42}"],  # a message given as a string
    ]
    assert correctness_reward(completions, answer=["42"] * 6) == [1.0, 0.0, 0.0, 0.0, 1.0, 1.0]


def test_correctness_reward_with_grpo_call_signature():
    # GRPOTrainer passes prompts, completion_ids, every dataset column and its logging hooks as keywords.
    logged = {}
    rewards = correctness_reward(
        prompts=["What is 6*7?", "What is 6*7?"],
        completions=[r"\boxed{42}", r"\boxed{\text{forty-one}}"],  # numbers in words are numbers
        completion_ids=[[1, 2], [3, 4]],
        answer=[42, 42],
        reference=["6*7 = \\boxed{42}", "6*7 = \\boxed{42}"],
        trainer_state=None,
        log_extra=lambda column, values: logged.__setitem__(column, values),
        log_metric=lambda name, value: None,
    )
    assert rewards == [1.0, 0.0]
    assert logged == {"extracted_answer": ["42", r"\text{forty-one}"]}


def test_make_correctness_reward_reads_another_column():
    reward = make_correctness_reward("final")
    assert reward.__name__ == "correctness_reward"
    assert reward(completions=[r"\boxed{3}", r"\boxed{3}"], final=["3", "4"], answer=["4", "3"]) == [1.0, 0.0]
    restored = pickle.loads(pickle.dumps(reward))
    assert restored.__name__ == "correctness_reward"
    assert restored(completions=[r"\boxed{3}"], final=["3"]) == [1.0]


def test_correctness_reward_missing_column_names_it():
    with pytest.raises(ValueError, match=r"'final', which is missing \(columns: \['answer', 'reference'\]\)"):
        make_correctness_reward("final")(completions=["1"], answer=["1"], reference=["r"], prompts=["p"])
    with pytest.raises(ValueError, match="'answer', which is missing"):
        correctness_reward(completions=["1"], solution=["1"])


def test_completion_text_rejects_other_types():
    with pytest.raises(TypeError, match="got dict"):
        completion_text({"content": "1"})


@pytest.mark.parametrize(
    "completion, expected",
    [
        (r"<think>6*7=42</think>The answer is \boxed{42}.", 1.0),
        (r"6*7=42</think>The answer is \boxed{42}.", 1.0),  # the template opened the think block
        (r"  <think>a</think>\boxed{\frac{1}{2}}", 1.0),
        ([{"role": "assistant", "content": r"<think>a</think>\boxed{1}"}], 1.0),
        (r"<think>6*7=42</think>The answer is 42.", 0.0),
        (r"<think>6*7=42 \boxed{42}", 0.0),
        (r"\boxed{42}", 0.0),
        (r"<think>a</think>\boxed{}", 0.0),
        (r"<think>a</think>\boxed{42", 0.0),
        (r"<think>a</think><think>b</think>\boxed{42}", 0.0),
        (r"<think>a<think>b</think>\boxed{42}", 0.0),
        (r"<think>a</think>\boxed{42}</think>", 0.0),
        (r"<think>\boxed{42}</think>done", 0.0),
    ],
)
def test_think_boxed_format_reward(completion, expected):
    assert think_boxed_format_reward([completion]) == [expected]
