"""Command line shared by `scripts/eval/eval_<benchmark>.py`: the fields of [`EvalConfig`] as flags (underscores or
dashes: `--n_samples` and `--n-samples` both work), optionally from a YAML file with `--config`."""

import argparse
import json
import logging

from trl import TrlParser

from .config import EvalConfig
from .harness import evaluate

DESCRIPTION = """Evaluate a model on a math benchmark in greedy, maj@N or avg@N mode; the samples and the score are
written to --output_dir (default eval_results/<model>/<benchmark>/<mode>), and a rerun into it resumes.
Flags may also come from a YAML file: --config eval.yaml (flags on the command line win)."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written (its example commands keep their lines), each flag with its default."""


def make_parser(benchmark: str | None = None, description: str | None = None) -> TrlParser:
    """The parser of `EvalConfig`; bound to `benchmark`, it has no `--benchmark` flag (the script fixes it)."""
    parser = TrlParser((EvalConfig,), description=description or DESCRIPTION, formatter_class=_HelpFormatter)
    if benchmark is not None:
        action = next(a for a in parser._actions if a.dest == "benchmark")
        parser._remove_action(action)
        for group in parser._action_groups:
            if action in group._group_actions:
                group._group_actions.remove(action)
        for flag in action.option_strings:
            del parser._option_string_actions[flag]
        parser.set_defaults(benchmark=benchmark)
    return parser


def main(benchmark: str | None = None, argv: list[str] | None = None, description: str | None = None) -> dict:
    """Parse flags, run [`evaluate`] and print the summary's headline.

    Args:
        benchmark: the benchmark a script is bound to (it then takes no `--benchmark`); `None` asks for `--benchmark`.
        argv: flags; `None` reads `sys.argv`.
        description: what `--help` says first (a script passes its docstring).
    """
    (config,) = make_parser(benchmark, description).parse_args_and_config(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = evaluate(config)
    headline = {k: summary[k] for k in ("model", "benchmark", "metric", "score", "ci", "counts")}
    print(json.dumps(headline, indent=2))
    return summary
