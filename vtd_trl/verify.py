"""Final-answer extraction and equivalence checking, bounded in time on any input.

`extract_answer` reads the final answer of a completion; `verify` decides whether it is equivalent to a gold answer.
Plain numbers (integers, decimals, fractions, with thousands separators, currency signs or unit words) are compared
exactly in this process, in microseconds. Everything else (LaTeX expressions, radicals, pi, sets, intervals, tuples,
equations, percentages) goes to math-verify in a worker subprocess that is killed when it passes its deadline: a
pathological answer costs at most `timeout` seconds whatever the thread or process that asks, where math-verify's
own signal-based timeouts work only in the main thread and cannot interrupt a long C-level integer operation.

Choices where careful graders could differ, each tested in tests/test_verify.py:

- Rounding is the gold's. A gold decimal whose digits (all of them, in a tuple or an expression) have four significant
  figures or more is a rounded value: a more precise answer within one unit of its last digit matches it (`3.14159`
  and `40\\pi` answer `3.1416` and `125.663`). Fewer significant figures, an answer no more precise than the gold
  (`2` for `2.0001`), or a rounded decimal for an exact gold (`125.663` for `40\\pi`) are compared exactly; a decimal
  against a fraction keeps math-verify's 6 decimals (`0.333333` answers `\\frac13`). In an equation whose one side is
  a number, and in each equation of a system (`\\begin{cases}` or `x=0.5, y=1.732`, paired in any order), that
  number is a gold of its own: `a-b=\\sqrt3` answers `a-b=1.732` and `a+b=\\frac12` answers `a+b=0.5` (exact),
  while `a-b=1.732` does not answer `a-b=\\sqrt3`.
- A list against a one-column or one-row matrix (any `matrix` environment, or an `array`) is that vector, either way
  round: `[0.5, 1]` and `(0.5, 1)` answer `\\begin{pmatrix} \\frac12 \\\\ 1 \\end{pmatrix}` when they have as many
  entries. Against anything else `[a, b]` is math-verify's closed interval and `(a, b)` its tuple or open interval:
  `(0.5, 1)` does not answer `[0.5, 1]`.
- A repeating decimal is its fraction when it says so: `0.1\\overline{6}`, `0.1666 repeating`, or an ellipsis after
  three of one digit (`0.333...`); the last repeated block repeats (`0.1666 repeating` is 1/6, `0.090909 repeating`
  1/11) and digits with no repeated tail repeat whole (`0.142857 repeating` is 1/7). `0.1666` alone is 0.1666.
- A digit, `e` and an integer (`3.54e-07`) is scientific notation, never Euler's number; `e-5` alone stays e - 5.
- `2\\frac{5}{8}` and `1 1/2` are mixed numbers; `C. x = 42` answers the choice `C`; `f(x) = 2x + 3` is `2x + 3`;
  `forty-two` is 42; a time with a.m./p.m. or zero seconds is a time of day, while `7:32` stays a ratio.
- Two expressions in the same variables that math-verify cannot prove equal are equal when they agree to 1e-9 at
  five random points; a variable `i` is the imaginary unit there.

This module imports only the standard library, so the worker can load it by path without importing the package.
"""

import atexit
import json
import math
import numbers
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from typing import NamedTuple

DEFAULT_TIMEOUT = 2.0
# Longer extracted answers are never checked symbolically: no gold answer is that long, and parsing one can be slow.
MAX_ANSWER_CHARS = 1000
# Time a fresh worker may take to import math-verify (sympy, antlr); paid once per process, not part of `timeout`.
WORKER_STARTUP_TIMEOUT = 120.0
# Address-space cap of a worker, so an answer like 10^{10^{10}} fails with MemoryError instead of swapping the node.
WORKER_MEMORY_BYTES = 4 * 1024**3

# ----------------------------------------------------------------------------------------------------------------------
# Extraction

_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"
# `\boxed{...}` / `\fbox{...}`, or the brace-less `\boxed 5` that some models write.
_BOX = re.compile(r"\\(?:boxed|fbox)\s*(?:(\{)|\s(?=[^\s{]))")
_BOX_BARE_ARGUMENT = re.compile(r"[^\s$]+")
_BOX_OPERAND = re.compile(r"\s*=(?!=)")
# An escaped character (`\{`, `\}`, `\\`) or a grouping brace.
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)
# GSM8K's final line; a markdown heading ("#### Step 1: ...") is not an answer.
_GSM8K_ANSWER = re.compile(r"####[ \t]*((?=\**[ \t]*[-+−$\\.0-9])[^\n]*)")
# "Final Answer: ...", "The final answer is ...", "**Final Answer:** ..." (the Minerva / lm-eval sentence among them).
_FINAL_ANSWER = re.compile(r"final answer[ \t]*\**[ \t]*(?:is|:)[ \t]*\**[ \t]*:?[ \t]*([^\n]*)", re.IGNORECASE)
# "The answer is ...", or "Answer: ..." / "**Answer:** ..." / "Answer is ..." opening a line.
_ANSWER = re.compile(
    r"(?:the answer[ \t]*\**[ \t]*(?:is|:)|(?:^|(?<=\n))[ \t>#]*\**[ \t]*answer[ \t]*\**[ \t]*(?::|is\b))"
    r"[ \t]*\**[ \t]*:?[ \t]*"
    r"([^\n]*)",
    re.IGNORECASE,
)
# The answer tags of R1-style prompts: `<think>...</think><answer>...</answer>`.
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<!\\)[.!?](?:\s|$)|(?<=\$),|\s+I hope\b")
_LAST_NUMBER = re.compile(
    r"(?:(?<![\w)])[-−])?(?<![A-Za-z_])"
    r"(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|(?P<spaced>[0-9]{1,3}(?:[ \u2009\u202f][0-9]{3})+)(?![0-9])|[0-9]+|(?=\.[0-9]))"
    r"(?:\.[0-9]+|(?P<decimal_comma>,[0-9]{1,2})(?![0-9]))?(?:/[0-9]+)?"
    r"|-?\\[dt]?frac\{-?[0-9]+\}\{[0-9]+\}"
)
# Math delimiters, read left to right in one pass (a regex per span would be quadratic on `\[` repeated a million
# times). Inline `$...$` and `\(...\)` end at a line break, as math-verify reads them; `$$...$$` and `\[...\]` may span
# lines. An escaped backslash or dollar (`\\`, `\$`) is no delimiter.
_MATH_DELIMITER = re.compile(r"\\\\|\\\$|\$\$|\$|\\\(|\\\)|\\\[|\\\]|\n")
_MATH_CLOSING = {"$$": "$$", "$": "$", "\\(": "\\)", "\\[": "\\]"}
# What may stand between the boxes of one answer: `\boxed{1}, \boxed{2}`, `\(\boxed{1}\) and \(\boxed{-2}\)`,
# `\boxed{a} \quad \text{and} \quad \boxed{b}`, `\boxed{2} or \boxed{3}`. Joined with "or", two forms of one answer
# (`\boxed{15\frac{39}{40}}, or \boxed{\frac{639}{40}}`, as MATH solutions write) are a set of one element, which
# math-verify equates with that element, while a hedge between two answers (`\boxed{5} or \boxed{6}`) is neither.
_BOX_JOINER = re.compile(
    r"(?:\s|\$|\\[()\[\]]|\\q?quad\b|\\[,;!]|~|[,;]|\b(?:and|or)\b|\\text\s*\{\s*(?:and|or|,)?\s*\})*"
)
_BOX_JOINER_WORD = re.compile(r"[,;]|\b(?:and|or)\b")
_QUOTED = re.compile(r'^(?:\\?"|“)(.*?)(?:\\?"|”)$', re.DOTALL)
_PROSE_START = re.compile(r"[A-Za-z]{2,}\b")
_IS = re.compile(r"\s(?:is|are|was|equals)\b:?\s*")
# Letters runs that a bare expression may hold: function names and constants written without a backslash.
_BARE_WORD = re.compile(r"[A-Za-z]{2,}")
_BARE_MATH_WORDS = {
    "sin", "cos", "tan", "sec", "csc", "cot", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "log", "ln", "exp",
    "sqrt", "pi", "gcd", "lcm", "max", "min", "mod", "det", "infty", "oo", "eq", "rational",
}  # fmt: skip
_MAX_BARE_CHARS = 300
_ENVIRONMENT = re.compile(r"\\(?:begin|end)\s*\{[A-Za-z*]+\}")
_NUMBER_AND_WORD = re.compile(r"(?P<number>" + _LAST_NUMBER.pattern + r")(?:\s+[A-Za-z]+)?")


