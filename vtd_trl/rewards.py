"""Reward functions with GRPO's signature, built on [`vtd_trl.verify`]."""

import functools
from collections.abc import Callable

from .verify import DEFAULT_TIMEOUT, extract_answer, extract_boxed, verify_batch


def completion_text(completion: str | list[dict]) -> str:
    """
    Returns the text of a completion as GRPO passes it to reward functions.

    Plain-text prompts give strings; conversational prompts give a list of messages, whose assistant contents are
    joined (a content may itself be a list of `{"type": "text", "text": ...}` parts).
    """
    if isinstance(completion, str):
        return completion
    if not isinstance(completion, list):
        raise TypeError(
            f"A completion must be a string or a list of messages, got {type(completion).__name__}: {completion!r}."
        )
    texts = []
    for message in completion:
        if isinstance(message, str):
            texts.append(message)
            continue
        if message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content") or ""
        if isinstance(content, list):
            content = "".join(
                part if isinstance(part, str) else part.get("text", "")
                for part in content
                if isinstance(part, str) or part.get("type", "text") == "text"
            )
        texts.append(content)
    return "".join(texts)


def correctness_reward(
    completions: list,
    answer: list | None = None,
    *,
    answer_column: str = "answer",
    timeout: float = DEFAULT_TIMEOUT,
    log_extra: Callable[[str, list], None] | None = None,
    **kwargs,
) -> list[float | None]:
    r"""
    Reward of 1.0 when the completion's final answer is equivalent to the gold answer, 0.0 when it is not, and `None`
    when the gold answer cannot be parsed (GRPO turns `None` into NaN and leaves the completion out).

    Answers are compared with [`~vtd_trl.verify.verify_batch`]: exact arithmetic for plain numbers, math-verify with a
    hard deadline for everything else. Use [`make_correctness_reward`] to read the gold answers from a column other
    than `answer`.

    Args:
        completions (`list[str]` or `list[list[dict]]`):
            Completions, as strings (plain prompts) or lists of messages (conversational prompts).
        answer (`list`):
            Gold answers, one per completion (the dataset's `answer` column, repeated by GRPO for each generation).
        answer_column (`str`, *optional*, defaults to `"answer"`):
            Dataset column holding the gold answers; read from `kwargs` when it is not `"answer"`.
        timeout (`float`, *optional*, defaults to `2.0`):
            Seconds a symbolic comparison may take before the answer counts as incorrect.
        log_extra (`Callable`, *optional*):
            Provided by the trainer: the extracted answers are logged to the completions table.
        **kwargs:
            Other dataset columns and trainer arguments (`prompts`, `completion_ids`, ...); unused.

    Returns:
        `list[float | None]`: One reward per completion.

    Example:
    ```python
    >>> correctness_reward([r"\boxed{72}", [{"role": "assistant", "content": "#### 71"}]], answer=["72", "72"])
    [1.0, 0.0]
    ```
    """
    golds = answer if answer_column == "answer" else kwargs.get(answer_column)
    if golds is None:
        trainer_arguments = ("prompts", "completion_ids", "trainer_state", "log_metric")
        columns = sorted(
            [key for key in kwargs if key not in trainer_arguments] + (["answer"] if answer is not None else [])
        )
        raise ValueError(
            f"correctness_reward reads the gold answers from the dataset column {answer_column!r}, which is missing "
            f"(columns: {columns}). Add the column, or point the reward at yours with "
            f"make_correctness_reward(answer_column=...) (VtDConfig.vtd_answer_column does this for VtDTrainer)."
        )
    texts = [completion_text(completion) for completion in completions]
    verdicts = verify_batch(texts, list(golds), timeout=timeout)
    if log_extra is not None:
        log_extra("extracted_answer", [extract_answer(text) or "" for text in texts])
    return [None if verdict is None else float(verdict) for verdict in verdicts]


def make_correctness_reward(
    answer_column: str = "answer", timeout: float = DEFAULT_TIMEOUT
) -> Callable[..., list[float | None]]:
    """
    Returns [`correctness_reward`] reading the gold answers from `answer_column`.

    The result is a `functools.partial` (picklable, like a module-level function) whose `__name__` stays
    `"correctness_reward"`, so logged reward names do not depend on the column name.

    Example:
    ```python
    >>> reward = make_correctness_reward("final_answer")
    >>> reward(completions=[r"\\boxed{3}"], final_answer=["3"])
    [1.0]
    ```
    """
    reward = functools.partial(correctness_reward, answer_column=answer_column, timeout=timeout)
    return functools.update_wrapper(reward, correctness_reward)


def think_boxed_format_reward(completions: list, **kwargs) -> list[float]:
    r"""
    Reward of 1.0 for a completion shaped `<think>...</think>` then a well-formed `\boxed{...}` answer, else 0.0.

    The opening `<think>` may be missing: chat templates that open the think block in the prompt leave only the closing
    tag to the model. A completion with more than one `</think>`, a `<think>` anywhere but at the start, or no box with
    content after the think block gets 0.0.

    Example:
    ```python
    >>> think_boxed_format_reward(["<think>6*7</think>It is \\boxed{42}.", "<think>6*7</think>It is 42."])
    [1.0, 0.0]
    ```
    """
    rewards = []
    for completion in completions:
        text = completion_text(completion).lstrip()
        if text.startswith("<think>"):
            text = text[len("<think>") :]
        reasoning, closed, answer_part = text.partition("</think>")
        well_formed = closed and "<think>" not in reasoning and "think>" not in answer_part
        boxed = extract_boxed(answer_part) if well_formed else None
        rewards.append(1.0 if boxed and boxed.strip() else 0.0)
    return rewards
