"""Pass 2 of `prepare`: the ids of the text, written into one file per split.

    pieces = spooled(spool, counted.ascii) if spool else reread(corpus, counted, options)
    encode(pieces, counted, SplitWriter(files, sizes), vocab.lookup_table(), ...)

The text comes from the spool pass 1 wrote (many files), or is read again (one file): a
file that reads differently from pass 1 is refused, as the splits would not match the
vocabulary.
"""
from __future__ import annotations

import codecs
import hashlib
from typing import BinaryIO, Iterable, Iterator

import numpy as np

from .inputs import Corpus, changed
from .passes import Counted, _read
from .text import CHUNK_BYTES, code_points


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
            self.files[self.split].write(take)
            ids = ids[len(take):]
            self.room -= len(take)
            if self.room == 0:
                self.split = next(self.order, None)
                self.room = self.sizes[self.split] if self.split else 0


def encode(pieces: Iterable[np.ndarray], counted: Counted, out: SplitWriter,
           table: np.ndarray, dtype: np.dtype, mark: int | None, name: str) -> None:
    """Pass 2: the ids of the text's code points (`pieces`: reread, or spooled), with the
    end-of-document `mark` (if any) before each document."""
    starts = counted.table.starts() if mark is not None else np.zeros(0, np.int64)
    lookup = Lookup(table, dtype)
    pos, d = 0, 0  # characters of text so far; the next document to start
    for cps in pieces:
        ids = lookup(cps, name)
        end = int(np.searchsorted(starts, pos + len(cps)))  # the documents starting here
        if end > d:
            ids = np.insert(ids, starts[d:end] - pos, np.array(mark, dtype))
        out.write(ids, name)
        pos, d = pos + len(cps), end
    if out.split is not None:
        raise changed(name)  # shorter than in pass 1


class Lookup:
    """Code points -> ids, through `table` (-1: a character pass 1 did not see, refused).
    ASCII into at most 256 ids goes through bytes.translate, a few times faster than
    numpy's indexing, and its unseen characters are deleted: the length tells."""

    def __init__(self, table: np.ndarray, dtype: np.dtype):
        self.table, self.dtype = table, dtype
        self.trans = self.unseen = None
        if dtype == np.uint8:
            narrow = table[:256]
            self.trans = np.maximum(narrow, 0).astype(np.uint8).tobytes()
            self.unseen = np.flatnonzero(narrow < 0).astype(np.uint8).tobytes()

    def __call__(self, cps: np.ndarray, name: str) -> np.ndarray:
        if self.trans is not None and cps.dtype == np.uint8:
            ids = cps.tobytes().translate(self.trans, self.unseen)
            if len(ids) != len(cps):
                raise changed(name)
            return np.frombuffer(ids, dtype=np.uint8)
        ids = (self.table[:256] if cps.dtype == np.uint8 else self.table)[cps]
        if len(ids) and ids.min() < 0:
            raise changed(name)
        return ids.astype(self.dtype)


def spooled(spool: BinaryIO, ascii: bool, chunk_bytes: int = CHUNK_BYTES, on_bytes=None):
    """The code points of a spool that `count` wrote, chunk by chunk: no text options (they
    were applied), no byte-order mark (one was removed from its file already). An `ascii`
    spool's bytes are its code points."""
    spool.seek(0)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    while True:
        block = spool.read(chunk_bytes)
        if on_bytes is not None:
            on_bytes(len(block))
        if ascii and block:
            yield np.frombuffer(block, dtype=np.uint8)
            continue
        text = decoder.decode(block, final=not block)
        if text:
            yield code_points(text)
        if not block:
            return


def reread(corpus: Corpus, counted: Counted, options, chunk_bytes: int = CHUNK_BYTES,
           on_bytes=None) -> Iterator[np.ndarray]:
    """The kept files' code points, read again; a file that reads differently from pass 1
    (its checksum) is refused."""
    digests = [hashlib.sha256() for _ in corpus.roots]
    for j, item in enumerate(corpus.files()):
        if not counted.kept[j]:
            continue
        digest = hashlib.sha256()
        yield from _read(corpus, j, item, options, chunk_bytes, on_bytes, digest, sniff=False)
        if item.in_dir:
            digests[item.root].update(digest.digest())
        else:
            digests[item.root] = digest
    if [d.hexdigest() for d in digests] != counted.digests:
        raise changed(corpus.roots[0][0])
