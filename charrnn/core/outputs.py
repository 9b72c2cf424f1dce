"""The output guard: no command writes over a file it reads, or over a file charrnn needs.

    guard_output(out, reads=[checkpoint])      # before any work; raises CharRNNError

`charrnn export RUN -o RUN/best.pt` (a typo for .onnx) once replaced the checkpoint it
exported, and `charrnn plot RUN -o RUN/metrics.jsonl` the metrics it drew. Every command
that writes a file it is told to write checks the path here first. Paths are compared
resolved (a symbolic link anywhere on the way is followed) and by inode (a hard link has
another name for the same file), so neither kind of link slips through.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from .errors import CharRNNError
from .escape import shown
from .runs import RUN_FILES, is_run

# The files a run directory and a prepared directory hold that charrnn reads again.
RUN_NEEDS = RUN_FILES + (".lock", "step-*.pt")
PREPARED_NEEDS = ("meta.json", "vocab.json", "train.bin", "val.bin", "test.bin", ".lock")
NOVELTY_NEEDS = ("index.json", "index.bin")


class OutputError(CharRNNError):
    """An output path that would destroy an input or a file charrnn needs."""


def guard_output(path: str | Path, reads=(), what: str = "output") -> Path:
    """`path` as given, once it is known not to replace a file in `reads` (the files this
    command reads) nor a file of a run or prepared directory; "-" (standard output) passes."""
    raw = os.fspath(path)
    if raw == "-":
        return Path(raw)
    if raw.endswith(("/", os.sep)):
        raise OutputError(f"{what} {shown(raw)} ends in '/', which names a directory; give "
                          f"a file name")
    real = Path(os.path.realpath(raw))
    identity = _identity(raw)
    for read in reads:
        if read is None or os.fspath(read) == "-":
            continue
        if real == Path(os.path.realpath(read)) or (identity and identity == _identity(read)):
            raise OutputError(f"{what} {shown(raw)} is {shown(read)}, which this command "
                              f"reads; writing it would destroy it: choose another file name")
    needed = needed_by(real)
    if needed:
        raise OutputError(f"{what} {shown(raw)} would replace {needed}; choose another file "
                          f"name (nothing was written)")
    return Path(raw)


def needed_by(real: Path) -> str | None:
    """What needs the file at the resolved path `real`, in words, or None."""
    parent, name = real.parent, real.name
    if is_run(parent) and _matches(name, RUN_NEEDS):
        return f"the {name} of run {shown(parent)}"
    if (parent / "meta.json").is_file() and _matches(name, PREPARED_NEEDS):
        return f"the {name} of the prepared directory {shown(parent)}"
    if (parent.name == "novelty" and (parent.parent / "meta.json").is_file()
            and _matches(name, NOVELTY_NEEDS)):
        return f"the novelty index of {shown(parent.parent)}"
    return None


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _identity(path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino
