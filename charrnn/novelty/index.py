"""The suffix index of a training split: built on first use, cached in the prepared
directory, memory-mapped when read.

    index = open_index(PreparedData("data/corpus"), progress=True)
    index.n, index.text, index.sa          # the split's ids and its suffix array
    index.line_of(1234)                    # the split's line holding character 1234

The cache is DIR/novelty/: index.json (what it was built from, where each array lies) and
index.bin (the arrays of build.py side by side). index.json records the split's sha256
and its file identity (size, modification and change times, inode): an unchanged identity
is trusted, a changed one is checked against the checksum, and an index of another split is
rebuilt. The cache is untrusted input all the same (checks.py): a header that is not exactly
what a build writes, or arrays that fail a spot-check, are reported in one line and built
again. A held lock is waited for with a line naming its holder, at most LOCK_WAIT seconds.
The files mapped stay open, and `check_intact` refuses, before each use, one truncated in
place (touching its lost pages would kill the process with SIGBUS).
Building and opening happen under the prepared directory's lock (the one `prepare` takes),
so two builders take turns and the second reuses the first's index; index.json goes last
and is removed first, so a half-written index is never read. A reader maps the files while
it holds the lock, and keeps what it mapped however the cache changes afterwards.

A build runs at 5 to 11 MB of split per second on two shared CPU cores, with a peak near
1.1 GB whatever the split's size (scripts/bench_novelty.py), and the index takes 12 bytes per
character on disk (sa, isa and lcp, 4 bytes each).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from ..core.errors import CharRNNError, DataError
from ..core.escape import shown
from ..core.files import DirectoryLock, atomic_write_text, open_regular
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
)
from .checks import LINE_EVERY, expected_header, header_problem, spot_problem
from .writer import build_cache, sha256_of

INDEX_DIR = "novelty"
LOCK_WAIT = 600.0  # seconds a novelty check waits for another process's build at most


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
        self.mapped: list[tuple] = []  # (open file, bytes mapped, path): check_intact

    def check_intact(self) -> None:
        """Refuse to go on when a mapped file was truncated in place since it was opened:
        touching a page past its new end would kill the process (SIGBUS). Replacing a
        file by rename is harmless (the old one stays mapped), so only the open file's
        own size is checked, before each use."""
        for f, needed, path in self.mapped:
            size = os.fstat(f.fileno()).st_size
            if size < needed:
                raise DataError(f"{shown(path)} was cut short while in use ({size:,} bytes, "
                                f"{needed:,} mapped); the novelty check stops here: run it "
                                f"again (the index is rebuilt if it must be)")

    @property
    def n(self) -> int:
        return len(self.text)

    @property
    def exact_up_to(self) -> int | None:
        """The longest span reported exactly (None: all are), see build.py."""
        return None if len(self.layout.blocks) == 1 else self.overlap

    overlap = OVERLAP

    documents = None  # the prepared directory's Documents, when it has many

    def place_of(self, pos: int) -> tuple[str, int] | None:
        """(the source file, its 1-based line) that holds character `pos`, for a text of
        many documents; None for one text."""
        docs = self.documents
        if docs is None:
            return None
        i = docs.locate(pos)
        start = int(docs.start[i])
        return docs.name(i), int(docs.line[i]) + self.line_of(pos) - self.line_of(start)

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
               echo=None, lock_wait: float = LOCK_WAIT) -> SuffixIndex:
    """The index of `data`'s split, from the cache or built into it first (`echo` is told
    when it is built, why a cached one is not used, and when another process holds the
    directory's lock; past `lock_wait` seconds of that, one error). The split is
    memory-mapped, and so are the index's arrays."""
    say = echo or (lambda line: None)
    try:
        lock = DirectoryLock(data.root, "prepared directory", wait=True, timeout=lock_wait,
                             on_wait=lambda line: say(f"novelty: {line}")).__enter__()
    except CharRNNError as e:
        raise DataError(f"cannot use the novelty index of {shown(data.root)}: {e}") from None
    try:
        text, split_file = _map_split(data, split)
        split_of = (split, split_file, _identity(split_file),
                    expected_header(len(text), text.dtype, data.vocab.index.get("\n"), split))
        index = _cached_index(data, text, split_of, say)
        if index is None:
            index = _build_index(data, text, split_of, progress, say)
        index.mapped.insert(0, (split_file, len(text) * text.dtype.itemsize,
                                data.root / f"{split}.bin"))
        index.options = data.options
        index.root = data.root
        if split == "train" and data.n_documents > 1:  # train starts the text: same offsets
            index.documents = data.documents()
        return index
    finally:
        lock.__exit__(None, None, None)


def _cached_index(data: PreparedData, text: np.ndarray, split_of: tuple,
                  say) -> SuffixIndex | None:
    """The cached index of the split (`split_of`: its name, open file, identity and expected
    header), or None when there is none to use; `say` is told why a damaged one is not."""
    folder = data.root / INDEX_DIR
    _, split_file, identity, expected = split_of
    info, problem = _cached(folder, split_file, identity, expected)
    index = None if info is None else _open(folder, info, text, data.vocab, False, 0.0)
    problem = problem or (index is not None and spot_problem(index)) or None
    if problem:
        say(f"novelty: the cached index in {shown(folder)} is damaged ({problem}); "
            f"building it again")
        return None
    return index


