"""Draws who wins the method benchmark: held-out accuracy per method, in each regime, from `methods.py`'s JSON.

One row of panels per task (files of one task merged), one panel per regime (strong / imperfect teacher x references in the
student's format / terse ones). Each dot is a method's mean over seeds at the learning rate of the grid with the best
mean (as `methods.py`'s table), the bar its standard deviation and the ticks its seeds. A method that reads no
teacher or no reference ran once for the regimes it ignores: those dots are hollow. Methods are in the same order
in every panel (best mean over the first file's regimes on top) and VtD is in red.

When the runs carry learning curves (`"curve": [[step, accuracy], ...]`), a second figure draws them, mean over
seeds at the same learning rate with a band of ± one standard deviation, next to the first (`methods_curves.png`);
without curves it is skipped.

    python scripts/bench/plot_methods.py                       # docs/images/methods.png from the two demo tasks
    python scripts/bench/plot_methods.py --inputs my_runs.json --output my_runs.png --methods kd_forward vtd_seed
    python scripts/bench/plot_methods.py --inputs scripts/bench/results/methods_peers.json \
        --output docs/images/methods_peers.png --methods kd_forward vtd_k2_di_cw3_sibref_sibnll1 sdpo iw_opd gkd
"""

import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "scripts" / "bench" / "results"
DEFAULT_INPUTS = [RESULTS / "methods.json", RESULTS / "methods_peers.json", RESULTS / "methods_groups.json"]
DEFAULT_OUTPUT = ROOT / "docs" / "images" / "methods.png"
DEFAULT_METHODS = [
    "kd_forward", "kd_reverse", "gkd", "iw_opd", "grpo", "sft", "vtd_seed", "vtd_k2_di_cw3_sibref_sibnll1"
]  # fmt: skip
TUNED = "vtd_k2_di_cw3_sibref_sibnll1"
REGIMES = ["strong/think", "strong/terse", "imperfect/think", "imperfect/terse"]
LABELS = {
    "kd_forward": "KD, forward KL (TRL DistillationTrainer)",
    "kd_reverse": "KD, reverse KL (TRL DistillationTrainer)",
    "grpo": "GRPO (TRL GRPOTrainer)",
    "sft": "SFT on the references (TRL SFTTrainer)",
    "vtd_seed": "VtD as published (K=8, contrast 0.1)",
    TUNED: "VtD tuned (recipes/*_tuned.yaml)",
    "sdpo": "SDPO, self-distillation (TRL SDPOTrainer)",
    "iw_opd": "IW-OPD (TRL IWOPDTrainer)",
    "gkd": "GKD, on-policy or on the references (TRL GKDTrainer)",
}
REGIME_TITLES = {
    "strong/think": "strong teacher\nreferences in the student's format",
    "strong/terse": "strong teacher\nterse references",
    "imperfect/think": "imperfect teacher\nreferences in the student's format",
    "imperfect/terse": "imperfect teacher\nterse references",
}
PEER_COLOR, VTD_COLOR, HIGHLIGHT_COLOR = "#7f93ab", "#e0857b", "#c0392b"
# Curves: one colour per peer, so that several peers read apart in one panel
CURVE_COLORS = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f"]


def aggregate(results: list[dict], seeds: list[int] | None = None) -> dict[tuple[str, str], dict]:
    """Per (method, regime) that ran: the learning rate with the best mean over seeds, its mean, sample standard
    deviation, per-seed accuracies (in seed order), mean curve and the curves' standard deviation at each step. Only
    learning rates run on as many seeds as the most complete one compete, so that every mean is over the same seeds."""
    groups: dict[tuple[str, str], dict[float, list[dict]]] = {}
    for run in results:
        if seeds is None or run["seed"] in seeds:
            groups.setdefault((run["method"], run["regime"]), {}).setdefault(run["learning_rate"], []).append(run)
    cells = {}
    for key, by_lr in groups.items():
        most = max(len(runs) for runs in by_lr.values())
        complete = {lr: runs for lr, runs in by_lr.items() if len(runs) == most}
        lr, runs = max(complete.items(), key=lambda item: statistics.mean(r["accuracy"] for r in item[1]))
        runs = sorted(runs, key=lambda r: r["seed"])
        scores = [r["accuracy"] for r in runs]
        cells[key] = {
            "learning_rate": lr,
            "mean": statistics.mean(scores),
            "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
            "seeds": scores,
            "curve": mean_curve([r["curve"] for r in runs if r.get("curve")]),
            "curve_std": curve_std([r["curve"] for r in runs if r.get("curve")]),
        }
    return cells


