"""The package's shape: files with one job and an opening line that says it, functions and classes that fit on a
screen or two, and a teacher that never sees the trainer."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vtd_trl"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_FUNCTION_LINES, MAX_CLASS_LINES, MAX_TRAINER_LINES, MAX_LOSS_LINES = 70, 450, 500, 50
CONFIG_DATACLASSES = {"VtDConfig", "VtDScriptArguments", "EvalConfig"}  # one field and its help a few lines each


def definitions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node, node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_functions_and_classes_fit(path):
    too_long = []
    for node, lines in definitions(path):
        if isinstance(node, ast.ClassDef):
            if node.name not in CONFIG_DATACLASSES and lines > MAX_CLASS_LINES:
                too_long.append(f"class {node.name}: {lines} lines (at most {MAX_CLASS_LINES})")
        elif lines > MAX_FUNCTION_LINES:
            too_long.append(f"{node.name}: {lines} lines (at most {MAX_FUNCTION_LINES})")
    assert not too_long, too_long


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_opens_with_what_it_does(path):
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring and len(docstring.split()) >= 5, f"{path.name} has no opening docstring"


def test_the_trainer_reads_in_one_sitting():
    path = PACKAGE / "trainer.py"
    assert len(path.read_text().splitlines()) <= MAX_TRAINER_LINES
    loss = next(lines for node, lines in definitions(path) if node.name == "_vtd_loss")
    assert loss <= MAX_LOSS_LINES


@pytest.mark.parametrize("name", ["teachers.py", "packing.py", "losses.py", "chosen.py", "setup.py"])
def test_modules_below_the_trainer_never_name_it(name):
    tree = ast.parse((PACKAGE / name).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "VtDTrainer" not in imported and "trainer" not in modules and "vtd_trl.trainer" not in modules
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert "trainer" not in names | attributes, f"{name} reaches into a trainer object"
