"""The shape of charrnn's code: what is over the limits the project keeps.

    python scripts/shape.py            # print modules, functions and classes over the limits
    python scripts/shape.py --check    # the same, and exit 1 when any limit is broken

A module counts its lines; a function or class counts `end_lineno - lineno + 1` of its `def` /
`class` node, docstrings and comments included. Only top-level nodes and the nodes directly in a
top-level class are measured (a helper nested inside a function is part of that function).
Run it before you commit.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULE_LINES = 300
FUNCTION_LINES = 40
CLASS_LINES = 200
# The trainer is the class most likely to regrow: its size is always printed.
WATCHED_CLASS = "Trainer"


def measured_nodes(tree: ast.Module):
    """(qualified name, node) of each top-level def/class and each def/class in a top-level
    class."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name, node
        if isinstance(node, ast.ClassDef):
            for inner in node.body:
                if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    yield f"{node.name}.{inner.name}", inner


def shape(package: Path) -> dict[str, list[tuple[int, str]]]:
    """Every module, function and class under `package` over its limit, largest first, plus the
    watched class's size (under "watched")."""
    found: dict[str, list[tuple[int, str]]] = {"modules": [], "functions": [], "classes": [],
                                               "watched": []}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).as_posix()
        source = path.read_text(encoding="utf-8")
        lines = len(source.splitlines())
        if lines > MODULE_LINES:
            found["modules"].append((lines, rel))
        for name, node in measured_nodes(ast.parse(source, filename=rel)):
            size = node.end_lineno - node.lineno + 1
            where = f"{rel}:{name}"
            if isinstance(node, ast.ClassDef):
                if node.name == WATCHED_CLASS and "." not in name:
                    found["watched"].append((size, where))
                if size > CLASS_LINES:
                    found["classes"].append((size, where))
            elif size > FUNCTION_LINES:
                found["functions"].append((size, where))
    for rows in found.values():
        rows.sort(key=lambda row: (-row[0], row[1]))
    return found


def report(found: dict[str, list[tuple[int, str]]]) -> tuple[str, int]:
    """The printed table and the number of broken limits."""
    out = []
    sections = (("modules", f"modules over {MODULE_LINES} lines"),
                ("functions", f"functions over {FUNCTION_LINES} lines"),
                ("classes", f"classes over {CLASS_LINES} lines"))
    for key, title in sections:
        out.append(f"{title}: {len(found[key]) or 'none'}")
        out.extend(f"  {size:5d}  {where}" for size, where in found[key])
    for size, where in found["watched"]:
        out.append(f"{WATCHED_CLASS}: {size} lines ({where}, limit {CLASS_LINES})")
    broken = sum(len(found[key]) for key, _ in sections)
    out.append(f"shape: {'ok' if broken == 0 else f'{broken} over the limits'} "
               f"(modules <= {MODULE_LINES}, functions <= {FUNCTION_LINES}, "
               f"classes <= {CLASS_LINES})")
    return "\n".join(out), broken


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when any module, function or class is over its limit")
    parser.add_argument("package", nargs="?", type=Path, default=ROOT / "charrnn",
                        help="the package to measure (default: charrnn/)")
    args = parser.parse_args(argv)
    text, broken = report(shape(args.package.resolve()))
    print(text)
    return 1 if args.check and broken else 0


if __name__ == "__main__":
    sys.exit(main())
