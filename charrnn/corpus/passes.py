"""The two passes of `prepare` over a corpus (inputs.py): count, then encode.

    counted = count(corpus, options, split_on="file", strict=False)
    encode(corpus, counted, files, table, mark=None)   # files: SplitWriter

Pass 1 decodes every byte: the histogram of characters (the vocabulary), where documents
start, which of a directory's files are skipped (binary, or not text in the encoding), and
a checksum per input. Pass 2 reads the kept files again and writes their ids; a file that
reads differently from pass 1 is refused, as the splits would not match the vocabulary.
"""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass, field

import numpy as np

from ..core.errors import DataError
from .documents import LineStarts, TableBuilder
from .inputs import BinaryFile, Corpus, SniffingReader, binary_file, changed, looks_binary
from .text import CHUNK_BYTES, DecodeError, code_point_chunks, code_points_of
from .vocab import END, MAX_CODE_POINT

SHOWN_SKIPPED = 3  # skipped files named in the one line that counts them


class Histogram:
    """Counts of code points, taken in batches: one bincount per few million characters
    rather than one per small file."""
    FLUSH = 1 << 22

    def __init__(self):
        self.counts: np.ndarray | None = None
        self.pending: list[np.ndarray] = []
        self.n = 0

    def add(self, cps: np.ndarray) -> None:
        self.pending.append(cps)
        self.n += len(cps)
        if self.n >= self.FLUSH:
            self.flush()

    def flush(self) -> np.ndarray:
        if self.counts is None:
            self.counts = np.zeros(MAX_CODE_POINT + 1, dtype=np.int64)
        narrow = [p for p in self.pending if p.dtype == np.uint8]
        wide = [p for p in self.pending if p.dtype != np.uint8]
        if narrow:
            self.counts[:256] += np.bincount(np.concatenate(narrow), minlength=256)
        if wide:
            self.counts += np.bincount(np.concatenate(wide), minlength=MAX_CODE_POINT + 1)
        self.pending, self.n = [], 0
        return self.counts

    def merge(self, other: "Histogram") -> None:
        if other.counts is not None:
            self.flush()
            self.counts += other.counts
        for cps in other.pending:
            self.add(cps)


@dataclass
class Counted:
    """What pass 1 found."""
    counts: np.ndarray
    table: TableBuilder
    kept: array                    # per file found: 1 if read, 0 if skipped
    digests: list[str]             # per input
    skipped: list[str] = field(default_factory=list)  # the first few skipped files
    n_skipped: int = 0

    @property
    def chars(self) -> int:
        return int(self.counts.sum())


def count(corpus: Corpus, options, split_on: str = "file", strict: bool = False,
          chunk_bytes: int = CHUNK_BYTES, on_bytes=None) -> Counted:
    """Pass 1 (see the module's docstring)."""
    hist, table, kept = Histogram(), TableBuilder(), array("b")
    digests = [hashlib.sha256() for _ in corpus.roots]
    counted = Counted(np.zeros(0), table, kept, [])
    pos = 0  # characters of text so far
    for j, item in enumerate(corpus.files()):
        local, digest = Histogram(), hashlib.sha256()
        starts = LineStarts(split_on) if split_on != "file" else None
        found: list[tuple[np.ndarray, np.ndarray]] = []
        n = 0
        try:
            for cps in _read(corpus, j, item, options, chunk_bytes, on_bytes, digest, True):
                if starts is not None:
                    found.append(starts.feed(cps))
                local.add(cps)
                n += len(cps)
        except (BinaryFile, DecodeError) as e:
            if not item.in_dir or strict:
                raise _not_text(e, item, strict) from None
            kept.append(0)
            counted.n_skipped += 1
            if len(counted.skipped) < SHOWN_SKIPPED:
                counted.skipped.append(item.rel)
            continue
        except OSError as e:
            raise DataError(f"cannot read {item.path}: {e.strerror or e}") from None
        kept.append(1)
        _add_file(digests, digest, item)
        if n == 0:
            continue  # an empty file is no document
        hist.merge(local)
        source = table.add_path(item.rel)
        if starts is None:
            table.add(pos, 1, source)
        for at, lines in found:
            for s, line in zip((at + pos).tolist(), lines.tolist()):
                table.add(s, line, source)
        pos += n
    counted.counts = hist.flush()
    counted.digests = [d.hexdigest() for d in digests]
    return counted


def _add_file(digests: list, file_digest, item) -> None:
    """A file input's checksum is its own; a directory's is over its files' checksums."""
    if item.in_dir:
        digests[item.root].update(file_digest.digest())
    else:
        digests[item.root] = file_digest


