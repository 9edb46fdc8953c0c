"""A toy reasoning task generated in code: multi-step arithmetic word problems with worked solutions.

Each problem is a start count followed by two or three additions and subtractions, told as a short story:

    Mia has 23 apples. She buys 15 more, then sells 9. How many apples does Mia have now?

and its reference solution is what a Qwen3 model in thinking mode would generate after the generation prompt,
one line of arithmetic per step inside `<think>`, then the answer in `\\boxed{}`:

    <think>
    23 + 15 = 38
    38 - 9 = 29
    </think>

    Mia has \\boxed{29} apples now.

A second task of the same shape, `groups`, starts from a product instead of a count ("Tom has 4 bags of 7 coins.
He loses 5, then gets 12 more. ..."; solution `4 * 7 = 28`, `28 - 5 = 23`, `23 + 12 = 35`): a held-out task on which
options tuned on `additions`, the demo's task, are checked without tuning them again.

A problem's identity is its arithmetic (start, operations, amounts), not its wording: the split is a stable hash
of that arithmetic, so train and held-out never share a problem, whatever the names, items, sizes or seed.
"""

import hashlib
import random
from dataclasses import dataclass

from datasets import Dataset

SPLITS = ("train", "test")
REFERENCE_STYLES = ("think", "terse")
TASKS = ("additions", "groups")  # the demo's task, and the held-out one
HELD_OUT_PERCENT = 20  # share of all problems reserved for the held-out split

NAMES = {"Mia": "She", "Ana": "She", "Ivy": "She", "Zoe": "She", "Tom": "He", "Leo": "He", "Sam": "He", "Ben": "He"}
ITEMS = ["apples", "coins", "books", "stamps", "shells", "cards", "pens", "eggs"]
ADD_VERBS = ["buys", "finds", "gets"]
SUB_VERBS = ["sells", "loses", "gives away"]

# Whole-word tokens for the demo tokenizer: every fixed word of the task, so that only numbers are spelled out
# character by character (the arithmetic is what the models must learn, digit by digit).
TASK_WORDS = [
    *NAMES,
    *dict.fromkeys(NAMES.values()),  # each pronoun once
    *ITEMS,
    *ADD_VERBS,
    *SUB_VERBS,
    "has",
    "have",
    "more",
    "then",
    "How",
    "many",
    "does",
    "now",
    "\\boxed{",
]

MIN_VALUE, MAX_VALUE = 1, 99  # every running total stays a positive number of at most two digits
MIN_START, MAX_START = 10, 60
MIN_AMOUNT, MAX_AMOUNT = 2, 39
MIN_FACTOR, MAX_FACTOR = 2, 9  # `groups`: the start is count x size, each in this range


@dataclass(frozen=True)
class Problem:
    """One word problem: `start` items, then signed `amounts` applied in order (positive = gained).

    With `groups` (`count`, `size`), the start is `count` groups of `size` items, and working it out is the first
    step of the solution.
    """

    start: int
    amounts: tuple[int, ...]
    name: str
    item: str
    verbs: tuple[str, ...]
    groups: tuple[int, int] | None = None

    @property
    def key(self) -> tuple:
        """The problem's arithmetic, its identity."""
        return (self.start, self.amounts) if self.groups is None else (self.groups, self.amounts)

    @property
    def totals(self) -> list[int]:
        """The running total after each step."""
        totals, total = [], self.start
        for amount in self.amounts:
            total += amount
            totals.append(total)
        return totals

    @property
    def answer(self) -> int:
        return self.totals[-1]

    @property
    def split(self) -> str:
        """`"test"` for a fixed `HELD_OUT_PERCENT` of all arithmetic, `"train"` for the rest."""
        # A cryptographic hash rather than `hash()`: Python salts `hash()` of strings per process.
        digest = hashlib.sha256(repr(self.key).encode()).digest()
        return "test" if int.from_bytes(digest[:8], "big") % 100 < HELD_OUT_PERCENT else "train"

    def question(self) -> str:
        actions = ", then ".join(
            f"{verb} {abs(amount)}{' more' if amount > 0 else ''}" for verb, amount in zip(self.verbs, self.amounts)
        )
        start = (
            f"{self.start} {self.item}"
            if self.groups is None
            else f"{self.groups[0]} bags of {self.groups[1]} {self.item}"
        )
        return (
            f"{self.name} has {start}. {NAMES[self.name]} {actions}. How many {self.item} does {self.name} have now?"
        )

    def _steps(self, spaced: bool) -> list[str]:
        """The solution's equations, `23 + 5 = 28` (or `23+5=28` unspaced), the product first for `groups`."""
        space = " " if spaced else ""
        steps = (
            []
            if self.groups is None
            else [f"{self.groups[0]}{space}*{space}{self.groups[1]}{space}={space}{self.start}"]
        )
        total = self.start
        for amount, new_total in zip(self.amounts, self.totals):
            sign = "+" if amount > 0 else "-"
            steps.append(f"{total}{space}{sign}{space}{abs(amount)}{space}={space}{new_total}")
            total = new_total
        return steps

    def reference(self) -> str:
        steps = "\n".join(self._steps(spaced=True))
        return f"<think>\n{steps}\n</think>\n\n{self.name} has \\boxed{{{self.answer}}} {self.item} now."

    def terse_reference(self) -> str:
        """The solution as people write it in datasets such as GSM8K: the steps on one line, no think block.

        23+5=28, 28+19=47, 47-18=29 coins.
        The answer is 29.
        """
        return f"{', '.join(self._steps(spaced=False))} {self.item}.\nThe answer is {self.answer}."

    def row(self, reference_style: str = "think") -> dict:
        """The problem in VtD's columns: conversational `prompt`, gold `answer` and `reference` solution.

        `reference_style` is `"think"` (the shape of the student's own thinking-mode completions) or `"terse"` (the
        shape of human-written dataset solutions, outside the think format).
        """
        reference = self.reference() if reference_style == "think" else self.terse_reference()
        return {
            "prompt": [{"role": "user", "content": self.question()}],
            "answer": str(self.answer),
            "reference": reference,
        }


