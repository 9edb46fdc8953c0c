"""Reward functions with GRPO's signature, built on `vtd_trl.verify`."""

from collections.abc import Callable

from .verify import verify


def _completion_text(completion: str | list[dict]) -> str:
    # Conversational prompts give completions as a list of messages; the answer is in the assistant's content.
    if isinstance(completion, str):
        return completion
    return "".join(message["content"] for message in completion if message.get("role", "assistant") == "assistant")


def make_correctness_reward(answer_column: str = "answer") -> Callable[..., list[float | None]]:
    """Builds a correctness reward that reads the gold answers from `answer_column`."""

    def correctness_reward(completions: list, **kwargs) -> list[float | None]:
        if answer_column not in kwargs:
            raise KeyError(
                f"correctness_reward needs the dataset column {answer_column!r} with the gold answers; "
                f"got columns {sorted(kwargs)}. Rename the column or set `vtd_answer_column`."
            )
        golds = kwargs[answer_column]
        rewards = []
        for completion, gold in zip(completions, golds, strict=True):
            verdict = verify(_completion_text(completion), str(gold))
            rewards.append(None if verdict is None else float(verdict))
        return rewards

    return correctness_reward


correctness_reward = make_correctness_reward()