def _matching_braces(text: str) -> dict[int, int]:
    # One pass over the braces only: scanning forward from every candidate box would be quadratic in the number of
    # boxes, and a completion can hold thousands of unclosed ones.
    closing, stack = {}, []
    for token in _BRACE_TOKEN.finditer(text):
        if token.group() == "{":
            stack.append(token.start())
        elif token.group() == "}" and stack:
            closing[stack.pop()] = token.start()
    return closing


def _boxes(text: str) -> list[tuple[int, int, str]]:
    # (start, end, content) of every well-formed box, in order.
    boxes = list(_BOX.finditer(text))
    closing = _matching_braces(text) if any(box.group(1) for box in boxes) else {}
    found = []
    for box in boxes:
        if box.group(1):
            open_brace = box.end() - 1
            if open_brace in closing:
                found.append((box.start(), closing[open_brace] + 1, text[open_brace + 1 : closing[open_brace]]))
        else:
            argument = _BOX_BARE_ARGUMENT.match(text, box.end())
            found.append((box.start(), argument.end(), argument.group()))
    return found


def _last_box_run(text: str) -> tuple[int, str] | None:
    # The last box and the boxes before it that form one answer with it (`\boxed{1}, \boxed{2}`), joined by ", ".
    # A box followed by `=` is an operator of the problem's own notation (MATH defines functions written `\boxed{n}`:
    # `$\boxed{12}=6$`), not a stated answer.
    boxes = [box for box in _boxes(text) if not _BOX_OPERAND.match(text, box[1])]
    if not boxes:
        return None
    run = [boxes[-1]]  # from the last box backwards
    for box in reversed(boxes[:-1]):
        if box[1] > run[-1][0]:
            break  # a box around the last one (`\boxed{\boxed{7}}`)
        gap = text[box[1] : run[-1][0]]
        if gap and not (_BOX_JOINER.fullmatch(gap) and _BOX_JOINER_WORD.search(gap)):
            break
        run.append(box)
    contents = [_strip_math_delimiters(content) for _, _, content in reversed(run)]
    return run[0][0], ", ".join(content for content in contents if content)


def extract_boxed(text: str) -> str | None:
    r"""
    Returns the content of the last well-formed `\boxed{...}` (or `\fbox{...}`, or brace-less `\boxed 5`) in `text`.

    Braces nest (`\boxed{\frac{1}{2}}` gives `\frac{1}{2}`) and escaped braces do not count (`\boxed{\{1,2\}}` gives
    `\{1,2\}`). A box that is never closed, as at the end of a cut-off completion, is passed over. Linear in the length
    of `text`, whatever the number of boxes.

    Args:
        text (`str`):
            Text to search.

    Returns:
        `str` or `None`: The content of the box, or `None` when there is no well-formed box.
    """
    boxes = _boxes(text)
    return boxes[-1][2] if boxes else None


def boxed_answer(text: str) -> str | None:
    r"""
    Returns the boxed answer of `text`: the content of its last box, with the boxes just before it that are joined to
    it by a comma, a semicolon, "and" or "or" (`\(\boxed{1}\) and \(\boxed{-2}\)` gives `1, -2`;
    `\boxed{5}, no wait, \boxed{6}` gives `6`).

    Returns:
        `str` or `None`: The answer, or `None` when `text` has no well-formed box.
    """
    run = _last_box_run(text)
    return None if run is None else run[1]


def _strip_math_delimiters(answer: str) -> str:
    answer = answer.strip()
    for opening, closing in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if answer.startswith(opening) and answer.endswith(closing) and len(answer) >= len(opening) + len(closing):
            return answer[len(opening) : len(answer) - len(closing)].strip()
    return answer


def _math_spans(text: str) -> list[tuple[int, int, str]]:
    # (start, end, content) of every math span with some content.
    spans, opening, content_start = [], None, 0
    for token in _MATH_DELIMITER.finditer(text):
        delimiter = token.group()
        if opening is None:
            if delimiter in _MATH_CLOSING:
                opening, span_start, content_start = delimiter, token.start(), token.end()
        elif delimiter == _MATH_CLOSING[opening]:
            if text[content_start : token.start()].strip():
                spans.append((span_start, token.end(), text[content_start : token.start()].strip()))
            opening = None
        elif delimiter == "\n" and opening in ("$", "\\("):
            opening = None
    return spans


def _unwrap(answer: str) -> str:
    # **bold** markdown and quotes around an answer: `**42**`, `"12 and 13"`.
    answer = answer.strip().strip("*").strip()
    return _QUOTED.sub(r"\1", answer).strip()


def _sentence_answer(text: str) -> str | None:
    # What follows an answer marker, up to the end of its sentence. A sentence in words ("The largest $n$ is 34",
    # "Jane started 3 hours ago") is read down to its answer: what follows its verb, else its last math, else its last
    # number (with the word after it, so that "1.5 million" keeps its value).
    answer = _unwrap(_SENTENCE_END.split(text, maxsplit=1)[0])
    for _ in range(3):
        if not _PROSE_START.match(answer):
            break
        verb = _IS.search(answer)
        if verb is None:
            spans = _math_spans(answer)
            if spans:
                return spans[-1][2]
            numbers = deque(_NUMBER_AND_WORD.finditer(answer), maxlen=1)
            if numbers:
                return _plain_number(numbers[0]) + answer[numbers[0].end("number") : numbers[0].end()]
            break
        answer = _unwrap(answer[verb.end() :])
    spans = _math_spans(answer)
    if spans and spans[0][0] == 0 and not re.search(r"[0-9$\\]", answer[spans[0][1] :]):
        return spans[0][2]  # `$6\sqrt{3}$ square units`: the math, without the words after it
    if len(answer.split()) > 3 and not re.search(r"[0-9$\\]", answer):
        return None  # a sentence in words without any math or number states no answer
    return _strip_math_delimiters(answer) or None


def extract_answer(text: str) -> str | None:
    r"""
    Extracts the final answer of a completion.

    The rules, in order (README, "Extraction rules", has the table and the reasons):

    1. A stated final answer, the last one in the text whatever its form: the last well-formed `\boxed{...}` (with
       the boxes joined to it by commas, "and" or "or", see [`boxed_answer`]), a GSM8K `#### ...` line, an
       `<answer>...</answer>` tag (its content read by rules 2 to 4), or a "final answer" sentence (`The final
       answer is $X$`, the Minerva `Final Answer: The final answer is $X$. I hope it is correct.`,
       `**Final Answer:** X`).
    2. Else the last "the answer is X" or line-opening `Answer: X` / `**Answer:** X` / `Answer is X`.
    3. Else a completion that is nothing but an expression (`3+2`, `x^2+2x+1`, `(2,4)`, `odd`, `10 cm^2`) is its
       own answer; prose is not (every word of two letters or more must be mathematics, `\sin` or `log`).
    4. Else the last math span (`$...$`, `\(...\)`, `\[...\]`) or the last number, whichever ends later.

    When the completion closes a think block, only the text after the last `</think>` counts. A completion that opens
    `<think>` and never closes it has no answer (`None`): it was cut off while reasoning (usually at
    `max_completion_length`), and a number inside unfinished reasoning is a draft, not a claim. Rewarding it would
    teach the student that truncated chains are as good as finished ones. A completion without any think tag
    (thinking disabled, or the chat template opened the block in the prompt and the model never closed it) is read
    whole.

    Args:
        text (`str`):
            Completion text.

    Returns:
        `str` or `None`: The answer as written (delimiters like `$...$` removed), or `None` when there is none.

    Example:
    ```python
    >>> extract_answer(r"<think>2+2=5?</think> So the total is \boxed{\frac{8}{2}}.")
    '\\frac{8}{2}'
    >>> extract_answer("Natalia sold 48/2 = 24 clips in May.\n#### 72")
    '72'
    >>> extract_answer("Final Answer: The final answer is $p - q$. I hope it is correct.")
    'p - q'
    ```
    """
    if _THINK_CLOSE in text:
        # What follows a reopened, never-closed think block is unfinished reasoning again, not an answer.
        text = text.rsplit(_THINK_CLOSE, 1)[1].split(_THINK_OPEN, 1)[0]
    elif _THINK_OPEN in text:
        return None
    stated = _stated_answer(text)
    return (stated or None) if stated is not None else _unstated_answer(text)


