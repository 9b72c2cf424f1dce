"""Pass 1 of `prepare` over a corpus (inputs.py): count. Pass 2, encode, is writing.py.

    counted = count(corpus, options, split_on="file", strict=False, spool=spool)

Pass 1 decodes every byte: the histogram of characters (the vocabulary), where documents
start, which of a directory's files are skipped (binary, or not text in the encoding), and
a checksum per input. For many files it also writes their text to a spool, which pass 2
reads instead of opening every file again: opening 100,000 small files twice costs more
than reading one large file. A directory's small files are read many at a time
(batched.py); `Counting.file` reads one file alone: the straightforward path, which the
batched one is tested against and takes for any file that is not plain ASCII text.
"""
from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from ..core.errors import DataError
from .batched import Batch, batchable, batches, count_batch
from .documents import LineStarts, TableBuilder
from .inputs import BinaryFile, Corpus, SniffingReader, binary_file, looks_binary
from .text import CHUNK_BYTES, DecodeError, code_point_chunks, code_points_of
from .vocab import MAX_CODE_POINT

SHOWN_SKIPPED = 3  # skipped files named in the one line that counts them


class Histogram:
    """Counts of code points, taken in batches: one bincount per few million characters
    rather than one per small file."""
    FLUSH = 1 << 22

    def __init__(self):
        self.counts: np.ndarray | None = None  # made at the first flush: 9 MB
        self.pending: list[np.ndarray] = []
        self.n = 0

    def add(self, cps: np.ndarray) -> None:
        self.pending.append(cps)
        self.n += len(cps)
        if self.n >= self.FLUSH:
            self.flush()

    def add_bytes(self, counts: np.ndarray) -> None:
        """A histogram of 256 code points, counted already."""
        self.flush()[:256] += counts

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

    @property
    def ascii(self) -> bool:
        """Whether every character is ASCII: then a spool's bytes are its code points."""
        return not self.counts[128:].any()


def count(corpus: Corpus, options, split_on: str = "file", strict: bool = False,
          chunk_bytes: int = CHUNK_BYTES, on_bytes=None, spool: BinaryIO | None = None,
          batched: bool = True) -> Counted:
    """Pass 1 (see the module's docstring). With `spool`, the text of every kept file is
    also written there, UTF-8 after the text options, for pass 2 to read in large chunks
    (writing.spooled). `batched` False reads every file alone, the reference."""
    counting = Counting(corpus, options, split_on, strict, chunk_bytes, on_bytes, spool)
    files = enumerate(corpus.files())
    if not (batched and spool is not None and batchable(options, split_on)):
        for j, item in files:
            counting.file(j, item)
        return counting.result()
    for batch in batches(corpus, files):
        if isinstance(batch, Batch):
            count_batch(batch, counting, options)
        else:  # not a small file of a directory: read alone
            counting.file(*batch)
    return counting.result()


class Counting:
    """Pass 1 as it goes: what the files read so far hold, in the order they were found."""

    def __init__(self, corpus: Corpus, options, split_on: str, strict: bool,
                 chunk_bytes: int, on_bytes, spool: BinaryIO | None):
        self.corpus, self.options, self.split_on, self.strict = corpus, options, split_on, strict
        self.chunk_bytes, self.on_bytes, self.spool = chunk_bytes, on_bytes, spool
        self.hist = Histogram()
        self.counted = Counted(np.zeros(0), TableBuilder(), array("b"), [])
        self.digests = [hashlib.sha256() for _ in corpus.roots]
        self.pos = 0  # characters of text so far

    def file(self, j: int, item, data: bytes | None = None) -> None:
        """File j, alone (`data`: its bytes, when they were read already). A file that
        turns out not to be text half-way counts for nothing."""
        local, digest = Histogram(), hashlib.sha256()
        starts = LineStarts(self.split_on) if self.split_on != "file" else None
        found: list[tuple[np.ndarray, np.ndarray]] = []
        n, spool = 0, self.spool
        spool_at = spool.tell() if spool is not None else 0
        try:
            for cps in _read(self.corpus, j, item, self.options, self.chunk_bytes,
                             self.on_bytes, digest, data):
                if starts is not None:
                    found.append(starts.feed(cps))
                local.add(cps)
                n += len(cps)
                if spool is not None:
                    spool.write(_utf8(cps))
        except (BinaryFile, DecodeError) as e:
            if spool is not None:
                spool.seek(spool_at)
                spool.truncate()
            self.skip(item, e)
            return
        except OSError as e:
            raise DataError(f"cannot read {item.path}: {e.strerror or e}") from None
        self.kept(item, digest)
        if n:  # an empty file is no document
            self.hist.merge(local)
            self._documents(item.rel, found if starts is not None else None, n)

    def _documents(self, rel: str, found: list | None, n: int) -> None:
        """A kept file of `n` characters: one document, or those `found` in it."""
        table = self.counted.table
        source = table.add_path(rel)
        if found is None:
            table.add(self.pos, 1, source)
        for at, lines in found or ():
            for s, line in zip((at + self.pos).tolist(), lines.tolist()):
                table.add(s, line, source)
        self.pos += n

    def plain(self, held: list, digests: list[bytes], lengths: np.ndarray, text: np.ndarray,
              counts: np.ndarray) -> None:
        """Files of one directory read together (batched.py), plain ASCII text: `text`,
        their bytes one after the other, of `lengths`; `counts`, its histogram."""
        total = self.digests[held[0][1].root]
        for digest in digests:
            total.update(digest)
        self.counted.kept.extend(b"\1" * len(held))
        self.hist.add_bytes(counts)
        if self.spool is not None:
            self.spool.write(text)
        documents = np.flatnonzero(lengths)  # an empty file is no document
        at = self.pos + np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.counted.table.add_files([held[i][1].rel for i in documents.tolist()],
                                     at[documents])
        self.pos += len(text)
        if self.on_bytes is not None:
            self.on_bytes(len(text))

    def kept(self, item, digest) -> None:
        """A file read as text: its checksum is its input's, or part of its directory's."""
        self.counted.kept.append(1)
        if item.in_dir:
            self.digests[item.root].update(digest.digest())
        else:
            self.digests[item.root] = digest

    def skip(self, item, e: DataError) -> None:
        """A directory's file that is not text: counted and skipped (or refused)."""
        if not item.in_dir or self.strict:
            raise _not_text(e, item, self.strict) from None
        counted = self.counted
        counted.kept.append(0)
        counted.n_skipped += 1
        if len(counted.skipped) < SHOWN_SKIPPED:
            counted.skipped.append(item.rel)

    def result(self) -> Counted:
        self.counted.counts = self.hist.flush()
        self.counted.digests = [d.hexdigest() for d in self.digests]
        return self.counted


def _utf8(cps: np.ndarray) -> bytes:
    """Code points as UTF-8 (ASCII ones are already)."""
    if cps.dtype == np.uint8:
        return cps.tobytes()
    return cps.astype("<u4").tobytes().decode("utf-32-le").encode("utf-8")


def _read(corpus: Corpus, j: int, item, options, chunk_bytes: int, on_bytes, digest,
          data: bytes | None = None, sniff: bool = True):
    """File j's code points: at once when it is small (`data`, if read already), else
    chunk by chunk; its bytes into `digest`; a binary file refused (`sniff`) at its first
    block."""
    name = corpus.shown(item)
    if data is not None or corpus.size(j, item) <= chunk_bytes:
        if data is None:
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
