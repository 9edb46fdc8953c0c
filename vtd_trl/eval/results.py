"""Files of an evaluation run: `run.json` (what was run), `samples.jsonl` (one graded sample a line), `summary.json`.

`samples.jsonl` is appended to as samples are generated and flushed line by line, so an interrupted run loses at most
the line being written; the next run into the same directory reads the file back and generates only what is missing.
"""

import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "summary.json"


def read_samples(path: str | Path) -> list[dict]:
    """Records of a `samples.jsonl`, or `[]` if it does not exist. A torn last line (an interrupted write: not valid
    UTF-8 or not valid JSON) is dropped from the file with a warning; any other malformed line is an error.

    Lines are split on `\\n` only and decoded one by one, so a write cut inside a multi-byte character tears just its
    own line, and a completion holding `\\u2028` or another Unicode line break stays in one record."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            if number == len(lines):
                logger.warning(
                    "%s: dropping its torn last line %d (%s); it will be generated again.", path, number, err
                )
                write_samples(path, records)
                break
            raise ValueError(
                f"{path}, line {number}, is not valid JSON ({err}); fix or delete the line to resume this run."
            ) from err
    return records


def append_samples(path: str | Path, records: list[dict]) -> None:
    """Append records to a `samples.jsonl` and flush, so that they survive an interruption. A last line left without
    its newline by an interrupted write is ended first, so the new records start on lines of their own."""
    path = Path(path)
    ends_with_newline = True
    if path.exists() and path.stat().st_size > 0:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            ends_with_newline = f.read(1) == b"\n"
    with open(path, "a", encoding="utf-8") as f:
        if not ends_with_newline:
            f.write("\n")
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()


def write_samples(path: str | Path, records: list[dict]) -> None:
    """Rewrite a `samples.jsonl` (after regrading, or without its torn last line)."""
    tmp = Path(f"{path}.tmp")
    tmp.write_text("".join(f"{json.dumps(r, ensure_ascii=False)}\n" for r in records), encoding="utf-8")
    tmp.replace(path)


def check_or_write_run(path: str | Path, run: dict) -> None:
    """Write `run.json`, or check that the run being resumed used the same model, data, prompt and sampling.

    Samples of different settings must not be mixed in one score; a mismatch is an error that names each field.
    """
    path = Path(path)
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        diffs = [
            f"  {key}: saved {saved.get(key)!r}, now {run.get(key)!r}"
            for key in sorted(set(saved) | set(run))
            if saved.get(key) != run.get(key)
        ]
        if diffs:
            raise ValueError(
                f"{path.parent} holds samples of a different run:\n" + "\n".join(diffs) + "\n"
                "Pass another --output-dir, or delete the directory to start over."
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_summary(path: str | Path, summary: dict) -> None:
    Path(path).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_summary(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
