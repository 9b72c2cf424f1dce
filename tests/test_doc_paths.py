"""Every `.py` path the README, docs/*.md or charrnn's docstrings and comments name exists.

A path is a run like `charrnn/core/config.py`, `inference/sample.py` or `stepper.py`. It counts as
existing when it resolves against the repository root, against charrnn/, or against the folder of
the file that names it (so a bare `stepper.py` in inference/sample.py means inference/stepper.py).
URLs are not paths. In charrnn's Python files only docstrings and comments are read: a string the
code uses is the code's business, and its tests'.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "charrnn"
# A name ending in .py, with optional folders before it; not the tail of a longer word, a glob
# (`test_*.py`) or a URL (checked separately below).
PY_PATH = re.compile(r"(?<![\w/.*-])((?:[\w.-]+/)*[\w-]+\.py)\b")
# Text files in charrnn/ that are not Python are read whole: the page's scripts and the configs
# mention .py files only in comments.
OTHER_TEXT = {".js", ".html", ".css", ".toml"}
def py_paths(text: str) -> list[tuple[int, str]]:
    """(line number, path) of each .py path in `text`, URLs left out."""
    found = []
    for match in PY_PATH.finditer(text):
        line_start = text.rfind("\n", 0, match.start()) + 1
        word_start = max(text.rfind(" ", line_start, match.start()),
                         text.rfind("(", line_start, match.start())) + 1
        if "://" in text[word_start:match.start()]:
            continue
        found.append((text.count("\n", 0, match.start()) + 1, match.group(1)))
    return found


def python_prose(source: str) -> list[tuple[int, str]]:
    """(first line, text) of each comment and docstring in a Python module."""
    pieces = [(token.start[0], token.string)
              for token in tokenize.generate_tokens(io.StringIO(source).readline)
              if token.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                pieces.append((body[0].lineno, body[0].value.value))
    return pieces


def named_paths() -> list[tuple[Path, int, str]]:
    """(file, line, path) for every .py path named in the docs and in charrnn's prose."""
    named = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        named += [(doc, line, path) for line, path in py_paths(doc.read_text(encoding="utf-8"))]
    for file in sorted(PACKAGE.rglob("*")):
        if file.suffix == ".py":
            for first, text in python_prose(file.read_text(encoding="utf-8")):
                named += [(file, first + line - 1, path) for line, path in py_paths(text)]
        elif file.suffix in OTHER_TEXT:
            text = file.read_text(encoding="utf-8")
            named += [(file, line, path) for line, path in py_paths(text)]
    return named


def exists(path: str, named_in: Path) -> bool:
    return any((base / path).is_file() for base in (ROOT, PACKAGE, named_in.parent))


def test_the_finder_reads_paths_as_paths():
    text = ("see charrnn/core/config.py, `inference/sample.py` and stepper.py;\n"
            "not test_*.py, https://example.org/x/model.py or (http://h/y.py), nor .py alone")
    assert [path for _, path in py_paths(text)] == [
        "charrnn/core/config.py", "inference/sample.py", "stepper.py"]
    assert [line for line, _ in py_paths(text)] == [1, 1, 1]


def test_prose_is_comments_and_docstrings_only():
    source = ('"""Module: see a.py."""\n'
              'X = "b.py"  # c.py\n'
              'def f():\n'
              '    """d.py"""\n'
              '    return "e.py"\n')
    texts = [path for _, text in python_prose(source) for _, path in py_paths(text)]
    assert sorted(texts) == ["a.py", "c.py", "d.py"]


def test_a_stale_path_is_caught(tmp_path):
    named_in = PACKAGE / "inference" / "sample.py"
    assert exists("stepper.py", named_in)            # beside the file that names it
    assert exists("inference/stepper.py", named_in)  # from charrnn/
    assert exists("charrnn/core/config.py", named_in)  # from the repository root
    assert not exists("config.py", named_in)         # core/config.py, not inference/
    assert not exists("charrnn/config.py", named_in)


def test_every_named_py_path_exists():
    named = named_paths()
    assert len(named) > 20  # the finder still finds the docs' many script names
    stale = [f"{file.relative_to(ROOT).as_posix()}:{line}: {path}"
             for file, line, path in named if not exists(path, file)]
    if stale:
        pytest.fail("paths that do not exist:\n" + "\n".join(stale), pytrace=False)