def mean_curve(curves: list[list[list[float]]]) -> list[tuple[float, float]] | None:
    """The mean accuracy at each step that every curve has; None without curves."""
    return curve_statistic(curves, statistics.mean)


def curve_std(curves: list[list[list[float]]]) -> list[tuple[float, float]] | None:
    """The standard deviation over the curves (0 for one) at each step that every curve has; None without curves."""
    return curve_statistic(curves, statistics.stdev if len(curves) > 1 else lambda values: 0.0)


def curve_statistic(curves: list[list[list[float]]], statistic) -> list[tuple[float, float]] | None:
    if not curves:
        return None
    steps = set.intersection(*({step for step, _ in curve} for curve in curves))
    points = [dict((step, acc) for step, acc in curve) for curve in curves]
    return [(step, statistic([p[step] for p in points])) for step in sorted(steps)]


def fill_regimes(cells: dict[tuple[str, str], dict], methods: list[str]) -> dict[tuple[str, str], dict]:
    """Every regime of each method: a method whose runs cover one teacher (or one reference style) only ignores that
    axis, so its run stands for the other regimes too, marked `shared`."""
    filled = {}
    for method in methods:
        ran = {regime for m, regime in cells if m == method}
        teachers = {regime.split("/")[0] for regime in ran}
        styles = {regime.split("/")[1] for regime in ran}
        for regime in REGIMES:
            teacher, style = regime.split("/")
            source = f"{next(iter(teachers)) if len(teachers) == 1 else teacher}/"
            source += next(iter(styles)) if len(styles) == 1 else style
            if (method, source) in cells:
                filled[method, regime] = {**cells[method, source], "shared": source != regime}
    return filled


def method_order(cells: dict[tuple[str, str], dict], methods: list[str]) -> list[str]:
    """Methods by their mean over the regimes (best first); a method with no cell is dropped."""
    means = {m: [c["mean"] for (name, _), c in cells.items() if name == m] for m in methods}
    return sorted((m for m in methods if means[m]), key=lambda m: -statistics.mean(means[m]))


def color(method: str, highlight: str) -> str:
    if method == highlight:
        return HIGHLIGHT_COLOR
    return VTD_COLOR if method.startswith("vtd") else PEER_COLOR


def load(paths: list[Path], methods: list[str], seeds: list[int] | None) -> list[tuple[str, dict]]:
    """The cells of each task, in the order the files name them; files of one task are merged, a run that two files
    hold (the same method, regime, seed and learning rate) counted once."""
    runs_of: dict[str, dict[tuple, dict]] = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        runs = runs_of.setdefault(data.get("budget", {}).get("task", "additions"), {})
        for r in data["results"]:
            if r["method"] in methods:
                runs.setdefault((r["method"], r["regime"], r["seed"], r["learning_rate"]), r)
    return [(task, fill_regimes(aggregate(list(runs.values()), seeds), methods)) for task, runs in runs_of.items()]


def plot_accuracy(
    tasks: list[tuple[str, dict]],
    order: list[str],
    highlight: str,
    start: float | None,
    output: Path,
    xlim: tuple[float, float] = (0.35, 0.75),
):
    fig, axes = plt.subplots(
        len(tasks), len(REGIMES), figsize=(15, 1.2 + 2.3 * len(tasks)), sharex=True, squeeze=False
    )
    positions = range(len(order))[::-1]  # the first method on top
    for row, (task, cells) in enumerate(tasks):
        for col, regime in enumerate(REGIMES):
            ax = axes[row][col]
            best = max((cells[m, regime]["mean"] for m in order if (m, regime) in cells), default=None)
            for y, method in zip(positions, order):
                cell = cells.get((method, regime))
                if cell is None:
                    continue
                c, mean = color(method, highlight), cell["mean"]
                if method == highlight:
                    ax.axhspan(y - 0.45, y + 0.45, color=HIGHLIGHT_COLOR, alpha=0.08, lw=0)
                if mean < xlim[0]:  # off the axis: an arrow at its edge, with the value
                    ax.plot(xlim[0], y, "<", color=c, ms=7, clip_on=False)
                    ax.text(xlim[0] + 0.01, y, f"{mean:.1%} (off the axis)", va="center", fontsize=7.5)
                    continue
                ax.errorbar(mean, y, xerr=cell["std"], color=c, capsize=2, lw=1.2)
                ax.plot(cell["seeds"], [y] * len(cell["seeds"]), "|", ms=6, color=c, alpha=0.7)
                face = "white" if cell["shared"] else c
                ax.plot(mean, y, "o", ms=8 if method == highlight else 6, mfc=face, mec=c, mew=1.5)
                top = mean == best
                label = f"{mean:.1%}" + ("  best" if top else "")
                ax.text(
                    min(mean + cell["std"], xlim[1]) + 0.008,
                    y,
                    label,
                    va="center",
                    fontsize=7.5,
                    weight="bold" if top or method == highlight else "normal",
                    color=c if method.startswith("vtd") else "black",
                )
            if start is not None:
                ax.axvline(start, color="dimgray", ls="--", lw=0.8)
            ax.set_yticks(list(positions))
            ax.set_yticklabels([LABELS.get(m, m) for m in order] if col == 0 else [])
            ax.set_ylim(-0.6, len(order) - 0.4)
            ax.set_xlim(*xlim)
            ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
            ax.grid(axis="x", alpha=0.3)
            label_panel(ax, row, col, len(tasks), task, regime, "held-out greedy accuracy")
    note = "dot: mean over seeds, bar: ± std, ticks: each seed; hollow: one run shared across regimes (the method"
    note += " reads no teacher or no reference)"
    if start is not None:
        note += f"; dashed: the student before training ({start:.1%})"
    fig.suptitle("Who wins at equal budget (50 steps x 64 sequences)", fontsize=11, weight="bold")
    fig.text(0.5, 0.005, note, ha="center", fontsize=8, color="dimgray")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)


