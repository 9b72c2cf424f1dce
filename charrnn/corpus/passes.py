"""The two passes of `prepare` over a corpus (inputs.py): count, then encode.

    counted = count(corpus, options, split_on="file", strict=False, spool=spool)
    encode(spooled(spool) or reread(corpus, counted, options), counted, out, table, ...)

Pass 1 decodes every byte: the histogram of characters (the vocabulary), where documents
start, which of a directory's files are skipped (binary, or not text in the encoding), and
a checksum per input. Pass 2 writes the ids. For one file it reads the file again, and a
file that reads differently from pass 1 is refused, as the splits would not match the
vocabulary. For many files it reads the spool pass 1 wrote (their text, one stream):
opening 100,000 small files twice costs more than reading one large file.
"""
from __future__ import annotations

import codecs
import hashlib
from array import array
from dataclasses import dataclass, field
from typing import BinaryIO, Iterable, Iterator

import numpy as np

from ..core.errors import DataError
from .documents import LineStarts, TableBuilder
from .inputs import BinaryFile, Corpus, SniffingReader, binary_file, changed, looks_binary
from .text import CHUNK_BYTES, DecodeError, code_point_chunks, code_points, code_points_of
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
          chunk_bytes: int = CHUNK_BYTES, on_bytes=None, spool: BinaryIO | None = None
          ) -> Counted:
    """Pass 1 (see the module's docstring). With `spool`, the text of every kept file is
    also written there, UTF-8 after the text options, for pass 2 to read in large chunks
    (spooled) instead of opening every file again."""
    hist, table, kept = Histogram(), TableBuilder(), array("b")
    digests = [hashlib.sha256() for _ in corpus.roots]
    counted = Counted(np.zeros(0), table, kept, [])
    pos = 0  # characters of text so far
    for j, item in enumerate(corpus.files()):
        local, digest = Histogram(), hashlib.sha256()
        starts = LineStarts(split_on) if split_on != "file" else None
        found: list[tuple[np.ndarray, np.ndarray]] = []
        n, spool_at = 0, spool.tell() if spool is not None else 0
        try:
            for cps in _read(corpus, j, item, options, chunk_bytes, on_bytes, digest, True):
                if starts is not None:
                    found.append(starts.feed(cps))
                local.add(cps)
                n += len(cps)
                if spool is not None:
                    spool.write(_utf8(cps))
        except (BinaryFile, DecodeError) as e:
            if spool is not None:  # a file found not to be text half-way: none of it
                spool.seek(spool_at)
                spool.truncate()
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


def _utf8(cps: np.ndarray) -> bytes:
    """Code points as UTF-8 (ASCII ones are already)."""
    if cps.dtype == np.uint8:
        return cps.tobytes()
    return cps.astype("<u4").tobytes().decode("utf-32-le").encode("utf-8")


def spooled(spool: BinaryIO, chunk_bytes: int = CHUNK_BYTES, on_bytes=None):
    """The code points of a spool that `count` wrote, chunk by chunk: no text options (they
    were applied), no byte-order mark (one was removed from its file already)."""
    spool.seek(0)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    while True:
        block = spool.read(chunk_bytes)
        text = decoder.decode(block, final=not block)
        if on_bytes is not None:
            on_bytes(len(block))
        if text:
            yield code_points(text)
        if not block:
            return


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


def encode(pieces: Iterable[np.ndarray], counted: Counted, out: SplitWriter,
           table: np.ndarray, dtype: np.dtype, mark: int | None, name: str) -> None:
    """Pass 2: the ids of the text's code points (`pieces`: reread, or spooled), with the
    end-of-document `mark` (if any) before each document, looked up and written in
    batches of about a million characters."""
    starts = counted.table.starts()
    batch = _Batch(out, table, dtype, name)
    pos, d = 0, 0  # characters of text so far; the next document to start
    for cps in pieces:
        end, at = pos + len(cps), 0
        while mark is not None and d < len(starts) and starts[d] < end:
            cut = int(starts[d]) - pos
            batch.add(cps[at:cut])
            batch.add(END_POINT)
            at, d = cut, d + 1
        batch.add(cps[at:])
        pos = end
    batch.flush()
    if out.split is not None:
        raise changed(name)  # shorter than in pass 1


def reread(corpus: Corpus, counted: Counted, options, chunk_bytes: int = CHUNK_BYTES,
           on_bytes=None) -> Iterator[np.ndarray]:
    """The kept files' code points, read again; a file that reads differently from pass 1
    (its checksum) is refused."""
    digests = [hashlib.sha256() for _ in corpus.roots]
    for j, item in enumerate(corpus.files()):
        if not counted.kept[j]:
            continue
        digest = hashlib.sha256()
        yield from _read(corpus, j, item, options, chunk_bytes, on_bytes, digest, False)
        _add_file(digests, digest, item)
    if [d.hexdigest() for d in digests] != counted.digests:
        raise changed(corpus.roots[0][0])


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
