"""scripts/shape.py counts as the project's size limits are stated: top-level and class-level
def/class nodes, end_lineno - lineno + 1, docstrings and comments included."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("shape", ROOT / "scripts" / "shape.py")
shape = importlib.util.module_from_spec(spec)
spec.loader.exec_module(shape)


def body(lines: int) -> str:
    """What follows the def line of a function `lines` long: a docstring, a comment, code."""
    return '    """Doc."""\n    # why\n' + "    x = 1\n" * (lines - 3)


def test_limits_are_counted_on_def_and_class_nodes(tmp_path, capsys):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "ok.py").write_text("def fits():\n" + body(40))
    (package / "long.py").write_text(
        "import os\n\n\ndef too_long():\n" + body(41)
        + "\n\nclass Big:\n    def method():\n" + body(40).replace("    ", "        ")
        + "\n    def nested_is_its_own():\n        def inner():\n" + "            y = 2\n" * 45)
    (package / "huge.py").write_text("x = 1\n" * 301)
    found = shape.shape(package)
    assert found["modules"] == [(301, "pkg/huge.py")]
    assert found["functions"] == [(47, "pkg/long.py:Big.nested_is_its_own"),
                                  (41, "pkg/long.py:too_long")]
    assert found["classes"] == []
    assert shape.main([str(package)]) == 0
    assert shape.main(["--check", str(package)]) == 1
    assert "3 over the limits" in capsys.readouterr().out
    (package / "huge.py").unlink()
    (package / "long.py").unlink()
    assert shape.main(["--check", str(package)]) == 0
