"""Pass 1 over a directory's small files, many at a time (passes.py holds the pass).

    for batch in batches(corpus, enumerate(corpus.files())):
        if isinstance(batch, Batch):
            count_batch(batch, counting, options)
        else:                           # not a small file of a directory: read it alone
            counting.file(*batch)

Most small files of a directory are plain ASCII: their bytes are their code points in any
encoding that agrees with ASCII, and no decoder is needed. The files are read into one
buffer, a few megabytes at a time, and one histogram of its bytes tells whether they all
are: no NUL byte (a binary file), nothing outside ASCII, no carriage return (when \\r\\n
becomes \\n). Runs of such files are counted together: one bincount, one write to the
spool, their documents recorded as arrays; a checksum each, as a file alone gets. Any
other file goes through `Counting.file`, the path of a file alone, with the bytes
already read, so that both give the same preparation.

The files are read in this thread: reading the next batch in another while one is
counted gained nothing measurable on 2 shared cores (the opening and reading system calls
release the GIL, but the counting holds it).
"""
from __future__ import annotations

import codecs
import hashlib
from array import array
from typing import Iterator

import numpy as np

BATCH_BYTES = 4 << 20    # the buffer: a few thousand small files
BATCH_FILES = 2048       # files at most in one batch, however small
SMALL_BYTES = 256 << 10  # room kept for the next file; a larger one may be read alone
COUNT_BLOCK = 1 << 17    # bytes per bincount: its int64 copy stays in the cache

# Encodings in which ASCII bytes are the ASCII characters (and no other bytes are).
ASCII_ENCODINGS = frozenset({"utf-8", "utf-8-sig", "ascii", "latin-1", "iso8859-1",
                             "iso8859-15", "cp1252"})

LOWER = np.arange(256, dtype=np.uint8)  # str.lower() of ASCII: A-Z only
LOWER[ord("A"):ord("Z") + 1] += 32


def batchable(options, split_on: str) -> bool:
    """Whether a directory's files can be read many at a time: each a document, in an
    encoding that agrees with ASCII."""
    return split_on == "file" and codecs.lookup(options.encoding).name in ASCII_ENCODINGS


def byte_counts(data: np.ndarray) -> np.ndarray:
    """The histogram of 256 byte values, block by block."""
    counts = np.zeros(256, dtype=np.int64)
    for at in range(0, len(data), COUNT_BLOCK):
        counts += np.bincount(data[at:at + COUNT_BLOCK], minlength=256)
    return counts


class Batch:
    """Small files of one directory, read one after another into one buffer."""

    def __init__(self, capacity: int = 0):
        self.buf = bytearray(max(capacity or BATCH_BYTES, SMALL_BYTES + 1))
        self.view = memoryview(self.buf)
        self.ends = array("q")  # where each file ends in the buffer
        self.held: list = []    # (j, item) of each file
        self.used = 0           # bytes of the buffer they fill

    def full_for(self, item) -> bool:
        """Whether `item` belongs to the next batch: too little room, or another root."""
        return bool(self.held) and (len(self.buf) - self.used <= SMALL_BYTES
                                    or len(self.held) >= BATCH_FILES
                                    or item.root != self.held[0][1].root)

    def read(self, corpus, j: int, item) -> bool:
        """Read file j in; False if it does not fit (a large file: read alone)."""
        n = corpus.read_into(j, item, self.view[self.used:])
        if n is None:
            return False
        self.used += n
        self.ends.append(self.used)
        self.held.append((j, item))
        return True


def batches(corpus, files) -> Iterator:
    """The (j, item) of `files` in order, a directory's small files gathered in Batches."""
    batch = Batch()
    for j, item in files:
        if item.in_dir:
            if batch.full_for(item):
                yield batch
                batch = Batch()
            if batch.read(corpus, j, item):
                continue
        if batch.held:
            yield batch
            batch = Batch()
        yield j, item
    if batch.held:
        yield batch


def count_batch(batch: Batch, counting, options) -> None:
    """Count the batch's files, in order: runs of plain ASCII together, others alone
    (Counting.file, with the bytes read)."""
    ends = np.frombuffer(batch.ends, dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    data = np.frombuffer(batch.buf, dtype=np.uint8, count=int(ends[-1]))
    counts = byte_counts(data)
    plain = _plain(data, ends, counts, options)
    cuts = np.flatnonzero(np.diff(plain)) + 1  # runs of plain files, and of others
    for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(plain)]):
        if plain[lo]:
            whole = hi - lo == len(plain)
            _count_plain(batch, lo, hi, starts, ends, counts if whole else None, counting,
                         options)
            continue
        for k in range(lo, hi):
            j, item = batch.held[k]
            counting.file(j, item, bytes(batch.view[starts[k]:ends[k]]))


def _plain(data: np.ndarray, ends: np.ndarray, counts: np.ndarray, options) -> np.ndarray:
    """Per file, whether it is plain ASCII text: no byte to look at closer."""
    crlf = not options.keep_crlf
    if not (counts[0] or counts[128:].any() or crlf and counts[13]):
        return np.ones(len(ends), dtype=bool)
    odd = (data == 0) | (data >= 128)
    if crlf:
        odd |= data == 13
    plain = np.ones(len(ends), dtype=bool)
    plain[np.searchsorted(ends, np.flatnonzero(odd), side="right")] = False
    return plain


def _count_plain(batch: Batch, lo: int, hi: int, starts, ends, counts, counting,
                 options) -> None:
    """Files lo..hi of the batch, plain ASCII text, together."""
    a, b = int(starts[lo]), int(ends[hi - 1])
    text = np.frombuffer(batch.buf, dtype=np.uint8, count=b - a, offset=a)
    view, sha256 = batch.view, hashlib.sha256
    digests = [sha256(view[s:e]).digest()
               for s, e in zip(starts[lo:hi].tolist(), ends[lo:hi].tolist())]
    if options.lower:
        text = LOWER[text]
        counts = None
    if counts is None:
        counts = byte_counts(text)
    counting.plain(batch.held[lo:hi], digests, ends[lo:hi] - starts[lo:hi], text, counts)
