"""The command line of `scripts/vtd.py`: a short `--help`, a quiet console, and mistakes in the flags, the recipe or
the models said in one line (the traceback with `--debug` or `VTD_DEBUG=1`)."""

import argparse
import difflib
import logging
import os
import shutil
import sys
import textwrap
import warnings
from functools import partial
from pathlib import Path

import datasets
import yaml
from trl import ModelConfig, TrlParser

from .config import VtDConfig
from .demo.models import DEMO
from .teachers import TeacherServerError
from .train import VtDScriptArguments, prepare, train_and_save

#: Set to 1 (or pass `--debug`) for the full traceback of an error the command line reports in one line.
DEBUG_ENV = "VTD_DEBUG"


class UsageError(ValueError):
    """A mistake in the flags, the recipe or the data, reported as one line."""


def main(argv: list[str] | None = None):
    """`scripts/vtd.py`: parse `--config` and the flags (`argv`, default `sys.argv`), train; returns the trainer.

    A mistake found before training (a flag, a recipe key, a model path, the data, an option's value) ends the run with
    one line naming it and exit status 2; nothing has been written then. A teacher server that fails during training
    ends it with one line and status 1, the checkpoints saved so far intact."""
    quiet_console()  # first: the deprecation warning fires while the arguments are parsed
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        script_args, training_args, model_args = VtDParser().parse_args_and_config(argv)
        check_model_source(model_args.model_name_or_path, "--model_name_or_path")
        if training_args.teacher_server_base_url is None:
            check_model_source(training_args.teacher_model_name_or_path, "--teacher_model_name_or_path")
        prepared = prepare(script_args, training_args, model_args)
    except (ValueError, TypeError, OSError, ImportError, TeacherServerError) as error:
        _fail(error, debug, status=2)
    try:
        return train_and_save(prepared)
    except TeacherServerError as error:
        _fail(error, debug, status=1)


def _fail(error: BaseException, debug: bool, status: int):
    if debug:
        raise error
    if os.environ.get("RANK", "0") == "0":  # one line for the run, not one per process
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"error: {message}  (--debug for the traceback)", file=sys.stderr, flush=True)
    sys.exit(status)


def check_model_source(name: str | None, flag: str) -> None:
    """Refuse, before anything loads, a model that is neither a local directory nor a hub id that could be loaded."""
    if name is None or name.startswith(f"{DEMO}/") or Path(name).expanduser().exists():
        return
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise UsageError(
            f"{flag} {name}: no such directory, and not a hub model id (`org/name`). Give the directory of a saved "
            "model (with its config.json) or a hub id."
        ) from None
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    if offline and not isinstance(try_to_load_from_cache(name, "config.json"), str):
        raise UsageError(
            f"{flag} {name}: not a local directory, and not in the hub cache while HF_HUB_OFFLINE=1. Download it "
            f"first (`hf download {name}`), or give the directory of a saved model."
        )


def quiet_console() -> None:
    """Silence the notices a run prints that say nothing about it (each one by its message, nothing else)."""
    from transformers.utils import logging as hf_logging

    # GRPOConfig sets `gradient_checkpointing`, which transformers 5 renames `activation_checkpointing`: the
    # deprecation would show on every run, whatever the recipe says.
    warnings.filterwarnings(
        "ignore", message=r"`(is_)?gradient_checkpointing(_kwargs)?` is deprecated", category=FutureWarning
    )
    # DeepSpeed, when installed, is imported by transformers on every run and announces that it found no GPU.
    logging.getLogger("DeepSpeed").addFilter(lambda record: not record.getMessage().startswith("Setting accelerator"))
    hf_logging.disable_progress_bar()  # "Loading weights" for each model loaded, "Writing model shards" at the save
    datasets.disable_progress_bars()  # "Generating train split" for a local file, "Map" for each column mapped


# The command line: `--help` shows VtD's options and the most used training ones; `--help-all` every option.

DESCRIPTION = """Train a student with Verification-then-Distillation (VtD): for each prompt the student samples K
completions and each answer is verified; the teacher is distilled into the student on a correct completion, and a
wrong one is contrasted (DPO) with the dataset's reference solution (or a correct sibling).

  python scripts/vtd.py --config recipes/demo_tuned.yaml      # the offline demo: tiny models, CPU, about a minute
  accelerate launch --config_file recipes/accelerate/zero3.yaml scripts/vtd.py --config recipes/qwen3_tuned.yaml
  python scripts/vtd.py --config recipes/demo_tuned.yaml --max_steps 10 --vtd_contrast_beta 1.0  # flags override

Docs: README.md, and docs/ one topic a page (docs/configuration.md: every VtD option, its default and meaning)."""

HELP_MODEL = (
    "model_name_or_path",
    "model_revision",
    "dtype",
    "attn_implementation",
    "use_peft",
    "lora_r",
    "lora_alpha",
    "lora_target_modules",
    "load_in_4bit",
)
HELP_TRAINING = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_generations",
    "max_completion_length",
    "temperature",
    "use_vllm",
    "vllm_mode",
    "bf16",
    "output_dir",
    "logging_steps",
    "push_to_hub",
    "hub_model_id",
    "report_to",
    "seed",
    "resume_from_checkpoint",
)


