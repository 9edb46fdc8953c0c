"""Answer extraction and verification against a gold answer.

`extract_answer` reads the final answer of a completion; `verify` decides whether it is equivalent to the gold answer,
with an exact numeric path first and math-verify's symbolic comparison after it.
"""

import re
import threading
from fractions import Fraction

from math_verify import LatexExtractionConfig, parse
from math_verify import verify as math_verify_verify

_THINK_CLOSE = "</think>"
_THINK_OPEN = "<think>"
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_GSM8K = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS = re.compile(r"(?:final answer|the answer)\s*(?:is|:)\s*:?\s*([^\n]+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_FRAC = re.compile(r"([+-]?)\\[dt]?frac\{([+-]?\d+)\}\{([+-]?\d+)\}")
_SLASH = re.compile(r"([+-]?\d+)/(\d+)")


def _boxed_content(text: str, start: int) -> str | None:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{" and text[i - 1] != "\\":
            depth += 1
        elif text[i] == "}" and text[i - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return None


def extract_answer(text: str) -> str | None:
    """Extracts the final answer of a completion."""
    if _THINK_CLOSE in text:
        text = text.rsplit(_THINK_CLOSE, 1)[1]
    elif _THINK_OPEN in text:
        return None
    for match in reversed(list(_BOXED.finditer(text))):
        content = _boxed_content(text, match.end() - 1)
        if content is not None:
            return content.strip()
    for pattern in (_GSM8K, _ANSWER_IS):
        matches = pattern.findall(text)
        if matches:
            return matches[-1].strip().rstrip(".").strip("$ ")
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def _normalize(answer: str) -> str:
    answer = answer.strip().strip("$").strip()
    answer = answer.replace("\\$", "").replace("\\!", "").replace("\\,", "").replace("{,}", ",")
    answer = re.sub(r"\s*(?:\\text\{\s*[A-Za-z ]+\}|(?<=\d)\s+(?:dollars?|cents?))$", "", answer)
    if re.fullmatch(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", answer):
        answer = answer.replace(",", "")
    return answer.rstrip(".").strip()


def _as_fraction(answer: str) -> Fraction | None:
    if _PLAIN_NUMBER.fullmatch(answer):
        return Fraction(answer)
    match = _FRAC.fullmatch(answer) or _SLASH.fullmatch(answer)
    if match is None:
        return None
    sign, num, den = match.groups() if len(match.groups()) == 3 else ("", *match.groups())
    if int(den) == 0:
        return None
    value = Fraction(int(num), int(den))
    return -value if sign == "-" else value


def verify(completion: str, gold: str, timeout: float = 2.0) -> bool | None:
    """Checks the final answer of a completion against the gold answer (None: the gold cannot be parsed)."""
    gold_norm = _normalize(gold)
    if not gold_norm:
        return None
    answer = extract_answer(completion)
    pred_norm = _normalize(answer) if answer is not None else None
    gold_value = _as_fraction(gold_norm)
    if gold_value is not None and pred_norm is not None:
        pred_value = _as_fraction(pred_norm)
        if pred_value is not None:
            return pred_value == gold_value
    seconds = max(1, round(timeout)) if threading.current_thread() is threading.main_thread() else None
    gold_parsed = parse(f"${gold_norm}$", extraction_config=[LatexExtractionConfig()], parsing_timeout=seconds)
    if not gold_parsed:
        return None
    if pred_norm is None:
        return False
    pred_parsed = parse(f"${pred_norm}$", extraction_config=[LatexExtractionConfig()], parsing_timeout=seconds)
    return bool(math_verify_verify(gold_parsed, pred_parsed, timeout_seconds=seconds))


def verify_batch(completions: list[str], golds: list[str], timeout: float = 2.0) -> list[bool | None]:
    """Verifies each completion against its gold answer, in order."""
    return [verify(c, g, timeout=timeout) for c, g in zip(completions, golds, strict=True)]