def _build_index(data: PreparedData, text: np.ndarray, split_of: tuple, progress: bool,
                 say) -> SuffixIndex:
    """Build the split's index into the cache, and map it back."""
    folder = data.root / INDEX_DIR
    split, split_file, identity, expected = split_of
    say(f"novelty: indexing the {split} split of {shown(data.root)} "
        f"({len(text):,} characters), once")
    started = time.perf_counter()
    info = build_cache(folder, data.root / f"{split}.bin", text, split_file, identity,
                       expected, progress)
    index = _open(folder, info, text, data.vocab, True, time.perf_counter() - started)
    if index is None:
        raise DataError(f"the novelty index just built in {shown(folder)} cannot be "
                        f"read back; is something else writing there?")
    return index


def _map_split(data: PreparedData, split: str) -> tuple[np.ndarray, object]:
    """The split mapped read-only from a file kept open, whose size check_intact checks."""
    size = data.meta["splits"].get(split, 0)
    path = data.root / f"{split}.bin"
    if not isinstance(size, int) or size <= 0:
        raise DataError(f"{shown(data.root)} has no {split} split")
    dtype = np.dtype(data.meta["dtype"]).newbyteorder("<")
    try:
        f = open_regular(path, f"the {split} split")
    except FileNotFoundError:
        raise DataError(f"{shown(path)} is missing; prepare the corpus again") from None
    except CharRNNError as e:
        raise DataError(str(e)) from None
    if os.fstat(f.fileno()).st_size != size * dtype.itemsize:
        f.close()
        raise DataError(f"{shown(path)} does not have the size meta.json gives; prepare the "
                        f"corpus again")
    return np.memmap(f, dtype=dtype, mode="r", shape=(size,)), f


def _identity(f) -> dict:
    """What changes when the split is rewritten: a file edited in place with its
    modification time set back still gets a new ctime (which no user can set)."""
    st = os.fstat(f.fileno())
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "inode": st.st_ino}


def _cached(folder: Path, split_file, identity: dict, expected: dict
            ) -> tuple[dict | None, str | None]:
    """(the cached index.json, None) when it is exactly the header a build of this split
    writes and index.bin has its size; (None, why not) when it is damaged; (None, None)
    when there is none, or it is the index of other contents."""
    try:
        with open_regular(folder / "index.json", "index.json") as f:
            raw = f.read(1 << 24)
        info = json.loads(raw.decode("utf-8"))
        bin_size = os.stat(folder / "index.bin").st_size
    except FileNotFoundError:
        return None, None
    except (CharRNNError, OSError, ValueError, RecursionError) as e:
        return None, f"unreadable: {shown(str(e))[:80]}"
    problem = header_problem(info, expected)
    if problem is None and bin_size != expected["file_bytes"]:
        problem = f"index.bin has {bin_size:,} bytes, not {expected['file_bytes']:,}"
    if problem:
        return None, problem
    if info["split"]["identity"] == identity:
        return info, None
    if sha256_of(split_file) != info["split"]["sha256"]:
        return None, None
    # The same contents in a new file (prepared again): note it, so the next open is quick.
    info["split"]["identity"] = identity
    atomic_write_text(folder / "index.json", json.dumps(info, indent=1))
    return info, None


def _open(folder: Path, info: dict, text: np.ndarray, vocab: Vocab, built: bool,
          seconds: float) -> SuffixIndex | None:
    """Map the cached arrays read-only from index.bin, kept open (check_intact); None when
    index.bin is not the file index.json describes."""
    dtype, offsets = np.dtype(info["dtype"]), info["offsets"]
    layout = Layout([tuple(b) for b in info["blocks"]], dtype, info["fanout"])
    try:
        f = open_regular(folder / "index.bin", "index.bin")
    except (CharRNNError, OSError):
        return None
    if os.fstat(f.fileno()).st_size != info["file_bytes"]:
        f.close()
        return None

    def mapped(name, count, dt=dtype):
        if count == 0:
            return np.zeros(0, dtype=dt)
        return np.memmap(f, dtype=dt, mode="r", offset=offsets[name], shape=(count,))

    arrays = {name: mapped(name, layout.ranks) for name in ("sa", "isa", "lcp")}
    levels = [mapped(f"level{j + 1}", s) for j, s in enumerate(layout.level_sizes)]
    lines = mapped("lines", -(-len(text) // LINE_EVERY) + 1, np.dtype(np.int64))
    index = SuffixIndex(text, vocab, arrays, levels, layout, lines, info["newline_id"],
                        built, seconds)
    index.overlap = info["overlap"]
    index.mapped.append((f, info["file_bytes"], folder / "index.bin"))
    return index