class _HelpAll(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.print_help_all()
        parser.exit()


class VtDParser(TrlParser):
    """The `TrlParser` of `scripts/vtd.py` (script, training and model arguments); parses as TrlParser does, only
    its `--help` is shorter."""

    def __init__(self):
        super().__init__((VtDScriptArguments, VtDConfig, ModelConfig), description=DESCRIPTION)
        self.add_argument("--help-all", action=_HelpAll, help="Show every option, with the inherited ones, and exit.")

    def format_help(self) -> str:
        sections = [
            ("VtD (vtd_trl.VtDConfig)", list(VtDConfig.__annotations__)),
            ("Data (vtd_trl.train.VtDScriptArguments)", list(VtDScriptArguments.__dataclass_fields__)),
            ("Model (trl.ModelConfig, most used)", list(HELP_MODEL)),
            ("Training (the most used of those VtDConfig inherits; all of them: --help-all)", list(HELP_TRAINING)),
        ]
        actions = {action.dest: action for action in self._actions if action.option_strings}
        width = min(max(shutil.get_terminal_size().columns, 119), 140)  # never narrower than the code
        lines = [f"usage: {self.prog} --config RECIPE.yaml [--option VALUE ...]", "", DESCRIPTION, "", "Recipe:"]
        lines += _option("--config RECIPE.yaml", "YAML file of options (recipes/*.yaml); a flag overrides it.", width)
        for title, dests in sections:
            lines += ["", f"{title}:"]
            for dest in dests:
                action = actions[dest]
                lines += _option(action.option_strings[0], _summary(action), width)
        lines += ["", "  -h, --help    show this message and exit", "  --help-all    show every option and exit"]
        lines += ["  --debug       show the traceback of an error reported in one line (or set VTD_DEBUG=1)", ""]
        return "\n".join(lines)

    def print_help_all(self) -> None:
        print(super().format_help())

    def parse_args_and_config(self, args=None, **kwargs):
        """TrlParser's parsing, after a check of the recipe file and of each recipe key and flag: a missing file, or a
        misspelled key or flag, is one line naming it and the closest valid one."""
        args = list(sys.argv[1:] if args is None else args)
        if "--config" in args:
            position = args.index("--config")
            if position + 1 == len(args):
                raise UsageError("--config needs a recipe file, e.g. --config recipes/demo_tuned.yaml.")
            self._check_recipe(Path(args[position + 1]))
        flags = {flag for action in self._actions for flag in action.option_strings} | {"--config"}
        for arg in args:
            flag = arg.split("=", 1)[0]
            if flag.startswith("--") and flag not in flags:
                raise UsageError(f"Unknown flag {flag}{self._did_you_mean(flag[2:])}")
        return super().parse_args_and_config(args, **kwargs)

    def _check_recipe(self, path: Path) -> None:
        if not path.is_file():
            raise UsageError(f"--config {path}: no such file. The recipes are in recipes/ (recipes/README.md).")
        try:
            recipe = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise UsageError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
        if not isinstance(recipe, dict):
            raise UsageError(f"{path} must be a YAML mapping of option: value lines, e.g. `max_steps: 10`.")
        known = {action.dest for action in self._actions} | {"env"}
        for key in recipe:
            if key not in known:
                raise UsageError(f"{path}: unknown key `{key}`{self._did_you_mean(str(key), quote='`')}")

    def _did_you_mean(self, name: str, quote: str = "--") -> str:
        known = [action.dest for action in self._actions if action.option_strings]
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        if not close:
            return ". `--help` lists the options, `--help-all` all of them."
        return f"; did you mean {quote}{close[0]}{'`' if quote == '`' else ''}?"


def _summary(action: argparse.Action) -> str:
    """The first sentence of an option's help, and its default."""
    text = " ".join((action.help or "").split())
    end = next((i for i in range(len(text)) if text[i] == "." and text[i + 1 : i + 2] in ("", " ") and
                not text[max(0, i - 3) : i + 1].endswith(("e.g.", "i.e.", "vs."))), len(text))  # fmt: skip
    text = text[:end].rstrip(".")
    if action.default not in (None, "", [], {}) and action.default is not argparse.SUPPRESS:
        text += f" [{action.default}]"
    return text


def _option(flag: str, text: str, width: int, column: int = 38) -> list[str]:
    """`flag` and its help wrapped in a column; a flag too long for its column gets a line of its own."""
    indent = " " * column
    head = f"  {flag}".ljust(column)
    wrap = partial(textwrap.wrap, width=width, subsequent_indent=indent, break_on_hyphens=False)
    if len(head) > column:
        return [head.rstrip(), *wrap(text, initial_indent=indent)]
    return wrap(text, initial_indent=head) or [head.rstrip()]