def _stated_answer(text: str) -> str | None:
    # Rule 1 of extract_answer: the last stated final answer, whatever its form ("" for an empty box), or None.
    stated = []  # (position, answer) of every stated final answer that may win
    box = _last_box_run(text)
    if box is not None:
        stated.append(box)
    # Only what starts after the last box can win over it; plain substring tests skip most scans.
    after = box[0] if box is not None else 0
    tail = text[after:]
    for match in _GSM8K_ANSWER.finditer(text, after) if "####" in tail else ():
        parts = _SENTENCE_END.split(match.group(1), maxsplit=1)
        # A `####` line with a sentence after its number ("#### 2. Compute the total") is a numbered heading.
        if len(parts) == 1 or not parts[1].strip():
            stated.append((match.start(), _strip_math_delimiters(parts[0].strip().strip("*").strip())))
    for match in _FINAL_ANSWER.finditer(text, after) if "answer" in tail.lower() else ():
        stated.append((match.start(), _sentence_answer(match.group(1))))
    for match in _ANSWER_TAG.finditer(text, after) if "</answer>" in tail else ():
        stated.append((match.start(), _unstated_answer(match.group(1).strip())))  # `<answer>x^2+1</answer>`
    # A sentence that names no answer is passed over; an empty last box (`\boxed{}`) is a stated answer of nothing.
    stated = [(position, answer) for position, answer in stated if answer is not None]
    return max(stated, key=lambda candidate: candidate[0])[1] if stated else None


def _answer_sentence(text: str) -> str | None:
    # The last "the answer is X" or line-opening "Answer: X" / "Answer is X" sentence (rule 2 of extract_answer).
    matches = _ANSWER.finditer(text) if "answer" in text.lower() else ()
    answers = [answer for answer in map(_sentence_answer, (match.group(1) for match in matches)) if answer]
    return answers[-1] if answers else None


def _unstated_answer(text: str) -> str | None:
    # Rules 2, 3 and 4 of extract_answer.
    answer = _answer_sentence(text)
    if answer:
        return answer
    bare = _bare_answer(text)
    if bare is not None:
        return bare
    spans = _math_spans(text)
    last_number = deque(_LAST_NUMBER.finditer(text), maxlen=1)
    if spans and (not last_number or spans[-1][1] >= last_number[0].end()):
        return spans[-1][2]
    return _plain_number(last_number[0]) if last_number else None


def _bare_answer(text: str) -> str | None:
    # A completion that is nothing but an expression (`3+2`, `x^2+2x+1`, `(2,4)`, `odd`) is its own answer, not its
    # last number. Prose is never bare: any word of two letters or more outside LaTeX commands and `\text{...}` must be
    # mathematics (`sin`, `log`, `and` inside `\text{ and }` ...); a single word alone (`odd`, `east`) is an answer.
    answer = text.strip()
    if not answer or len(answer) > _MAX_BARE_CHARS or "\n" in answer or "$" in answer:
        return None
    answer = answer[:-1].rstrip() if answer.endswith(".") and not answer.endswith("..") else answer
    number = _LAST_NUMBER.fullmatch(answer)
    if number and len(number.group("decimal_comma") or ",00") == 3:
        return _plain_number(number)  # `1 000` is 1000 and `2,74` is 2.74; but `0,1` alone is a list, not 0.1
    if _UNIT.fullmatch(answer) or _CHOICE_WITH_REASON.match(answer):
        return answer  # `10 cm^2`, `10 weeks`: a number with its unit; `C. x = 42`: a choice with its reason
    words = _BARE_WORD.findall(_LATEX_WORDS.sub(" ", _ENVIRONMENT.sub(" ", answer)))
    if len(words) == 1 and words[0] == answer:
        return answer
    if any(word.lower() not in _BARE_MATH_WORDS for word in words) or _SENTENCE_END.search(answer):
        return None
    return answer or None


def _plain_number(match: re.Match) -> str:
    # A number in running text: `1 000` (grouped with spaces) is 1000 and `2,74` (one or two digits after the comma,
    # which no thousands group has) is 2.74, as math-verify reads plain text.
    number = match.group("number" if "number" in match.re.groupindex else 0).replace("−", "-")
    if match.group("spaced"):
        number = re.sub(r"[ \u2009\u202f]", "", number)
    if match.group("decimal_comma"):
        number = number.replace(",", ".")
    return number


# ----------------------------------------------------------------------------------------------------------------------
# Normalization and the exact numeric path