def _read(corpus: Corpus, j: int, item, options, chunk_bytes: int, on_bytes, digest,
          sniff: bool):
    """File j's code points: at once when it is small, else chunk by chunk; its bytes into
    `digest`; a binary file refused (`sniff`) at its first block."""
    name = corpus.shown(item)
    if corpus.sizes[j] <= chunk_bytes:
        data = corpus.read_whole(j, item)
        if sniff and looks_binary(data, options.encoding):
            raise binary_file(name)
        digest.update(data)
        if on_bytes is not None:
            on_bytes(len(data))
        return [code_points_of(data, name, options)]
    corpus.check(j, item)
    return _chunks(item.path, name, options, chunk_bytes, on_bytes, digest, sniff)


def _chunks(path, name, options, chunk_bytes, on_bytes, digest, sniff: bool):
    try:
        with open(path, "rb") as raw:
            reader = SniffingReader(raw, name, options.encoding if sniff else "utf-16", digest)
            yield from code_point_chunks(reader, name, options, chunk_bytes, on_bytes)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None


def _not_text(e: DataError, item, strict: bool) -> DataError:
    if strict:
        return DataError(f"{e} (--strict: every file must be text; without it, such files "
                         f"are skipped)")
    if isinstance(e, BinaryFile):
        return DataError(f"{e}: give a text file, or a directory (its binary files are "
                         f"skipped, --glob chooses which files to take)")
    return e


# ----------------------------------------------------------------------------------------
# pass 2


class SplitWriter:
    """Writes ids into one file per split in turn: train, then val, then test."""

    def __init__(self, files: dict, sizes: dict[str, int]):
        self.files = files
        self.order = iter(files)
        self.split = next(self.order)
        self.room = sizes[self.split]
        self.sizes = sizes

    def write(self, ids: np.ndarray, name: str) -> None:
        while len(ids):
            if self.split is None:
                raise changed(name)  # longer than in pass 1
            take = ids[:self.room]
            self.files[self.split].write(take.tobytes())
            ids = ids[len(take):]
            self.room -= len(take)
            if self.room == 0:
                self.split = next(self.order, None)
                self.room = self.sizes[self.split] if self.split else 0


def encode(corpus: Corpus, counted: Counted, out: SplitWriter, table: np.ndarray,
           dtype: np.dtype, options, mark: int | None, chunk_bytes: int = CHUNK_BYTES,
           on_bytes=None) -> None:
    """Pass 2: the ids of every kept file, with the end-of-document `mark` (if any) before
    each document. Small files are looked up and written in batches of about a million
    characters: per file, only the read and the decode remain."""
    starts = counted.table.starts()
    digests = [hashlib.sha256() for _ in corpus.roots]
    batch = _Batch(out, table, dtype, corpus.roots[0][0])
    pos, d = 0, 0  # characters of text so far; the next document to start
    for j, item in enumerate(corpus.files()):
        if not counted.kept[j]:
            continue
        digest = hashlib.sha256()
        for cps in _read(corpus, j, item, options, chunk_bytes, on_bytes, digest, False):
            end, at = pos + len(cps), 0
            while mark is not None and d < len(starts) and starts[d] < end:
                cut = int(starts[d]) - pos
                batch.add(cps[at:cut])
                batch.add(END_POINT)
                at, d = cut, d + 1
            batch.add(cps[at:])
            pos = end
        _add_file(digests, digest, item)
    batch.flush()
    if [d.hexdigest() for d in digests] != counted.digests:
        raise changed(corpus.roots[0][0])
    if out.split is not None:
        raise changed(corpus.roots[-1][0])  # shorter than in pass 1


END_POINT = np.array([ord(END)], dtype=np.uint32)  # the mark's place in the lookup table


class _Batch:
    """Code points gathered from many small files, looked up and written at once."""
    SIZE = 1 << 20

    def __init__(self, out: SplitWriter, table: np.ndarray, dtype, name: str):
        self.out, self.table, self.dtype, self.name = out, table, dtype, name
        self.parts: list[np.ndarray] = []
        self.n = 0

    def add(self, cps: np.ndarray) -> None:
        if len(cps):
            self.parts.append(cps)
            self.n += len(cps)
            if self.n >= self.SIZE:
                self.flush()

    def flush(self) -> None:
        if not self.parts:
            return
        cps = np.concatenate(self.parts) if len(self.parts) > 1 else self.parts[0]
        self.parts, self.n = [], 0
        ids = (self.table[:256] if cps.dtype == np.uint8 else self.table)[cps]
        if ids.min() < 0:
            raise changed(self.name)  # a character pass 1 did not see
        self.out.write(ids.astype(self.dtype), self.name)
