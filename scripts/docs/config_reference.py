"""Writes docs/configuration.md, the reference of every VtD field of `VtDConfig`, from the config itself.

The groups are the docstring's `> Parameters that control ...` headings; each field is one line: its name, its
default and its `metadata["help"]`. GRPO's inherited fields are left out (TRL documents them).

    python scripts/docs/config_reference.py            # writes docs/configuration.md
    python scripts/docs/config_reference.py --check    # exits 1 when docs/configuration.md is stale
"""

import argparse
import dataclasses
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "docs" / "configuration.md"
COMMAND = "python scripts/docs/config_reference.py"
HEADING = re.compile(r"^\s*>\s*Parameters that control (.+?)\s*$")
ENTRY = re.compile(r"^\s*([A-Za-z_]\w*) \(`")

INTRO = f"""# Configuration

`VtDConfig` extends TRL's `GRPOConfig`: every field below is a recipe key (`recipes/*.yaml`) and a command-line flag
of `scripts/vtd.py` (`--vtd_contrast_beta 3`), and a keyword of `VtDConfig(...)` in Python. GRPO's own fields keep
their meaning and are documented by TRL (`num_generations` is K, the completions sampled per prompt; `temperature`
the sampling temperature; `use_vllm` / `vllm_mode` the generator). The defaults are VtD as published (K = 8,
alpha 5, contrast 0.1); `recipes/demo_tuned.yaml` and `recipes/qwen3_tuned.yaml` carry the measured options
([benchmarks](benchmarks.md)).

This page is generated from `vtd_trl/config.py`; do not edit it by hand. After changing the config, run
`{COMMAND}`."""


def docstring_groups(config_class) -> list[tuple[str, list[str]]]:
    """The docstring's groups in order: (`the teacher model`, [field names]) for each `> Parameters that control` heading."""
    groups: list[tuple[str, list[str]]] = []
    for line in (config_class.__doc__ or "").splitlines():
        heading = HEADING.match(line)
        if heading:
            groups.append((heading.group(1), []))
            continue
        entry = ENTRY.match(line)
        if entry and groups:
            groups[-1][1].append(entry.group(1))
    return groups


def own_fields(config_class) -> list[dataclasses.Field]:
    """The fields `config_class` declares that none of its bases does, in declaration order."""
    inherited = set()
    for base in config_class.__mro__[1:]:
        if dataclasses.is_dataclass(base):
            inherited |= {f.name for f in dataclasses.fields(base)}
    return [f for f in dataclasses.fields(config_class) if f.name not in inherited]


def default_text(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    if value is None:
        return "—"
    return f'`"{value}"`' if isinstance(value, str) else f"`{value!r}`"


def help_text(field: dataclasses.Field) -> str:
    text = " ".join(str(field.metadata.get("help", "")).split())
    return text.replace("|", "\\|") or "(no help string)"


def render(config_class=None) -> str:
    """The text of docs/configuration.md for `config_class` (default: `vtd_trl.config.VtDConfig`)."""
    if config_class is None:
        from vtd_trl.config import VtDConfig

        config_class = VtDConfig
    fields = {f.name: f for f in own_fields(config_class)}
    sections = []
    placed = set()
    for title, names in docstring_groups(config_class):
        rows = [fields[name] for name in names if name in fields and name not in placed]
        if rows:
            placed |= {f.name for f in rows}
            sections.append((f"Parameters that control {title}", rows))
    rest = [f for name, f in fields.items() if name not in placed]
    if rest:
        sections.append(("Other parameters", rest))
    lines = [INTRO, ""]
    for title, rows in sections:
        lines += [f"## {title}", "", "| field | default | meaning |", "|---|---|---|"]
        lines += [f"| `{f.name}` | {default_text(f)} | {help_text(f)} |" for f in rows]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="Exit 1 if the page is stale; write nothing.")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale; run `{COMMAND}`.", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
