"""Documents: the files of a corpus directory (or the lines or paragraphs of one file), each
recorded by where it came from and where it lies in the encoded text.

    docs = PreparedData("data/linux").documents()   # documents.npz, or one document
    docs.name(i), docs.start[i], docs.line[i], docs.split[i]
    i = docs.locate(offset)                         # the document holding a character

The table is a handful of numpy arrays (one entry per document) and one byte string of
paths: a million documents cost a few tens of megabytes, not a Python object each. It is
written next to the splits as documents.npz (numpy's zip of arrays, read without pickle).
A corpus of one text file has no table: it is one document, exactly as before documents.
"""

from __future__ import annotations

import os
from array import array
from pathlib import Path

import numpy as np

from ..core.errors import DataError

TABLE = "documents.npz"
SPLIT_ON = ("file", "line", "blankline")
NEWLINE = 10


# ----------------------------------------------------------------------------------------
# where documents start inside one file


class LineStarts:
    """Where documents start in a stream of code points cut by `split_on`: after a newline
    (line) or after a blank line (blankline). Empty lines join the document before them, so
    that no document is only newlines. Fed chunk by chunk; positions count characters of
    the file, the first document starting at 0."""

    def __init__(self, split_on: str):
        self.need = 2 if split_on == "blankline" else 1
        self.tail = np.zeros(0, dtype=np.uint32)  # the last code points seen
        self.seen = 0
        self.lines = 1  # the line the next character is on

    def feed(self, cps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(starts, lines) of the documents that start in this chunk."""
        n = len(cps)
        ext = np.concatenate([self.tail, cps.astype(np.uint32)])
        k = len(self.tail)
        here = ext[k:] != NEWLINE  # a document starts at a character that is not a newline
        for back in range(1, self.need + 1):
            before = ext[k - back:len(ext) - back] if k >= back else np.concatenate(
                [np.zeros(back - k, np.uint32), ext[:len(ext) - back]])
            here &= before == NEWLINE
        if self.seen == 0 and n:
            here[0] = True
        local = np.flatnonzero(here)
        newlines = np.flatnonzero(cps == NEWLINE)
        lines = self.lines + np.searchsorted(newlines, local)
        self.lines += len(newlines)
        self.tail = ext[-self.need:]
        self.seen += n
        return local + (self.seen - n), lines


# ----------------------------------------------------------------------------------------
# the table


class TableBuilder:
    """Grows the table while `prepare` reads: compact arrays, one path per source file."""

    def __init__(self):
        self.text_start = array("q")  # where each document starts, in characters of text
        self.line = array("q")        # its first line in its file
        self.source = array("l")      # its file, an index into the paths
        self.paths = bytearray()      # the files' paths, each ended by a NUL byte
        self.n_paths = 0

    def add_path(self, rel: str) -> int:
        self.paths += os.fsencode(rel) + b"\0"
        self.n_paths += 1
        return self.n_paths - 1

    def add(self, text_start: int, line: int, source: int) -> None:
        self.text_start.append(text_start)
        self.line.append(line)
        self.source.append(source)

    def add_files(self, rels: list[str], text_starts: np.ndarray) -> None:
        """Whole files, a document each, their first lines at 1: in bulk."""
        first, n = self.n_paths, len(rels)
        if n:
            self.paths += os.fsencode("\0".join(rels)) + b"\0"  # one call, not one a file
        self.n_paths += n
        self.text_start.frombytes(text_starts.astype(np.int64).tobytes())
        self.line.frombytes(np.ones(n, dtype=np.int64).tobytes())
        self.source.frombytes(np.arange(first, first + n, dtype=f"i{self.source.itemsize}")
                              .tobytes())

    def __len__(self) -> int:
        return len(self.text_start)

    def starts(self) -> np.ndarray:
        return np.frombuffer(self.text_start, dtype=np.int64) if len(self) else np.zeros(0, np.int64)

    def save(self, path: Path, start: np.ndarray, sizes: dict[str, int]) -> None:
        """Write the table, with each document's `start` in the encoded text (marks
        included) and the split it lies in (where it starts, when a split cuts one)."""
        bounds = np.cumsum([sizes["train"], sizes["val"]])
        split = np.searchsorted(bounds, start, side="right").astype(np.uint8)
        with open(path, "wb") as f:
            np.savez(f, start=start.astype(np.int64),
                     line=np.frombuffer(self.line, dtype=np.int64),
                     source=np.asarray(self.source, dtype=np.int32), split=split,
                     paths=np.frombuffer(bytes(self.paths), dtype=np.uint8))


class Documents:
    """The documents of a prepared directory: `start` (int64, where each starts in the
    encoded text, splits in order), `line` (its first line in its file), `source` (its file)
    and `split` (0 train, 1 val, 2 test); `chars`, the text's length."""

    def __init__(self, start, line, source, split, paths: list[bytes] | bytes, chars: int):
        self.start, self.line, self.source, self.split = start, line, source, split
        self._paths = paths
        self.chars = chars

    def __len__(self) -> int:
        return len(self.start)

    @classmethod
    def load(cls, root: Path, meta: dict) -> "Documents":
        chars = int(meta["chars"])
        path = Path(root) / TABLE
        if not path.exists():  # one document: a single file, or a preparation from before
            sources = meta.get("sources") or [{}]
            name = Path(str(sources[0].get("path", "text"))).name
            zero = np.zeros(1, np.int64)
            return cls(zero, zero + 1, zero.astype(np.int32), zero.astype(np.uint8),
                       os.fsencode(name) + b"\0", chars)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("start", "line", "source", "split", "paths")}
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"{path} is not a document table charrnn wrote ({e}); prepare "
                            f"the corpus again") from None
        docs = cls(arrays["start"], arrays["line"], arrays["source"], arrays["split"],
                   arrays["paths"].tobytes(), chars)
        if len(docs) != meta.get("documents", len(docs)) or (
                len(docs) and (docs.start[0] != 0 or np.any(np.diff(docs.start) <= 0)
                               or docs.start[-1] >= chars)):
            raise DataError(f"{path} does not match meta.json; prepare the corpus again")
        return docs

    def paths(self) -> list[str]:
        """The source paths (built when asked: a list of a Python string per file)."""
        if isinstance(self._paths, bytes):
            self._paths = [os.fsdecode(p) for p in self._paths.split(b"\0")[:-1]]
        return self._paths

    def name(self, i: int) -> str:
        return self.paths()[int(self.source[i])]

    def end(self, i: int) -> int:
        return int(self.start[i + 1]) if i + 1 < len(self) else self.chars

    def locate(self, offset: int) -> int:
        """The document that holds character `offset` of the encoded text."""
        return int(np.searchsorted(self.start, offset, side="right")) - 1

    def starts_in(self, split_start: int, split_end: int) -> np.ndarray:
        """Where documents start inside [split_start, split_end), relative to split_start."""
        lo, hi = np.searchsorted(self.start, [split_start, split_end])
        return self.start[lo:hi] - split_start
