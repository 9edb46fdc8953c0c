"""docs/: the configuration reference matches `VtDConfig`, and the method benchmark's plot script aggregates and draws."""

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


config_reference = load_script("config_reference", ROOT / "scripts" / "docs" / "config_reference.py")
pytest.importorskip("matplotlib")  # the dev extra
plot_methods = load_script("plot_methods", ROOT / "scripts" / "bench" / "plot_methods.py")


def test_configuration_page_is_current():
    current = (ROOT / "docs" / "configuration.md").read_text()
    assert current == config_reference.render(), (
        "docs/configuration.md is stale: run `python scripts/docs/config_reference.py` and commit the page."
    )


def test_configuration_page_lists_every_vtd_field_once_under_the_docstring_groups():
    from trl import GRPOConfig

    from vtd_trl.config import VtDConfig

    text = config_reference.render()
    own = [f.name for f in config_reference.own_fields(VtDConfig)]
    assert own and not set(own) & set(GRPOConfig.__dataclass_fields__)
    for name in own:
        assert text.count(f"| `{name}` |") == 1, name
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    groups = [f"Parameters that control {title}" for title, _ in config_reference.docstring_groups(VtDConfig)]
    assert headings[: len(groups)] == groups and len(groups) >= 3
    help_ = VtDConfig.__dataclass_fields__["vtd_distill_alpha"].metadata["help"]
    assert f"| `vtd_distill_alpha` | `5.0` | {' '.join(help_.split())} |" in text


def test_configuration_page_follows_the_docstring_not_a_list():
    """A config of its own: the groups and fields come from its docstring and dataclass, whatever they are."""
    from dataclasses import dataclass, field

    @dataclass
    class Base:
        inherited: int = field(default=1, metadata={"help": "Not ours."})

    @dataclass
    class Config(Base):
        """
        Parameters:
            > Parameters that control the route

            b (`str`, *optional*, defaults to `"x"`):
                B.

            > Parameters that control the loss

            a (`float`):
                A.
        """

        a: float = field(default=0.5, metadata={"help": "Weight\n   of a."})
        b: str = field(default="x", metadata={"help": "B | or not."})
        c: list = field(default_factory=list, metadata={"help": "Not in the docstring."})

    text = config_reference.render(Config)
    assert "inherited" not in text
    route, loss, other = text.split("## ")[1:]
    assert route.startswith("Parameters that control the route") and '| `b` | `"x"` | B \\| or not. |' in route
    assert loss.startswith("Parameters that control the loss") and "| `a` | `0.5` | Weight of a. |" in loss
    assert other.startswith("Other parameters") and "| `c` | `[]` | Not in the docstring. |" in other


def synthetic_results() -> dict:
    """Two methods over the four regimes; `kd` ran with one reference style only, as a KD run does."""
    results = []
    accuracies = {1e-4: [0.50, 0.60, 0.70], 3e-4: [0.20, 0.30, 0.40]}
    for lr, scores in accuracies.items():
        for seed, accuracy in enumerate(scores):
            for regime in ("strong/think", "strong/terse", "imperfect/think", "imperfect/terse"):
                curve = [[0, 0.4], [1, (0.4 + accuracy) / 2], [2, accuracy]]
                results.append(
                    dict(method="vtd_x", regime=regime, seed=seed, learning_rate=lr, accuracy=accuracy, curve=curve)
                )
            for regime in ("strong/think", "imperfect/think"):
                results.append(dict(method="kd", regime=regime, seed=seed, learning_rate=lr, accuracy=accuracy - 0.1))
    return {"budget": {"task": "additions"}, "results": results}


def test_aggregate_takes_the_best_learning_rate_with_its_mean_and_std():
    data = synthetic_results()
    cells = plot_methods.aggregate(data["results"])
    cell = cells["vtd_x", "strong/terse"]
    assert cell["learning_rate"] == 1e-4
    assert cell["mean"] == pytest.approx(0.6)
    assert cell["std"] == pytest.approx(0.1)  # sample std of 0.5, 0.6, 0.7
    assert cell["seeds"] == [0.5, 0.6, 0.7]
    steps, curve = zip(*cell["curve"])
    assert steps == (0, 1, 2) and curve == pytest.approx([0.4, 0.5, 0.6])
    assert cells["kd", "imperfect/think"]["mean"] == pytest.approx(0.5)
    # seeds 0 and 1 only: mean 0.55, std sqrt(0.005)
    cell = plot_methods.aggregate(data["results"], seeds=[0, 1])["vtd_x", "strong/think"]
    assert cell["mean"] == pytest.approx(0.55) and cell["std"] == pytest.approx(statistics.stdev([0.5, 0.6]))
    assert cells["kd", "strong/think"]["curve"] is None  # no run of kd has a curve


def test_a_learning_rate_short_of_seeds_does_not_compete():
    runs = [dict(method="m", regime="strong/think", seed=s, learning_rate=1e-4, accuracy=0.5) for s in (0, 1)]
    runs.append(dict(method="m", regime="strong/think", seed=0, learning_rate=3e-4, accuracy=0.9))
    assert plot_methods.aggregate(runs)["m", "strong/think"]["mean"] == pytest.approx(0.5)


def test_a_method_that_ignores_an_axis_fills_it_from_its_one_run():
    cells = plot_methods.aggregate(synthetic_results()["results"])
    filled = plot_methods.fill_regimes(cells, ["kd", "vtd_x"])
    assert filled["kd", "imperfect/terse"]["shared"] and filled["kd", "imperfect/terse"]["mean"] == pytest.approx(0.5)
    assert not filled["kd", "imperfect/think"]["shared"] and not filled["vtd_x", "imperfect/terse"]["shared"]
    assert plot_methods.method_order(filled, ["kd", "vtd_x", "absent"]) == ["vtd_x", "kd"]


def test_plot_script_writes_the_figures(tmp_path):
    data = synthetic_results()
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(data))
    data["budget"]["task"] = "groups"
    second.write_text(json.dumps(data))
    output = tmp_path / "images" / "methods.png"
    plot_methods.main(["--inputs", str(first), str(second), "--output", str(output), "--methods", "kd", "vtd_x"])
    for path in (output, tmp_path / "images" / "methods_curves.png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size < 200_000

    without_curves = tmp_path / "plain.json"
    for run in data["results"]:
        run.pop("curve", None)
    without_curves.write_text(json.dumps(data))
    plot_methods.main(["--inputs", str(without_curves), "--output", str(tmp_path / "plain.png"), "--methods", "kd"])
    assert (tmp_path / "plain.png").exists() and not (tmp_path / "plain_curves.png").exists()


def test_committed_figure_is_small():
    assert 10_000 < (ROOT / "docs" / "images" / "methods.png").stat().st_size < 200_000


def test_recipes_readme_lists_every_recipe_and_accelerate_config():
    text = (ROOT / "recipes" / "README.md").read_text()
    recipes = sorted(p.name for p in (ROOT / "recipes").glob("*.yaml"))
    configs = sorted(p.name for p in (ROOT / "recipes" / "accelerate").glob("*.yaml"))
    assert [name for name in recipes if f"`{name}`" not in text] == []
    assert [name for name in configs if f"accelerate/{name}" not in text] == []
