"""Rebuilds `cases.jsonl` from a checkout of huggingface/Math-Verify: every parametrized equivalence case of its tests.

    git clone https://github.com/huggingface/Math-Verify && python extract_cases.py Math-Verify/tests > cases.jsonl

Each line is one case: `source` (file::test), `gold`, `pred`, `expected` (0/1) and the options the test passes to its
`compare_strings` helper or to `parse` + `verify` (`match_types`, `precision`, `strict`, `allow_set_relation_comp`).
"""

import ast
import json
import math
import sys
from pathlib import Path

FILES = [
    "test_all.py",
    "test_boxed.py",
    "test_numina_cases.py",
    "test_open_thoughts.py",
    "test_yujianll.py",
    "test_strict.py",
]
DEFAULTS = {"match_types": ["latex", "expr"], "precision": 6, "strict": True, "allow_set_relation_comp": False}


def options(function: ast.FunctionDef) -> dict:
    """The keyword arguments of the comparison call in the test body; names bound by the parametrize stay names."""
    for node in ast.walk(function):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "compare_strings":
            found = {}
            for keyword in node.keywords:
                try:
                    found[keyword.arg] = ast.literal_eval(keyword.value)
                except ValueError:
                    found[keyword.arg] = {"param": keyword.value.id}
            return found
    return {"match_types": "parse_defaults"}  # test_yujianll: plain parse() + verify()


def main(tests: Path) -> None:
    for name in FILES:
        module = ast.parse((tests / name).read_text())
        for function in module.body:
            if not isinstance(function, ast.FunctionDef):
                continue
            for decorator in function.decorator_list:
                if not (isinstance(decorator, ast.Call) and ast.unparse(decorator.func) == "pytest.mark.parametrize"):
                    continue
                argnames = [arg.strip() for arg in ast.literal_eval(decorator.args[0]).split(",")]
                if not {"gold", "pred"} <= set(argnames):
                    continue
                rows = eval(compile(ast.Expression(decorator.args[1]), name, "eval"), {"math": math})
                template = {**DEFAULTS, **options(function)}
                for values in rows:
                    bound = dict(zip(argnames, values))
                    case = {
                        key: bound[value["param"]] if isinstance(value, dict) else value
                        for key, value in template.items()
                    }
                    expected = bound.get("expected", bound.get("result"))
                    print(
                        json.dumps(
                            {
                                "source": f"{name}::{function.name}",
                                "gold": bound["gold"],
                                "pred": bound["pred"],
                                "expected": int(expected),
                                **case,
                            }
                        )
                    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