def sample_problem(rng: random.Random, task: str = "additions") -> Problem:
    """Draws one problem of `task` with two or three steps whose running totals all stay in [1, 99] (`groups`: a
    product, then one or two additions and subtractions)."""
    while True:
        if task == "groups":
            groups = (rng.randint(MIN_FACTOR, MAX_FACTOR), rng.randint(MIN_FACTOR, MAX_FACTOR))
            start, num_amounts = groups[0] * groups[1], rng.choice((1, 2))
        else:
            groups, start = None, rng.randint(MIN_START, MAX_START)
            num_amounts = rng.choice((2, 3))
        amounts = tuple(rng.choice((1, -1)) * rng.randint(MIN_AMOUNT, MAX_AMOUNT) for _ in range(num_amounts))
        problem = Problem(
            start=start,
            amounts=amounts,
            name=rng.choice(list(NAMES)),
            item=rng.choice(ITEMS),
            verbs=tuple(rng.choice(ADD_VERBS if amount > 0 else SUB_VERBS) for amount in amounts),
            groups=groups,
        )
        if all(MIN_VALUE <= total <= MAX_VALUE for total in problem.totals):
            return problem


def generate_problems(split: str, num_rows: int, seed: int = 0, task: str = "additions") -> list[Problem]:
    """`num_rows` distinct problems of `split`, the same for the same arguments.

    Args:
        split: `"train"` or `"test"` (held-out).
        num_rows: how many problems.
        seed: seed of the draw; different seeds give different (possibly overlapping) problems of the same split.
        task: `"additions"` (the demo's task) or `"groups"` (the held-out task).
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not a split of the demo task; use one of {SPLITS}.")
    if num_rows < 0:
        raise ValueError(f"num_rows={num_rows} must be >= 0.")
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not a demo task; use one of {TASKS}.")
    rng = random.Random(f"vtd-demo-task-{seed}" if task == "additions" else f"vtd-demo-{task}-{seed}")
    problems, seen = [], set()
    while len(problems) < num_rows:
        problem = sample_problem(rng, task)
        if problem.split == split and problem.key not in seen:
            seen.add(problem.key)
            problems.append(problem)
    return problems


def demo_dataset(
    split: str, num_rows: int, seed: int = 0, reference_style: str = "think", task: str = "additions"
) -> Dataset:
    """The demo task as a `datasets.Dataset` with columns `prompt`, `answer` and `reference`.

    Args:
        split: `"train"` or `"test"` (held-out); the two never share a problem.
        num_rows: number of rows.
        seed: seed of the draw.
        reference_style: `"think"` (references in the student's thinking-mode format) or `"terse"` (one line of
            steps and "The answer is N.", as human-written datasets have them).
        task: `"additions"` (the demo's task) or `"groups"` (the held-out task: a product first).

    Example:

    ```python
    >>> from vtd_trl.demo.task import demo_dataset
    >>> demo_dataset("test", 2)[0]["answer"]
    ```
    """
    if reference_style not in REFERENCE_STYLES:
        raise ValueError(
            f"reference_style={reference_style!r} is not a demo reference style; use one of {REFERENCE_STYLES}."
        )
    problems = generate_problems(split, num_rows, seed, task)
    return Dataset.from_list([problem.row(reference_style) for problem in problems])