_UNICODE = str.maketrans(
    {
        "−": "-",
        "–": "-",
        "—": "-",
        "×": "\\times ",
        "·": "\\cdot ",
        "÷": "\\div ",
        "π": "\\pi ",
        "√": "\\sqrt ",
        "∞": "\\infty ",
        "²": "^2",
        "³": "^3",
        "°": "",
        "€": "",
        "£": "",
        "¥": "",
        **{chr(0xFF10 + digit): str(digit) for digit in range(10)},  # full-width digits
        **dict.fromkeys(map(chr, (0x00A0, 0x2009, 0x202F, 0x3000)), " "),  # non-breaking and thin spaces
    }
)
_INVISIBLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u2060\ufeff]")
# `1\,000` is a thousands separator, not a space. An escaped backslash (`\\`, a matrix row's end) is kept whole.
_THIN_SPACE = re.compile(r"(\\\\)|\\[,!;:]|\\left\b|\\right\b")
_WIDE_SPACE = re.compile(r"(\\\\)|\\ |\\q?quad\b|~")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\degree\b")
_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_UNIT = re.compile(
    r"(?P<number>[+-]?[0-9][0-9,]*(?:\.[0-9]*)?)"
    r"(?:\s*\\(?:text|mbox|mathrm)\s*\{\s*(?P<braced>[A-Za-z][A-Za-z .]*)\}|\s+(?P<plain>[A-Za-z]{2,}[A-Za-z .]*)"
    r"|(?P<glued>[A-Za-z]{3,}))(?:\s*\^\s*\{?\s*[23]\s*\}?)?"  # `10\text{ cm}^2`, `10 cm^2`, `10weeks`
)
# Words after a number that are mathematics, not units ("2 pi" is not 2).
_MATH_WORDS = {"pi", "sqrt", "infty", "cdot", "times", "div", "frac", "dfrac", "mod", "sin", "cos", "tan", "log", "ln"}
# Words after a number that change its value: "1.5 million" is 1500000, "5 squared" 25, "2 thirds" 2/3.
_SCALE_WORDS = {"hundred": 100, "thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12, "dozen": 12}
_OPERATOR_WORDS = {
    "squared": "^2", "cubed": "^3", "percent": "%", "i": "i",
    **dict.fromkeys(("half", "halves"), "/2"), **dict.fromkeys(("third", "thirds"), "/3"),
    **dict.fromkeys(("quarter", "quarters", "fourth", "fourths"), "/4"), **dict.fromkeys(("fifth", "fifths"), "/5"),
}  # fmt: skip
# A leading group of 0 is no thousands group: `0,111` is not 111.
_THOUSANDS = re.compile(r"[+-]?(?:[1-9][0-9]{0,2})(?:,[0-9]{3})+(?:\.[0-9]+)?")
# LaTeX thousands separators with spaces around them: `32,\! 349`, `14 {,} 916`.
_LATEX_THOUSANDS = re.compile(r"(?<=[0-9])\s*(?:\{,\}|,\\!)\s*(?=[0-9]{3})")
# A number with its base as a subscript, `52_8` or `1011_{2}`; math-verify drops the base.
_BASED_NUMBER = re.compile(r"([0-9A-Z]+)_\{?([0-9]{1,2})\}?")

_INTEGER = re.compile(r"([+-]?)([0-9]{1,100})")
_DECIMAL = re.compile(r"([+-]?)([0-9]{0,100})\.([0-9]{0,100})")
# A mixed number, as MATH writes one: `2\frac{5}{8}`, `1\frac12`, `1 1/2`.
_MIXED = re.compile(
    r"([+-]?)([0-9]{1,100})(?:\s*\\frac\s*\{\s*([0-9]{1,100})\s*\}\s*\{\s*([0-9]{1,100})\s*\}"
    r"|\s*\\frac\s*([0-9])([0-9])"
    r"|\s+([0-9]{1,100})\s*/\s*([0-9]{1,100}))"
)
_FRACTION = re.compile(
    r"([+-]?)(?:\\frac\s*\{\s*([+-]?[0-9]{1,100})\s*\}\s*\{\s*([0-9]{1,100})\s*\}|\\frac\s*([0-9])([0-9])"
    r"|([0-9]{1,100})\s*/\s*([0-9]{1,100}))"
)


# A choice letter followed by its reason, `C. x = 42` or `(B) because ...`: the letter is the answer.
_CHOICE_WITH_REASON = re.compile(r"(?:\\text(?:bf)?\s*\{\s*)?(?:\(([A-E])\)|([A-E])[.:)])\}?\s+\}?\s*\S.*", re.DOTALL)
# A choice letter alone: `C`, `(C)`, `C.`.
_CHOICE = re.compile(r"\(?([A-Ea-e])\)?\.?")
# `f(x) = 2x + 3` defines the function the problem asks for: its right side is the answer, as for `y = 2x + 3`.
_FUNCTION_DEFINITION = re.compile(r"^[A-Za-z](?:\^\{?-1\}?)?\s*\(\s*[a-z]\s*\)\s*=(?!.*=)")
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]{1,100}(?:\.[0-9]{1,100})?")
_TRIG = re.compile(r"\\(?:sin|cos|tan|sec|csc|cot)\b")
# `3.54e-07` is 3.54 times ten to the -7, not Euler's number minus 7 (a digit before the `e` and digits after it).
_E_NOTATION = re.compile(r"(?<![\w.\\])([0-9]+(?:\.[0-9]*)?)[eE]([+-]?[0-9]{1,4})(?![\w.])")
_SCIENTIFIC = re.compile(
    r"([+-]?[0-9]{1,100}(?:\.[0-9]{0,100})?)\s*(?:\\times|\\cdot|\*|x)\s*10\s*(?:\^|\*\*)\s*"
    r"(?:\{\s*([+-]?[0-9]{1,4})\s*\}|([+-]?[0-9]{1,4}))"
)
# A repeating decimal: `0.1\overline{6}`, `0.\dot{3}`, `0.1666 repeating`, `0.333...` (three or more of one digit).
_OVERLINE = re.compile(r"([0-9]*)\.([0-9]*)\s*\\(?:overline|dot)\s*\{\s*([0-9]+)\s*\}")
_REPEATING = re.compile(
    r"(?<![\w.])([0-9]*)\.([0-9]+)\s*"
    r"(?:(?P<word>\\text\s*\{\s*repeating\s*\}|\(repeating\)|repeating)|\.\.\.|\\ldots|\\cdots|\\dots|…)"
)
# `\sqrt[3]8` is `\sqrt[3]{8}`: math-verify reads only the braced form.
_ROOT_INDEX = re.compile(r"\\sqrt\s*\[\s*([0-9]+)\s*\]\s*([0-9A-Za-z])")
# A time of day, `20:34`, `20:34:00`, `8:34 \text{P.M.}`.
_TIME = re.compile(r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?\s*(?:\\text\s*\{\s*)?(?:([AaPp])\.?\s*[Mm]\.?)?\s*\}?")
# SymPy's syntax, as a Python-writing model gives it: `Eq(x**2/4 + y**2/3, 1)`, `sqrt(2)/2`, `Rational(1, 3)`.
_SYMPY_CALL = re.compile(r"\b(Eq|sqrt|Rational)\(")


def _repeating_value(whole: str, fixed: str, period: str) -> str:
    # `\frac{p}{q}` of whole.fixed(period)(period)...
    value = Fraction(int(whole or 0)) + Fraction(int(fixed or 0), 10 ** len(fixed))
    value += Fraction(int(period), (10 ** len(period) - 1) * 10 ** len(fixed))
    return f"\\frac{{{value.numerator}}}{{{value.denominator}}}" if value.denominator != 1 else str(value.numerator)


def _split_repeating(digits: str) -> tuple[str, str]:
    # `1666` is 1 then 6 repeating; `142857`, with no repeated tail, repeats as a whole.
    for period in range(1, len(digits) // 2 + 1):
        tail = digits[-period:]
        if digits[-2 * period : -period] == tail:
            fixed = digits
            while fixed.endswith(tail):
                fixed = fixed[: -len(tail)]
            return fixed, tail
    return "", digits


def _repeating_decimal(match: re.Match) -> str:
    # An ellipsis makes a decimal repeating only after three of one digit (`0.333...`, not `3.14159...`).
    digits = match.group(2)
    if not match.group("word") and not (len(digits) >= 3 and len(set(digits[-3:])) == 1):
        return match.group(0)
    return _repeating_value(match.group(1), *_split_repeating(digits))


def _sympy_to_latex(answer: str) -> str:
    # `Eq(a, b)` -> `a = b`, `sqrt(x)` -> `\sqrt{x}`, `Rational(a, b)` -> `\frac{a}{b}`, `**` -> `^`: math-verify's
    # LaTeX parser reads `Eq(a, b)` as a tuple and compares its last element, so any two equations with equal right
    # sides would match.
    answer = answer.replace("**", "^")
    for _ in range(20):
        call = _SYMPY_CALL.search(answer)
        if call is None:
            break
        depth, arguments, start = 0, [], call.end()
        for index in range(call.end(), len(answer)):
            char = answer[index]
            if char in "([{":
                depth += 1
            elif char in ")]}" and depth:
                depth -= 1
            elif char == "," and not depth:
                arguments.append(answer[start:index].strip())
                start = index + 1
            elif char == ")":
                arguments.append(answer[start:index].strip())
                break
        else:
            break
        name, rest = call.group(1), answer[index + 1 :]
        if name == "Eq" and len(arguments) == 2:
            replaced = f"{arguments[0]} = {arguments[1]}"
        elif name == "Rational" and len(arguments) == 2:
            replaced = f"\\frac{{{arguments[0]}}}{{{arguments[1]}}}"
        elif name == "sqrt" and len(arguments) == 1:
            replaced = f"\\sqrt{{{arguments[0]}}}"
        else:
            break
        answer = answer[: call.start()] + replaced + rest
    return answer


def _rewrite_notation(answer: str) -> str:
    # Notations math-verify misreads or cannot read, rewritten in LaTeX it reads as the writer meant.
    if ("**" in answer or ("(" in answer and _SYMPY_CALL.search(answer))) and "\\" not in answer:
        answer = _sympy_to_latex(answer)
    if "e" in answer or "E" in answer:
        answer = _E_NOTATION.sub(lambda match: f"{match.group(1)}\\times 10^{{{match.group(2)}}}", answer)
    if "\\overline" in answer or "\\dot" in answer:
        answer = _OVERLINE.sub(lambda match: _repeating_value(*match.group(1, 2, 3)), answer)
    if "." in answer:
        answer = _REPEATING.sub(_repeating_decimal, answer)
    if "\\sqrt" in answer:
        answer = _ROOT_INDEX.sub(r"\\sqrt[\1]{\2}", answer)
    if ":" in answer and (time := _TIME.fullmatch(answer)) and (time.group(4) or time.group(3) == "00"):
        # A time of day with a.m./p.m. or zero seconds; a bare `7:32` stays as written, since it may be a ratio.
        hours = int(time.group(1))
        if time.group(4):
            hours = hours % 12 + (12 if time.group(4).lower() == "p" else 0)
        answer = f"{hours:02d}:{time.group(2)}"
    return answer


_SMALL_NUMBER_WORDS = {
    word: value
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen".split()
    )
}
_TENS_WORDS = {
    word: 10 * value for value, word in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)
}
_LARGE_NUMBER_WORDS = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}


def _number_in_words(answer: str) -> str | None:
    # `forty-two` is 42, `one hundred and five` 105, `minus three` -3; anything else in words is left alone.
    words = re.sub(r"[-,]", " ", answer.lower().rstrip(".")).split()
    sign = -1 if words[:1] in (["minus"], ["negative"]) else 1
    total, group = 0, None
    for word in words[1:] if sign < 0 else words:
        if word in _SMALL_NUMBER_WORDS or word in _TENS_WORDS:
            group = (group or 0) + _SMALL_NUMBER_WORDS.get(word, _TENS_WORDS.get(word, 0))
        elif word == "hundred" and group:
            group *= 100
        elif word in _LARGE_NUMBER_WORDS and group:
            total, group = total + group * _LARGE_NUMBER_WORDS[word], 0
        elif word != "and" or group is None:
            return None
    return None if group is None and not total else str(sign * (total + (group or 0)))


