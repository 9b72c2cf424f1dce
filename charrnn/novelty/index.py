"""The suffix index of a training split: built on first use, cached in the prepared
directory, memory-mapped when read.

    index = open_index(PreparedData("data/corpus"), progress=True)
    index.n, index.text, index.sa          # the split's ids and its suffix array
    index.line_of(1234)                    # the split's line holding character 1234

The cache is DIR/novelty/: index.json (what it was built from, where each array lies) and
index.bin (the arrays of build.py side by side). index.json records the split's sha256
and its file identity (size, modification time, inode): an unchanged identity is trusted,
a changed one is checked against the checksum, and an index of another split is rebuilt.
Building and opening happen under the prepared directory's lock (the one `prepare` takes),
so two builders take turns and the second reuses the first's index; index.json goes last
and is removed first, so a half-written index is never read. A reader maps the files while
it holds the lock, and keeps what it mapped however the cache changes afterwards.

A build runs at 5 to 11 MB of split per second on two shared CPU cores, with a peak near
1.1 GB whatever the split's size (scripts/bench_novelty.py), and the index takes 12 bytes per
character on disk (sa, isa and lcp, 4 bytes each).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from ..core.bars import bar_terminal, progress_bar
from ..core.errors import CharRNNError, DataError
from ..core.files import DirectoryLock, atomic_write, atomic_write_text, remove_stale
from ..corpus.prepared import PreparedData
from ..corpus.text import TextOptions
from ..corpus.vocab import Vocab
from .build import (
    BLOCK_CHARS,
    FANOUT,
    OVERLAP,
    Layout,
    MemorySink,
    block_ranges,
    build_blocks,
    layout_of,
    require_pydivsufsort,
)

INDEX_DIR = "novelty"
FORMAT_VERSION = 1
LINE_EVERY = 1 << 16  # characters per newline count: a line number is one short count away
SCAN_CHARS = LINE_EVERY * 256  # characters per read while hashing the split


class SuffixIndex:
    """A text's suffix array in blocks (build.py), with its inverse, LCP array and LCP
    pyramid, and newline counts for line numbers. Arrays may be memory-mapped."""

    def __init__(self, text: np.ndarray, vocab: Vocab | None, arrays: dict,
                 levels: list[np.ndarray], layout: Layout, line_counts: np.ndarray,
                 newline_id: int | None, built: bool = False, seconds: float = 0.0):
        self.text, self.vocab, self.layout = np.asarray(text), vocab, layout
        self.sa, self.isa, self.lcp = (np.asarray(arrays[k]) for k in ("sa", "isa", "lcp"))
        self.levels = [self.lcp] + [np.asarray(level) for level in levels]
        self.starts = np.array([s for s, _ in layout.blocks], dtype=np.int64)
        self.ends = np.array([e for _, e in layout.blocks], dtype=np.int64)
        self.offsets = layout.offsets
        self.line_counts, self.newline_id = np.asarray(line_counts), newline_id
        self.built, self.seconds = built, seconds  # whether this call built it, and how long
        self.options = TextOptions()  # how the training text was read (open_index: its own)
        self.root: Path | None = None  # the prepared directory (open_index)

    @property
    def n(self) -> int:
        return len(self.text)

    @property
    def exact_up_to(self) -> int | None:
        """The longest span reported exactly (None: all are), see build.py."""
        return None if len(self.layout.blocks) == 1 else self.overlap

    overlap = OVERLAP

    def line_of(self, pos: int) -> int:
        """The 1-based line of the text that holds character `pos`."""
        if self.newline_id is None:
            return 1
        group = pos // LINE_EVERY
        before = np.count_nonzero(self.text[group * LINE_EVERY:pos] == self.newline_id)
        return int(self.line_counts[group]) + int(before) + 1


def in_memory_index(ids: np.ndarray, vocab: Vocab | None = None,
                    block_chars: int = BLOCK_CHARS, overlap: int = OVERLAP,
                    fanout: int = FANOUT) -> SuffixIndex:
    """The index of `ids` built in memory and not cached (small texts, tests; small
    `block_chars` exercise the blocks)."""
    ids = np.ascontiguousarray(ids)
    if not len(ids):
        raise DataError("cannot index an empty text")
    layout = layout_of(block_ranges(len(ids), block_chars, overlap), fanout)
    sink = MemorySink(layout)
    levels = build_blocks(lambda a, b: ids[a:b].copy(), layout, sink)
    newline_id = vocab.index.get("\n") if vocab is not None else None
    lines = _line_counts(ids, newline_id)
    index = SuffixIndex(ids, vocab, sink.arrays, levels, layout, lines, newline_id, built=True)
    index.overlap = overlap
    return index


def _line_counts(ids: np.ndarray, newline_id: int | None) -> np.ndarray:
    """counts[g]: newlines in ids[:g * LINE_EVERY]."""
    groups = -(-len(ids) // LINE_EVERY)
    counts = np.zeros(groups + 1, dtype=np.int64)
    if newline_id is not None:
        for g in range(groups):
            counts[g + 1] = np.count_nonzero(ids[g * LINE_EVERY:(g + 1) * LINE_EVERY] == newline_id)
    return np.cumsum(counts)


# ----------------------------------------------------------------------------------------
# the cache in a prepared directory


def open_index(data: PreparedData, split: str = "train", progress: bool = False,
               echo=None) -> SuffixIndex:
    """The index of `data`'s split, from the cache or built into it first (`echo` is told
    when it is built). The split is memory-mapped, and so are the index's arrays."""
    folder = data.root / INDEX_DIR
    try:
        lock = DirectoryLock(data.root, "prepared directory", wait=True).__enter__()
    except CharRNNError as e:
        raise DataError(f"cannot use the novelty index of {data.root}: {e}") from None
    try:
        text = data.split(split, mapped=True)
        path = data.root / f"{split}.bin"
        identity = _identity(path)
        info = _cached(folder, path, identity)
        built, seconds = info is None, 0.0
        if built:
            if echo:
                echo(f"novelty: indexing the {split} split of {data.root} "
                     f"({len(text):,} characters), once")
            started = time.perf_counter()
            info = _build(folder, path, text, data, split, identity, progress)
            seconds = time.perf_counter() - started
        index = _open(folder, info, text, data.vocab, built, seconds)
        index.options = data.options
        index.root = data.root
        return index
    finally:
        lock.__exit__(None, None, None)