def label_panel(ax, row: int, col: int, rows: int, task: str, regime: str, xlabel: str) -> None:
    """The regime over the top row, the task beside the first column, the x label under the bottom row."""
    if row == 0:
        ax.set_title(REGIME_TITLES.get(regime, regime), fontsize=9)
    if col == 0:
        ax.set_ylabel(f"{task} task", fontsize=9)
    if row == rows - 1:
        ax.set_xlabel(xlabel, fontsize=8)


def plot_curves(tasks: list[tuple[str, dict]], order: list[str], highlight: str, output: Path) -> bool:
    """Learning curves, mean over seeds, when the runs have them; returns whether a figure was written."""
    if not any(cell.get("curve") for _, cells in tasks for cell in cells.values()):
        return False
    fig, axes = plt.subplots(
        len(tasks), len(REGIMES), figsize=(15, 1.1 + 2.6 * len(tasks)), sharey=True, squeeze=False
    )
    peers = [m for m in order if not m.startswith("vtd")]
    colors = {m: color(m, highlight) if m.startswith("vtd") else CURVE_COLORS[peers.index(m) % 7] for m in order}
    for row, (task, cells) in enumerate(tasks):
        for col, regime in enumerate(REGIMES):
            ax = axes[row][col]
            for method in order:
                cell = cells.get((method, regime))
                if cell and cell.get("curve"):
                    steps, accuracy = zip(*cell["curve"])
                    std = [value for _, value in cell["curve_std"]]
                    width = 2.0 if method == highlight else 1.2
                    style = "--" if cell["shared"] else "-"  # one run standing for the regimes it ignores
                    label = LABELS.get(method, method)
                    ax.plot(steps, accuracy, style, color=colors[method], lw=width, marker=".", label=label)
                    low, high = [a - s for a, s in zip(accuracy, std)], [a + s for a, s in zip(accuracy, std)]
                    ax.fill_between(steps, low, high, color=colors[method], alpha=0.15, lw=0)
            ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
            ax.grid(alpha=0.3)
            label_panel(ax, row, col, len(tasks), task, regime, "optimizer step")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.035), ncol=3, fontsize=8)
    note = "line: mean over seeds at the learning rate with the best final mean; band: ± one standard deviation;"
    note += " dashed: one run shared across regimes (the method reads no teacher or no reference)"
    fig.text(0.5, 0.005, note, ha="center", fontsize=8, color="dimgray")
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--inputs", nargs="+", type=Path, default=DEFAULT_INPUTS, help="methods.py JSON; a row per task."
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="Seeds averaged (as the tables).")
    parser.add_argument("--highlight", default=TUNED, help="The method drawn in the strong colour.")
    parser.add_argument("--start-accuracy", type=float, default=0.43, help="The student before training (a line).")
    args = parser.parse_args(argv)

    tasks = load(args.inputs, args.methods, args.seeds)
    order = method_order(tasks[0][1], args.methods)
    plot_accuracy(tasks, order, args.highlight, args.start_accuracy, args.output)
    print(f"wrote {args.output}")
    curves = args.output.with_name(args.output.stem + "_curves" + args.output.suffix)
    if plot_curves(tasks, order, args.highlight, curves):
        print(f"wrote {curves}")


if __name__ == "__main__":
    main()