def _normalize(answer: str) -> str:
    if len(answer) > MAX_ANSWER_CHARS:
        return answer  # the pre-filter rejects it; normalizing a megabyte would only cost time
    if _PLAIN_NUMBER.fullmatch(answer):
        return answer  # the common case, `72` or `-3.5`, has nothing to normalize
    answer = _INVISIBLE.sub("", answer.translate(_UNICODE))
    answer = _strip_math_delimiters(answer)
    answer = _LATEX_THOUSANDS.sub(",", answer)
    answer = answer.replace("\\$", "").replace("$", "").replace("{,}", ",")
    answer = answer.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\%", "%")
    answer = answer.replace("\\varnothing", "\\emptyset")
    answer = _THIN_SPACE.sub(lambda match: match.group(1) or "", answer)
    answer = _WIDE_SPACE.sub(lambda match: match.group(1) or " ", answer)
    if "circ" in answer or "degree" in answer:
        # `45^\circ` is 45, but inside a trigonometric function a degree is pi/180 of a radian: sin(90° - x) is cos x.
        answer = _DEGREES.sub(r"\\cdot\\frac{\\pi}{180}" if _TRIG.search(answer) else "", answer)
    answer = _rewrite_notation(answer.strip())
    if "=" in answer:
        answer = _FUNCTION_DEFINITION.sub("", answer)
    wrapped = _WRAPPER.fullmatch(answer)
    if wrapped:
        answer = wrapped.group(1).strip()
    unit = _UNIT.fullmatch(answer)
    if unit:
        word = (unit.group("braced") or unit.group("plain") or unit.group("glued")).split()[0].lower()
        number = unit.group("number")
        if word in _SCALE_WORDS:
            scaled = Decimal(number.replace(",", "")) * _SCALE_WORDS[word]
            answer = format(scaled.normalize(), "f")
        elif word in _OPERATOR_WORDS:
            answer = number + _OPERATOR_WORDS[word]
        elif unit.group("braced") or word not in _MATH_WORDS:
            answer = number
    if answer[:1].isalpha() and not any(char.isdigit() for char in answer):
        answer = _number_in_words(answer) or answer
    if _THOUSANDS.fullmatch(answer.rstrip(".")):
        answer = answer.replace(",", "")
    if answer.endswith(".") and not answer.endswith(".."):
        answer = answer[:-1].rstrip()
    return answer


class _Number(NamedTuple):
    value: Fraction
    decimals: int  # digits after the decimal point as written; 0 for integers and fractions
    is_fraction: bool


def _exact_number(answer: str) -> _Number | None:
    if match := _INTEGER.fullmatch(answer):
        value = Fraction(int(match.group(2)))
        return _Number(-value if match.group(1) == "-" else value, 0, False)
    if (match := _DECIMAL.fullmatch(answer)) and (match.group(2) or match.group(3)):
        value = Fraction(f"{match.group(2) or 0}.{match.group(3) or 0}")
        return _Number(-value if match.group(1) == "-" else value, len(match.group(3)), False)
    if match := _FRACTION.fullmatch(answer):
        sign, groups = match.group(1), [group for group in match.groups()[1:] if group is not None]
        numerator, denominator = int(groups[0]), int(groups[1])
        if denominator == 0:
            return None
        value = Fraction(numerator, denominator)
        return _Number(-value if sign == "-" else value, 0, True)
    if (match := _MIXED.fullmatch(answer)) and match.group(2):
        numerator, denominator = (int(group) for group in match.groups()[2:] if group is not None)
        if 0 < numerator < denominator:  # `2\frac{3}{2}` is no mixed number
            value = int(match.group(2)) + Fraction(numerator, denominator)
            return _Number(-value if match.group(1) == "-" else value, 0, True)
    if match := _SCIENTIFIC.fullmatch(answer):
        exponent = int(match.group(2) or match.group(3))
        value = Fraction(match.group(1)) * Fraction(10) ** exponent
        return _Number(value, max(0, len(match.group(1).partition(".")[2]) - exponent), False)
    return None


def _based_verdict(gold: str, pred: str | None) -> bool | None:
    # `52_9` is not `52_8`. Two numbers with bases are equal when their values are; a number with a base against a
    # plain integer compares the digits as written (the problem names the base: `1112` answers `1112_4`). Only digits
    # valid in their base make a number with a base: `A_1` or `B_3` is a subscripted symbol.
    gold_based, pred_based = _based_number(gold), _based_number(pred or "")
    if gold_based is None and pred_based is None:
        return None
    if gold_based is not None and pred_based is not None:
        return gold_based[2] == pred_based[2]
    digits, other = (gold_based[0], pred) if gold_based is not None else (pred_based[0], gold)
    if other is None or not re.fullmatch(r"[0-9A-Z]+", other):
        return None
    return digits.lstrip("0") == other.lstrip("0")


def _based_number(answer: str) -> tuple[str, int, int] | None:
    # (digits, base, value) of a number written with its base, `52_8` or `1011_{2}`.
    match = _BASED_NUMBER.fullmatch(answer)
    if match is None or not 2 <= int(match.group(2)) <= 36:
        return None
    try:
        return match.group(1), int(match.group(2)), int(match.group(1), int(match.group(2)))
    except ValueError:
        return None  # a digit too large for the base


def _choice_verdict(gold: str, pred: str) -> bool | None:
    # A choice letter alone against a choice given with its reason or value (`C. x = 42`, `(D) 17`), either way round:
    # the letters decide. Anything else is left to the other rules.
    for letter, other in ((_CHOICE.fullmatch(gold), pred), (_CHOICE.fullmatch(pred), gold)):
        reasoned = _CHOICE_WITH_REASON.fullmatch(other) if letter else None
        if reasoned:
            return letter.group(1).upper() == (reasoned.group(1) or reasoned.group(2))
    return None


# A matrix written with a LaTeX environment, `\begin{pmatrix} 1 \\ 2 \end{pmatrix}`; a list, `[1, 2]` or `(1, 2)`.
_MATRIX = re.compile(
    r"\\begin\s*\{([pbBvV]?matrix)\}(.*)\\end\s*\{\1\}"
    r"|[\[(]?\s*\\begin\s*\{array\}\s*\{[^{}]*\}(.*)\\end\s*\{array\}\s*[\])]?",  # `\left[\begin{array}{c}...`
    re.DOTALL,
)
_LIST = re.compile(r"[\[(](.*)[\])]", re.DOTALL)


def _top_level_split(text: str, separator: str) -> list[str]:
    # `text` split at each `separator` outside braces, brackets and parentheses; [] when these do not pair up.
    parts, depth, start, index = [], 0, 0, 0
    while index < len(text):
        char = text[index]
        if char == "\\" and not text.startswith(separator, index):
            index += 2  # an escaped character, `\{` or `\,`
            continue
        if char in "{[(":
            depth += 1
        elif char in "}])":
            depth -= 1
            if depth < 0:
                return []
        elif not depth and text.startswith(separator, index):
            parts.append(text[start:index].strip())
            start = index = index + len(separator)
            continue
        index += 1
    parts.append(text[start:].strip())
    return parts if not depth else []


def _vector(answer: str) -> tuple[str, str, list[str]] | None:
    # (environment, separator, entries) of a one-column or one-row matrix of two entries or more.
    match = _MATRIX.fullmatch(answer.strip())
    if match is None:
        return None
    environment = match.group(1) or "pmatrix"  # a list against an array is written as a pmatrix
    rows = [row for row in _top_level_split(match.group(2) or match.group(3), "\\\\") if row]
    if len(rows) > 1 and all("&" not in row for row in rows):
        return environment, " \\\\ ", rows
    cells = _top_level_split(rows[0], "&") if len(rows) == 1 else []  # a row vector
    return (environment, " & ", cells) if len(cells) > 1 and all(cells) else None


def _as_vectors(gold: str, pred: str) -> tuple[str, str]:
    # A list or tuple against a one-column or one-row matrix is that vector, written as the matrix is: `[0.5, 1]` (an
    # interval to math-verify) answers `\begin{pmatrix} \frac12 \\ 1 \end{pmatrix}`, and the other way round.
    for matrix, other in ((gold, pred), (pred, gold)):
        vector, listed = _vector(matrix), _LIST.fullmatch(other.strip())
        if vector is None or listed is None:
            continue
        entries = _top_level_split(listed.group(1), ",")
        if len(entries) == len(vector[2]) and all(entries) and "=" not in listed.group(1):
            rewritten = f"\\begin{{{vector[0]}}} {vector[1].join(entries)} \\end{{{vector[0]}}}"
            return (gold, rewritten) if matrix is gold else (rewritten, pred)
    return gold, pred


def _within_precision(gold: _Number, pred: _Number) -> bool:
    # A gold decimal of four significant digits or more is a rounded value: a more precise answer (more decimals, or a
    # fraction) within one unit of its last digit matches it (3.14159 answers 3.1416; 2 does not answer 2.0001, and
    # 12.51 does not answer 12.5).
    if gold.is_fraction or not gold.decimals or len(str(abs(gold.value * 10**gold.decimals).numerator)) < 4:
        return False
    if not pred.is_fraction and pred.decimals <= gold.decimals:
        return False
    return abs(pred.value - gold.value) < Fraction(1, 10**gold.decimals)


def _positional(number: _Number) -> str:
    # What math-verify is given for a decimal: positional, since it misreads `3.54\times10^{-7}`-like forms less
    # often than it misreads nothing, and `1e-05` as e - 5.
    if number.is_fraction:
        return f"\\frac{{{number.value.numerator}}}{{{number.value.denominator}}}"
    return format(Decimal(number.value.numerator) / Decimal(number.value.denominator), "f")


