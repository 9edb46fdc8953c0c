"""Command line shared by `scripts/eval/eval_<benchmark>.py`: the fields of [`EvalConfig`] as flags (underscores or
dashes: `--n_samples` and `--n-samples` both work), optionally from a YAML file with `--config`."""

import json
import logging

from trl import TrlParser

from .config import EvalConfig
from .harness import evaluate


def main(benchmark: str | None = None, argv: list[str] | None = None) -> dict:
    """Parse flags, run [`evaluate`] and print the summary's headline.

    Args:
        benchmark: benchmark evaluated when `--benchmark` is not given (each script fixes its own).
        argv: flags; `None` reads `sys.argv`.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = TrlParser((EvalConfig,))
    if benchmark is not None:
        parser.set_defaults(benchmark=benchmark)
    (config,) = parser.parse_args_and_config(argv)
    summary = evaluate(config)
    headline = {k: summary[k] for k in ("model", "benchmark", "metric", "score", "ci", "counts")}
    print(json.dumps(headline, indent=2))
    return summary