def _identity(path: Path) -> dict:
    st = os.stat(path)
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _cached(folder: Path, split_path: Path, identity: dict) -> dict | None:
    """The cached index.json when it describes this split and its data file is whole."""
    try:
        info = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        whole = (info["format_version"] == FORMAT_VERSION
                 and os.path.getsize(folder / "index.bin") == info["file_bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not whole:
        return None
    if info["split"]["identity"] == identity:
        return info
    if _sha256(split_path) != info["split"]["sha256"]:
        return None
    # The same contents in a new file (prepared again): note it, so the next open is quick.
    info["split"]["identity"] = identity
    atomic_write_text(folder / "index.json", json.dumps(info, indent=1))
    return info


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def _build(folder: Path, split_path: Path, text: np.ndarray, data: PreparedData,
           split: str, identity: dict, progress: bool) -> dict:
    """Build the index of the split into the cache (under the lock); its index.json."""
    require_pydivsufsort()  # before anything is written
    layout = layout_of(block_ranges(len(text)))
    newline_id = data.vocab.index.get("\n")
    bar = progress_bar(len(text) + layout.ranks, progress and bar_terminal(sys.stderr),
                       "novelty index")
    try:
        folder.mkdir(exist_ok=True)
        remove_stale(folder)
        (folder / "index.json").unlink(missing_ok=True)
        sha, lines = _scan(split_path, text.dtype, newline_id, bar)
        item = layout.dtype.itemsize
        sizes = {"lines": len(lines) * 8, "sa": layout.ranks * item, "isa": layout.ranks * item,
                 "lcp": layout.ranks * item}
        sizes.update({f"level{j + 1}": s * item for j, s in enumerate(layout.level_sizes)})
        offsets = dict(zip(sizes, np.cumsum([0] + list(sizes.values()))[:-1].tolist()))

        def write(f):
            f.truncate(sum(sizes.values()))
            f.seek(0)
            f.write(memoryview(lines))
            sink = _FileSink(f, offsets, item)
            levels = build_blocks(lambda a, b: _read(split_path, text.dtype, a, b), layout,
                                  sink, bar)
            for j, level in enumerate(levels):
                sink.put(f"level{j + 1}", 0, level)

        atomic_write(folder / "index.bin", write, what=f"the novelty index in {folder}",
                     error=DataError)
    except OSError as e:
        raise DataError(f"cannot write the novelty index into {folder}: "
                        f"{e.strerror or e}") from None
    finally:
        bar.close()
    info = {
        "format_version": FORMAT_VERSION,
        "kind": "charrnn novelty index",
        "split": {"name": split, "chars": len(text), "dtype": text.dtype.name,
                  "sha256": sha, "identity": identity},
        "blocks": layout.blocks, "overlap": OVERLAP, "fanout": layout.fanout,
        "dtype": layout.dtype.name, "level_sizes": layout.level_sizes,
        "newline_id": newline_id, "line_every": LINE_EVERY,
        "offsets": offsets, "file_bytes": sum(sizes.values()),
    }
    atomic_write_text(folder / "index.json", json.dumps(info, indent=1))
    return info


class _FileSink:
    """build.py's arrays written at their places in the open data file."""

    def __init__(self, f, offsets: dict, itemsize: int):
        self.f, self.offsets, self.itemsize = f, offsets, itemsize

    def put(self, name: str, start: int, values: np.ndarray) -> None:
        self.f.seek(self.offsets[name] + start * self.itemsize)
        self.f.write(memoryview(np.ascontiguousarray(values)))


def _read(path: Path, dtype: np.dtype, start: int, end: int) -> np.ndarray:
    """Characters [start, end) of a split file, read (not mapped: a build's memory stays
    its own arrays, not pages of the split)."""
    out = np.empty(end - start, dtype=dtype)
    with open(path, "rb") as f:
        f.seek(start * dtype.itemsize)
        if f.readinto(memoryview(out).cast("B")) != out.nbytes:
            raise DataError(f"{path} was cut short while being indexed; prepare the corpus again")
    return out


def _scan(path: Path, dtype: np.dtype, newline_id: int | None, bar) -> tuple[str, np.ndarray]:
    """One pass over the split: its sha256 and its newline counts (_line_counts)."""
    digest, counts = hashlib.sha256(), [np.zeros(1, dtype=np.int64)]
    with open(path, "rb") as f:
        while block := f.read(SCAN_CHARS * dtype.itemsize):
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


def _open(folder: Path, info: dict, text: np.ndarray, vocab: Vocab, built: bool,
          seconds: float) -> SuffixIndex:
    """Map the cached arrays (read-only: a reader never writes the cache)."""
    path, dtype, offsets = folder / "index.bin", np.dtype(info["dtype"]), info["offsets"]
    layout = Layout([tuple(b) for b in info["blocks"]], dtype, info["fanout"])
    if layout.level_sizes != info["level_sizes"] or info["split"]["chars"] != len(text):
        raise DataError(f"{folder}/index.json is not consistent; delete {folder} and try again")

    def mapped(name, count, dt=dtype):
        if count == 0:
            return np.zeros(0, dtype=dt)
        return np.memmap(path, dtype=dt, mode="r", offset=offsets[name], shape=(count,))

    arrays = {name: mapped(name, layout.ranks) for name in ("sa", "isa", "lcp")}
    levels = [mapped(f"level{j + 1}", s) for j, s in enumerate(layout.level_sizes)]
    lines = mapped("lines", -(-len(text) // LINE_EVERY) + 1, np.dtype(np.int64))
    index = SuffixIndex(text, vocab, arrays, levels, layout, lines, info["newline_id"],
                        built, seconds)
    index.overlap = info["overlap"]
    return index