def _decides_inequality(gold: _Number, pred: _Number) -> bool:
    # Unequal exact values are unequal, except a decimal against a fraction (0.333333 vs 1/3): math-verify's rounding
    # accepts such a decimal, so those are left to it. (Two decimals are compared exactly, beyond the 6 digits
    # math-verify rounds to: 0.3333334 is not 0.3333333.)
    return not ((gold.is_fraction and pred.decimals) or (pred.is_fraction and gold.decimals))


# ----------------------------------------------------------------------------------------------------------------------
# Pre-filter: inputs that would make sympy compute for minutes are rejected before they reach a worker

_POWER_TOWER = re.compile(r"([0-9]+)((?:\s*(?:\^|\*\*)\s*\{?\s*\(?\s*[0-9]+)+)")
_TOWER_EXPONENT = re.compile(r"[0-9]+")
_HUGE_EXPONENT = re.compile(r"[0-9][eE][+-]?[0-9]{5}")
_FACTORIAL = re.compile(r"([0-9]+)\s*!")
# Digits a literal power may have before sympy's integer arithmetic gets slow; 2^{1000} (302 digits) passes.
_MAX_POWER_DIGITS = 10_000
_MAX_FACTORIAL = 2_000
_MAX_NESTING = 40


def _power_digits(base: int, exponents: list[int]) -> float:
    # Digits of base^(e1^(e2^...)), computed on logarithms so that the estimate itself stays cheap.
    exponent = 1.0
    for value in reversed(exponents):
        exponent = math.inf if exponent * math.log10(max(value, 2)) > 300 else float(value) ** exponent
    return exponent * math.log10(max(base, 2))


def _is_pathological(answer: str) -> bool:
    if len(answer) > MAX_ANSWER_CHARS:
        return True
    depth = deepest = 0
    for char in answer:
        if char in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "})]":
            depth -= 1
    if deepest > _MAX_NESTING:
        return True
    for tower in _POWER_TOWER.finditer(answer):
        exponents = [int(value) for value in _TOWER_EXPONENT.findall(tower.group(2))]
        if _power_digits(int(tower.group(1)), exponents) > _MAX_POWER_DIGITS:
            return True
    if _HUGE_EXPONENT.search(answer):
        return True  # `1e99999`: math-verify reads e^99999 and works it out
    return any(int(factorial.group(1)) > _MAX_FACTORIAL for factorial in _FACTORIAL.finditer(answer))


# ----------------------------------------------------------------------------------------------------------------------
# Symbolic path: math-verify in worker subprocesses with a hard deadline

# The worker is this file run by path: `python -m vtd_trl.verify` would import the package, and with it torch.
_WORKER_BOOT = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__vtd_verify_worker__')"


class _WorkerFailure(Exception):
    pass


