"""The size bar of the code base: modules of at most 400 lines, functions of at most 60.

Run ``python tools/check_size.py`` (``tests/test_layout.py`` runs it too). A
function may pass the bar only with a ``# size: <why>`` comment on its
``def`` line or the line above, for tables and ``match`` dispatchers, which
read better whole.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "securechat"


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _excused(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    around = lines[max(first - 2, 0) : node.lineno]
    return any("# size:" in line for line in around)


def problems(package: Path = PACKAGE) -> list[str]:
    """One line per module or function over the bar."""
    found: list[str] = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        where = path.relative_to(package.parent)
        if len(lines) > MAX_MODULE_LINES:
            found.append(f"{where}: {len(lines)} lines (module limit {MAX_MODULE_LINES})")
        for node in _functions(ast.parse(text)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES and not _excused(lines, node):
                found.append(f"{where}:{node.lineno}: {node.name} is {length} lines (limit {MAX_FUNCTION_LINES})")
    return found


if __name__ == "__main__":
    report = problems()
    print("\n".join(report) or "every module and function is within the bar")
    sys.exit(1 if report else 0)
