"""Writing the novelty cache: index.bin built from the split, then index.json.

    info = build_cache(folder, split_path, text, split_file, identity, expected, progress)

Called by index.py under the prepared directory's lock. index.json is removed first and
written last, so a half-written index is never read; the split is read from the file
index.py holds open (the one it maps), never by its name again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from ..core.bars import bar_terminal, progress_bar
from ..core.errors import DataError
from ..core.escape import shown
from ..core.files import atomic_write, atomic_write_text, remove_stale
from .build import build_blocks, layout_of, require_pydivsufsort
from .checks import LINE_EVERY

SCAN_CHARS = LINE_EVERY * 256  # characters per read while hashing the split


def sha256_of(f) -> str:
    digest = hashlib.sha256()
    f.seek(0)
    while block := f.read(1 << 24):
        digest.update(block)
    return digest.hexdigest()


def build_cache(folder: Path, split_path: Path, text: np.ndarray, split_file, identity: dict,
           expected: dict, progress: bool) -> dict:
    """Build the index of the split into the cache (under the lock); its index.json, the
    header `expected` with the split's checksum and identity."""
    require_pydivsufsort()  # before anything is written
    layout = layout_of([tuple(b) for b in expected["blocks"]])
    offsets, item = expected["offsets"], layout.dtype.itemsize
    bar = progress_bar(len(text) + layout.ranks, progress and bar_terminal(sys.stderr),
                       "novelty index")
    try:
        folder.mkdir(exist_ok=True)
        remove_stale(folder)
        _clear(folder)
        sha, lines = _scan(split_file, text.dtype, expected["newline_id"], bar)

        def write(f):
            f.truncate(expected["file_bytes"])
            f.seek(0)
            f.write(memoryview(lines))
            sink = _FileSink(f, offsets, item)
            levels = build_blocks(lambda a, b: _read(split_file, split_path, text.dtype, a, b),
                                  layout, sink, bar)
            for j, level in enumerate(levels):
                sink.put(f"level{j + 1}", 0, level)

        atomic_write(folder / "index.bin", write, what=f"the novelty index in {folder}",
                     error=DataError)
    except OSError as e:
        raise DataError(f"cannot write the novelty index into {shown(folder)}: "
                        f"{e.strerror or e}") from None
    finally:
        bar.close()
    info = {**expected, "split": {**expected["split"], "sha256": sha, "identity": identity}}
    atomic_write_text(folder / "index.json", json.dumps(info, indent=1))
    return info


def _clear(folder: Path) -> None:
    """index.json first (a half-built index is never read), then anything but a regular
    file where index.bin goes (a FIFO planted there): the cache is charrnn's own."""
    for name in ("index.json", "index.bin"):
        path = folder / name
        if path.is_symlink() or (path.exists() and not path.is_dir()
                                 and (name == "index.json" or not path.is_file())):
            path.unlink()
        elif path.is_dir():
            raise DataError(f"{shown(path)} is a directory; remove it, and the novelty index "
                            f"is built again")


class _FileSink:
    """build.py's arrays written at their places in the open data file."""

    def __init__(self, f, offsets: dict, itemsize: int):
        self.f, self.offsets, self.itemsize = f, offsets, itemsize

    def put(self, name: str, start: int, values: np.ndarray) -> None:
        self.f.seek(self.offsets[name] + start * self.itemsize)
        self.f.write(memoryview(np.ascontiguousarray(values)))


def _read(split_file, path: Path, dtype: np.dtype, start: int, end: int) -> np.ndarray:
    """Characters [start, end) of the open split file, read (not mapped: a build's memory
    stays its own arrays, not pages of the split)."""
    out = np.empty(end - start, dtype=dtype)
    view, at, offset = memoryview(out).cast("B"), 0, start * dtype.itemsize
    while at < len(view):
        got = os.preadv(split_file.fileno(), [view[at:]], offset + at)
        if got == 0:
            raise DataError(f"{shown(path)} was cut short while being indexed; prepare the "
                            f"corpus again")
        at += got
    return out


def _scan(split_file, dtype: np.dtype, newline_id: int | None, bar) -> tuple[str, np.ndarray]:
    """One pass over the split: its sha256 and its newline counts (_line_counts)."""
    digest, counts = hashlib.sha256(), [np.zeros(1, dtype=np.int64)]
    split_file.seek(0)
    while block := split_file.read(SCAN_CHARS * dtype.itemsize):
        digest.update(block)
        ids = np.frombuffer(block, dtype=dtype)
        if newline_id is None:
            counts.append(np.zeros(-(-len(ids) // LINE_EVERY), dtype=np.int64))
        else:
            pad = np.concatenate([ids == newline_id,
                                  np.zeros(-len(ids) % LINE_EVERY, dtype=bool)])
            counts.append(pad.reshape(-1, LINE_EVERY).sum(axis=1, dtype=np.int64))
        bar.update(len(ids))
    return digest.hexdigest(), np.cumsum(np.concatenate(counts))