class _Worker:
    """One math-verify subprocess, spoken to in JSON lines: `[gold, pred_or_null, seconds]` -> `true|false|null`."""

    def __init__(self) -> None:
        # The worker must import the same math-verify as this process, wherever sys.path was changed at runtime.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_BOOT, os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._ready = False
        self._buffer = b""

    def _read_line(self, deadline: float) -> bytes | None:
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise _WorkerFailure(f"verification worker exited with code {self.process.wait()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def check(self, gold: str, pred: str | None, timeout: float) -> bool | None:
        if not self._ready:
            try:
                ready = self._read_line(time.monotonic() + WORKER_STARTUP_TIMEOUT) == b"ready"
            except _WorkerFailure:
                ready = False
            if not ready:
                raise RuntimeError(
                    f"The math-verify worker did not start within {WORKER_STARTUP_TIMEOUT:.0f} s (exit code: "
                    f"{self.process.poll()}; command: "
                    f"{sys.executable} -c {_WORKER_BOOT!r} {__file__}). Check that `math-verify[antlr4-13-2]` is "
                    "installed in this environment; the worker's error, if any, is on stderr above."
                )
            self._ready = True
        deadline = time.monotonic() + timeout
        try:
            # The worker stops itself a little before our deadline, so that it usually survives a slow input.
            self.process.stdin.write(json.dumps([gold, pred, 0.8 * timeout]).encode() + b"\n")
            self.process.stdin.flush()
        except OSError as error:
            raise _WorkerFailure(f"verification worker is gone: {error}") from error
        line = self._read_line(deadline)
        if line is None:
            raise _WorkerFailure(f"no verdict within {timeout} s")
        return json.loads(line)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.process.stdin.close()
        self.process.stdout.close()


class _WorkerPool:
    """Workers shared by all threads of one process; a thread holds one worker for the length of one check."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._idle: list[_Worker] = []
        self._size = 0
        self._available = threading.Condition()

    def check(self, gold: str, pred: str | None, timeout: float, max_workers: int) -> bool | None:
        worker = self._acquire(max_workers)
        try:
            verdict = worker.check(gold, pred, timeout)
        except _WorkerFailure:
            # Past its deadline the worker is stuck in sympy, possibly in C code that no signal interrupts: kill it
            # and start the replacement now, so that it imports math-verify while this process does other work.
            self._discard(worker, replace=True)
            return False
        except BaseException:
            self._discard(worker, replace=False)
            raise
        with self._available:
            self._idle.append(worker)
            self._available.notify()
        return verdict

    def _acquire(self, max_workers: int) -> _Worker:
        with self._available:
            while not self._idle and self._size >= max_workers:
                self._available.wait()
            if self._idle:
                return self._idle.pop()
            self._size += 1
        try:
            return _Worker()
        except BaseException:
            self._discard(None, replace=False)
            raise

    def _discard(self, worker: _Worker | None, replace: bool) -> None:
        if worker is not None:
            worker.kill()
        replacement = None
        if replace:
            try:
                replacement = _Worker()
            except OSError:
                pass  # e.g. out of processes: the next check starts a worker again and reports the error there
        with self._available:
            if replacement is None:
                self._size -= 1
            else:
                self._idle.append(replacement)
            self._available.notify()

    def close(self) -> None:
        if os.getpid() != self.pid:  # a forked child must not kill its parent's workers
            return
        with self._available:
            idle, self._idle, self._size = self._idle, [], 0
        for worker in idle:
            worker.kill()


_pool: _WorkerPool | None = None
_pool_lock = threading.Lock()


def _get_pool() -> _WorkerPool:
    global _pool
    with _pool_lock:
        # A forked child (a dataloader worker, say) inherits the parent's pipes: it must start workers of its own.
        if _pool is None or _pool.pid != os.getpid():
            _pool = _WorkerPool()
            atexit.register(_pool.close)
        return _pool


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


# ----------------------------------------------------------------------------------------------------------------------
# Public API


def answer_text(gold: str | int | float | None) -> str:
    """
    The text of a gold answer: a string as it is, a number in positional notation (`1e-05` -> `"0.00001"`, since
    math-verify reads `1e-05` as e - 5), `None` or a non-finite float as `""` (unparseable).

    Raises:
        `TypeError`: For anything but a string, a real number (Python or NumPy) or `None`.
    """
    if gold is None:
        return ""
    if isinstance(gold, str):
        return gold
    if isinstance(gold, bool) or not isinstance(gold, numbers.Real):
        raise TypeError(f"The gold answer must be a string or a number, got {type(gold).__name__}: {gold!r}.")
    if isinstance(gold, numbers.Integral):
        return str(int(gold))
    return format(Decimal(repr(float(gold))), "f") if math.isfinite(gold) else ""


@lru_cache(maxsize=65536)
def _prepare_gold(gold: str) -> tuple[str, _Number | None, bool]:
    # Golds repeat once per sampled completion, so their normalization is cached.
    # A gold written as a solution (a box, a `####` line, a final-answer sentence) is read down to that answer; any
    # other gold is the answer as a whole ("x = 3", "5 apples").
    if len(gold) <= 100 * MAX_ANSWER_CHARS:
        gold = _stated_answer(gold) or _answer_sentence(gold) or gold
    answer = _normalize(gold)
    return answer, _exact_number(answer), _is_pathological(answer)


def _fast_verdict(completion: str, gold: str | int | float | None) -> bool | None | tuple[str, str | None]:
    """A verdict decided in this process, or the `(gold, pred)` pair that needs math-verify."""
    if not isinstance(completion, str):
        raise TypeError(f"The completion must be a string, got {type(completion).__name__}: {completion!r}.")
    gold_answer, gold_number, gold_pathological = _prepare_gold(answer_text(gold))
    if not gold_answer or gold_pathological:
        return None
    raw = extract_answer(completion)
    pred_answer = None if raw is None else _normalize(raw)
    if gold_number is not None:
        if not pred_answer:
            return False
        pred_number = _exact_number(pred_answer)
        if pred_number is not None:
            if pred_number.value == gold_number.value or _within_precision(gold_number, pred_number):
                return True
            if _decides_inequality(gold_number, pred_number):
                return False
            pred_answer = _positional(pred_number)
    choice = _choice_verdict(gold_answer, pred_answer or "")
    if choice is not None:
        return choice
    based = _based_verdict(gold_answer, pred_answer)
    if based is not None:
        return based
    if pred_answer is not None and _is_pathological(pred_answer):
        return False
    if pred_answer is not None and "\\begin" in gold_answer + pred_answer:
        gold_answer, pred_answer = _as_vectors(gold_answer, pred_answer)
    return gold_answer, pred_answer


def verify(completion: str, gold: str | int | float | None, *, timeout: float = DEFAULT_TIMEOUT) -> bool | None:
    r"""
    Checks whether the final answer of a completion is equivalent to the gold answer.

    The answer is read with [`extract_answer`]. Numbers written plainly (`42`, `-3.50`, `\frac{1}{2}`, `1/2`, `1,000`,
    `007`, `\$18`, `18 dollars`, `18\text{ cm}`) are compared exactly in this process; other answers go to
    math-verify's `parse` + `verify` in a worker subprocess with a hard deadline.

    Args:
        completion (`str`):
            Completion text.
        gold (`str`, `int` or `float`):
            Gold answer, e.g. `"72"` or `r"\frac{\sqrt{3}}{2}"` (no `$` needed). A gold written as a solution is read
            down to its stated answer as [`extract_answer`] reads one (its boxes, its `#### ...` line, its final-answer
            sentence: `\(\boxed{1}\) and \(\boxed{-2}\)` is `1, -2`). `None` or an empty string counts as unparseable.
        timeout (`float`, *optional*, defaults to `2.0`):
            Seconds the symbolic comparison may take; past it the answer counts as incorrect. The first symbolic check
            of a process also waits for its worker to start (about a second), once.

    Returns:
        `bool` or `None`: `True` if equivalent, `False` if not (or no answer was found, or time ran out), `None` if
        the gold answer itself cannot be parsed: such a prompt should be skipped, not scored.

    Example:
    ```python
    >>> verify(r"... so she pays \boxed{\$1,250}.", "1250")
    True
    >>> verify(r"\boxed{\frac{1}{\sqrt{2}}}", r"\frac{\sqrt{2}}{2}")
    True
    ```
    """
    outcome = _fast_verdict(completion, gold)
    if not isinstance(outcome, tuple):
        return outcome
    return _get_pool().check(*outcome, timeout=timeout, max_workers=_default_workers())


def verify_batch(
    completions: list[str],
    golds: list[str | int | float | None],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    num_workers: int | None = None,
) -> list[bool | None]:
    """
    Verifies each completion against its gold answer; same verdicts as [`verify`], in the same order.

    Numeric answers are decided in this process; the others are spread over up to `num_workers` math-verify worker
    processes, each check with its own deadline.

    Args:
        completions (`list[str]`):
            Completion texts.
        golds (`list`):
            Gold answers, one per completion.
        timeout (`float`, *optional*, defaults to `2.0`):
            Seconds each symbolic comparison may take.
        num_workers (`int`, *optional*):
            Most worker processes to use; defaults to `min(4, os.cpu_count())`.

    Returns:
        `list[bool | None]`: One verdict per completion.
    """
    if len(completions) != len(golds):
        raise ValueError(
            f"verify_batch needs one gold answer per completion, got {len(completions)} completions and "
            f"{len(golds)} golds."
        )
    num_workers = _default_workers() if num_workers is None else num_workers
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}.")
    verdicts = [_fast_verdict(completion, gold) for completion, gold in zip(completions, golds)]
    pending = [index for index, verdict in enumerate(verdicts) if isinstance(verdict, tuple)]
    if not pending:
        return verdicts
    pool = _get_pool()

    def check(index: int) -> bool | None:
        return pool.check(*verdicts[index], timeout=timeout, max_workers=num_workers)

    if len(pending) == 1 or num_workers == 1:
        results = [check(index) for index in pending]
    else:
        with ThreadPoolExecutor(max_workers=min(num_workers, len(pending))) as executor:
            results = list(executor.map(check, pending))
    for index, result in zip(pending, results):
        verdicts[index] = result
    return verdicts


# ----------------------------------------------------------------------------------------------------------------------
# Worker process


_LATEX_WORDS = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox|operatorname)\s*\{[^{}]*\}|\\[A-Za-z]+")


def _mixes_case(answer: str | None) -> bool:
    """Whether `answer` uses one letter in both cases (`N=n+1`), so that folding the case would merge two symbols."""
    # Single letters only: in a word ("Circle") case is spelling, not two symbols.
    letters = set(re.findall(r"(?<![A-Za-z])[A-Za-z](?![A-Za-z])", _LATEX_WORDS.sub(" ", answer or "")))
    return any(letter.isupper() and letter.lower() in letters for letter in letters)


class _Deadline(BaseException):
    # A BaseException, so that math-verify's `except Exception` handlers let it through and stop at once.
    pass


def _serve() -> None:
    """Runs in the worker subprocess: reads `[gold, pred, seconds]` lines, writes one verdict line per request."""
    protocol = _isolate_worker()
    parse, math_verify, keep_case = _case_aware_math_verify()
    parse_gold = lru_cache(maxsize=4096)(lambda gold, _keep_case: parse(f"${gold}$", parsing_timeout=None))
    armed = False

    def on_alarm(signum, frame):
        if armed:
            raise _Deadline

    signal.signal(signal.SIGALRM, on_alarm)
    protocol.write("ready\n")
    protocol.flush()
    for line in sys.stdin:
        gold, pred, seconds = json.loads(line)
        verdict = None
        armed = True
        signal.setitimer(signal.ITIMER_REAL, seconds)
        keep_case["on"] = _mixes_case(gold) or _mixes_case(pred)
        try:
            # A system of equations math-verify cannot read whole is compared equation by equation.
            system = _system_rows(gold)
            verdict = None if system is None else _system_verdict(system, pred, parse, math_verify)
            gold_parsed = parse_gold(gold, keep_case["on"]) if verdict is None else ()
            # math-verify falls back to the raw string when nothing parses; such a gold ("?", "\\frac{}{}") would
            # only match itself character for character, so it counts as unparseable.
            if any(not isinstance(parsed, str) for parsed in gold_parsed):
                verdict = False
                if pred:
                    pred_parsed = parse(f"${pred}$", parsing_timeout=None)
                    verdict = bool(math_verify(gold_parsed, pred_parsed, timeout_seconds=None))
                    verdict = verdict or _numerically_equal(gold, gold_parsed, pred_parsed)
                    # A list of equations (`x=0.5, y=1.732`), when math-verify finds no match, by the same rule.
                    system = None if verdict or system is not None else _system_rows(gold, listed=True)
                    verdict = verdict or (
                        system is not None
                        and len(system) > 1
                        and bool(_system_verdict(system, pred, parse, math_verify))
                    )
        except _Deadline:
            pass
        except Exception:  # a parser bug on odd input is a wrong answer, not a dead worker
            pass
        finally:
            armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        protocol.write(json.dumps(verdict) + "\n")
        protocol.flush()


def _numerically_equal(gold: str, gold_parsed: list, pred_parsed: list) -> bool:
    """Equivalence that math-verify's `simplify` misses, decided on numbers (runs in the worker, under its deadline).

    - Two expressions in the same variables: equal when they agree to 1e-9 at five random points (a rational function
      with decimal coefficients, a trigonometric identity, a power of a product under a root written two ways). Two
      different expressions agreeing at five random points is a chance too small to matter.
    - A gold whose decimals all have four significant digits or more is rounded: an answer within one unit of its
      last digit matches it (`40\\pi` answers `125.663`, `\\frac13, \\sqrt3` answers `1/3, 1.732`), as
      `_within_precision` does for two plain numbers. A rounded answer to an exact gold stays wrong.
    - Two equations `expression = number` with equal expressions compare their numbers by that rule, the gold's number
      alone deciding its rounding (`a-b=\\sqrt3` answers `a-b=1.732`); see `_equations_agree`.
    - A variable `i` is the imaginary unit (`1+2i` is `i(2-i)`), as math-verify reads a standalone `i`.
    """
    import sympy
    from sympy.core.function import AppliedUndef

    gold_item = next((item for item in gold_parsed if not isinstance(item, str)), None)
    pred_item = next((item for item in pred_parsed if not isinstance(item, str)), None)
    rounding = _gold_rounding(gold)
    if isinstance(gold_item, (sympy.FiniteSet, sympy.Tuple)) and isinstance(pred_item, (sympy.FiniteSet, sympy.Tuple)):
        if rounding is None or len(gold_item.args) != len(pred_item.args) or gold_item.free_symbols:
            return False
        ordered = [sorted(items.args, key=lambda item: complex(item).real) for items in (gold_item, pred_item)]
        return all(_agree(g, p, rounding) for g, p in zip(*ordered))
    if isinstance(gold_item, sympy.Equality):
        return _equations_agree(gold, gold_item, pred_item)
    if not isinstance(gold_item, sympy.Expr) or not isinstance(pred_item, sympy.Expr):
        return False
    if gold_item.atoms(AppliedUndef) or pred_item.atoms(AppliedUndef):
        return False
    # Symbols by name (math-verify gives `x` real=True in one answer and not in the other), and `i` as the unit.
    names = {symbol: sympy.I if symbol.name == "i" else sympy.Symbol(symbol.name) for symbol in gold_item.free_symbols}
    names.update({s: sympy.I if s.name == "i" else sympy.Symbol(s.name) for s in pred_item.free_symbols})
    unit = any(symbol.name == "i" for symbol in names)
    gold_item, pred_item = gold_item.xreplace(names), pred_item.xreplace(names)
    if gold_item.free_symbols != pred_item.free_symbols or not (gold_item.free_symbols or rounding or unit):
        return False
    return _agree(gold_item, pred_item, rounding or 0.0)


# A system of equations, one a row: `\begin{cases} a+b=0.5 \\ a-b=1.732 \end{cases}`.
_SYSTEM = re.compile(r"\\begin\s*\{(cases|aligned|array)\}(?:\{[^{}]*\})?(.*)\\end\s*\{\1\}", re.DOTALL)
_RELATION = re.compile(r"=|<|>|\\[lg]eq?\b|\\neq?\b|\\[lg]t\b")


def _system_rows(answer: str | None, listed: bool = False) -> list[str] | None:
    # The equations of a system written as an environment (`cases`, `aligned`, `array`), or with `listed` also as a
    # list (`x=0.5, y=1.732`), each with a single `=` and no other relation; None for anything else.
    match = _SYSTEM.fullmatch((answer or "").strip())
    if match is not None:
        rows = [row.replace("&", " ").strip() for row in _top_level_split(match.group(2), "\\\\")]
    elif listed and answer and "=" in answer:
        rows = [row for part in re.split(r"\\\\|;", answer) for row in _top_level_split(part, ",")]
    else:
        return None
    rows = [row.rstrip(",;.").strip() for row in rows if row]
    if not rows or any(row.count("=") != 1 or len(_RELATION.findall(row)) != 1 for row in rows):
        return None
    return rows


def _system_verdict(gold_rows: list[str], pred: str | None, parse, math_verify) -> bool | None:
    """A gold system of equations against an answer (runs in the worker): `None` when a gold row does not parse as an
    equation (the gold is left to math-verify whole), else whether the answer is a system of as many equations that
    pair off with the gold's, in any order, each pair equal to math-verify or by `_equations_agree`."""
    import itertools

    import sympy

    def equation(row: str):
        parsed = parse(f"${row}$", parsing_timeout=None)
        item = next((item for item in parsed if not isinstance(item, str)), None)
        return (parsed, item) if isinstance(item, sympy.Equality) else None

    golds = [equation(row) for row in gold_rows]
    if any(parsed is None for parsed in golds):
        return None
    pred_rows = _system_rows(pred, listed=True)
    if pred_rows is None or len(pred_rows) != len(gold_rows) or len(gold_rows) > 6:
        return False
    preds = [equation(row) for row in pred_rows]
    if any(parsed is None for parsed in preds):
        return False
    pairs = {}

    def equal(g: int, p: int) -> bool:
        if (g, p) not in pairs:
            (gold_parsed, gold_item), (pred_parsed, pred_item) = golds[g], preds[p]
            pairs[g, p] = bool(math_verify(gold_parsed, pred_parsed, timeout_seconds=None)) or _equations_agree(
                gold_rows[g], gold_item, pred_item
            )
        return pairs[g, p]

    return any(all(equal(g, p) for g, p in enumerate(order)) for order in itertools.permutations(range(len(preds))))


def _equations_agree(gold: str, gold_item, pred_item) -> bool:
    # Two equations `expression = number` (either way round) with equal expressions, their numbers compared by the
    # gold's rounding: a gold number with four significant digits or more is rounded (`a-b=1.732` is answered by
    # `a-b=\sqrt3`), any other is exact (`a+b=0.5` by `a+b=\frac12`, not `a+b=0.51`).
    import sympy

    sides = gold.split("=")
    if len(sides) != 2 or not isinstance(pred_item, sympy.Equality):
        return False
    numeric = [not side.free_symbols for side in gold_item.args]
    if numeric.count(True) != 1:
        return False
    k = numeric.index(True)
    gold_number, gold_expression = gold_item.args[k], gold_item.args[1 - k]
    rounding = _gold_rounding(sides[k]) or 0.0
    for pred_expression, pred_number in (pred_item.args, pred_item.args[::-1]):
        if pred_number.free_symbols:
            continue
        names = {s: sympy.Symbol(s.name) for s in gold_expression.free_symbols | pred_expression.free_symbols}
        expression, other = gold_expression.xreplace(names), pred_expression.xreplace(names)
        if expression.free_symbols == other.free_symbols and _agree(expression, other, 0.0):
            return _agree(gold_number, pred_number, rounding)
    return False


def _gold_rounding(gold: str) -> float | None:
    # One unit of the last digit of a gold whose decimals all have four significant digits or more, else None.
    decimals = re.findall(r"(?<![0-9.])([0-9]*)\.([0-9]+)(?![0-9.])", gold)
    if not decimals or any(len((whole + fraction).lstrip("0")) < 4 for whole, fraction in decimals):
        return None
    return 10.0 ** -min(len(fraction) for _, fraction in decimals)


def _agree(gold, pred, rounding: float) -> bool:
    # Whether two sympy expressions agree, within `rounding` or to 1e-9, at five random points of their variables.
    import random

    import sympy

    free, rng, agreed = gold.free_symbols | pred.free_symbols, random.Random(0), 0
    for _ in range(8):
        point = {symbol: sympy.Float(rng.uniform(0.3, 1.7)) for symbol in free}
        try:
            a, b = complex(gold.evalf(30, subs=point)), complex(pred.evalf(30, subs=point))
        except (TypeError, ValueError, ZeroDivisionError):
            continue
        if not (math.isfinite(abs(a)) and math.isfinite(abs(b))):
            continue
        if abs(a - b) >= max(rounding, 1e-9 * max(1.0, abs(a), abs(b))):
            return False
        agreed += 1
        if agreed == (5 if free else 1):
            return True
    return False


def _isolate_worker():
    """The worker's protocol stream (its stdout; stray prints go to stderr), a memory cap, SIGINT left to the parent
    (Ctrl-C in the terminal reaches the whole process group), and an exit when the parent is gone."""
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ImportError, ValueError, OSError):
        pass  # not on this platform or already lower; the parent's deadline still holds
    parent = os.getppid()

    def exit_with_parent() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=exit_with_parent, daemon=True).start()
    return protocol


def _case_aware_math_verify():
    """math-verify's `parse` and `verify`, and a switch `keep_case["on"]` that keeps the case of symbols.

    math-verify folds the case of every symbol (latex2sympy's `lowercase_symbols`, which it does not expose): `N=n`
    becomes `n=n`. For answers that use one letter in both cases, its LaTeX parser is called with the case kept.
    """
    import logging

    from latex2sympy2_extended.latex2sympy2 import ConversionConfig
    from math_verify import parse
    from math_verify import parser as math_verify_parser
    from math_verify import verify as math_verify

    # Timeouts are ours (the worker's itimer): math-verify's own would re-arm SIGALRM and cancel it.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    fold_case_parse = math_verify_parser.parse_latex_cached
    keep_case = {"on": False}

    def to_sympy_keeping_case(latex: str):
        return math_verify_parser.latex2sympy(
            latex,
            is_real=not math_verify_parser.should_treat_as_complex(latex),
            convert_degrees=False,
            normalization_config=None,
            conversion_config=ConversionConfig(lowercase_symbols=False),
        )

    @lru_cache(maxsize=256)
    def case_kept_parse(latex: str):
        try:  # as math-verify's parse_latex_cached: on failure, the last equation alone
            return to_sympy_keeping_case(latex)
        except Exception:
            last_equation = math_verify_parser.get_last_eq(latex)
            if last_equation == latex:
                raise
            return to_sympy_keeping_case(last_equation)

    def parse_latex(latex: str):
        return case_kept_parse(latex) if keep_case["on"] else fold_case_parse(latex)

    math_verify_parser.parse_latex_cached = parse_latex
    return parse, math_verify, keep_case


if __name__ == "__vtd_verify_worker__":
    _serve()
