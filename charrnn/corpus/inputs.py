"""The inputs of a preparation: text files, directories of them, standard input; which of a
directory's files are text, and whether any changed between the passes of `prepare`.

    corpus = Corpus(["linux/include", "notes.txt"], glob="*.h")
    for j, item in enumerate(corpus.files()):  # the same files, in the same order, each pass
        ...
"""

from __future__ import annotations

import codecs
import fnmatch
import functools
import operator
import os
import re
import sys
from array import array
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator, NamedTuple

import numpy as np

from ..core.errors import DataError
from .text import Source

FS_ENCODING = (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())  # os.fsdecode's
SNIFF_BYTES = 8000  # git's and ripgrep's window: a NUL byte in it means a binary file


class BinaryFile(DataError):
    """A file whose first block holds a NUL byte."""


def looks_binary(block: bytes, encoding: str) -> bool:
    """Whether a file's first block says binary: a NUL byte, as git decides. UTF-16 and
    UTF-32 text holds NUL bytes, so it is not judged this way."""
    return not _wide(encoding) and block.find(b"\0", 0, SNIFF_BYTES) >= 0


@functools.lru_cache(maxsize=None)
def _wide(encoding: str) -> bool:
    return encoding.lower().replace("-", "").replace("_", "").startswith(("utf16", "utf32"))


def binary_file(name: str) -> BinaryFile:
    return BinaryFile(f"{name} looks like a binary file (a NUL byte in its first "
                      f"{SNIFF_BYTES:,} bytes), not text")


class SniffingReader:
    """A file wrapper that refuses a binary file at its first block, and feeds every block
    it reads into a hash."""

    def __init__(self, raw: BinaryIO, name: str, encoding: str, digest):
        self.raw, self.name, self.encoding, self.digest = raw, name, encoding, digest
        self.first = True

    def read(self, n: int) -> bytes:
        block = self.raw.read(n)
        if self.first and looks_binary(block, self.encoding):
            raise binary_file(self.name)
        self.first = False
        self.digest.update(block)
        return block


class Item(NamedTuple):
    """One file of the corpus, as a pass meets it."""
    root: int         # which input it comes from
    path: str         # where to open it
    rel: str          # its name in reports: relative to its directory, or as given
    in_dir: bool      # found in a directory (then a file that is not text is skipped)


class Corpus:
    """The inputs, and their files: a directory is walked once, here, its files' names
    kept in one byte string (not a Python object each). A file's size and modification
    time are recorded when it is first opened (a single file's, here); `check` holds any
    later opening to them."""

    def __init__(self, inputs: list[str], glob: str, spool_dir: Path):
        if not inputs:
            raise DataError("no corpus given: pass a text file, a directory or - for stdin")
        self.glob = glob
        self.roots: list[tuple[str, Path, bool]] = []  # (name, path, is a directory)
        self.spools: list[Source] = []
        for name in inputs:
            self.roots.append(self._root(name, spool_dir))
        self.names = bytearray()    # the files' names relative to their directory
        self.name_ends = array("q")  # where each one ends in `names`
        self.root_ends: list[int] = []  # per root: the index after its last file
        self.sizes, self.mtimes = array("q"), array("q")  # -1: not opened yet
        for name, path, is_dir in self.roots:
            n = len(self.name_ends)
            self._list(path, is_dir)
            if is_dir and len(self.name_ends) == n:
                raise DataError(f"no files matching {glob!r} under directory {path}")
            self.root_ends.append(len(self.name_ends))
        self.sizes.extend([-1] * len(self.name_ends))
        self.mtimes.extend([-1] * len(self.name_ends))
        for j, item in enumerate(self.files()):
            if not item.in_dir:
                self.check(j, item, os.stat(item.path))

    def _root(self, name: str, spool_dir: Path) -> tuple[str, Path, bool]:
        if name == "-":
            self.spools.append(Source(name, spool_dir))
            return name, self.spools[-1].path, False
        path = Path(name)
        if path.is_dir():
            return name, path, True
        if path.is_file():
            return name, path, False
        if path.exists():
            raise DataError(f"not a regular file: {path}")
        raise DataError(f"corpus not found: {path}")

    def _list(self, path: Path, is_dir: bool) -> None:
        """Record the names of a root's files: a directory's, or the file itself (no name)."""
        if not is_dir:
            self.name_ends.append(len(self.names))
            return
        for _, rel in walk(path, self.glob):
            self.names += os.fsencode(rel)
            self.name_ends.append(len(self.names))

    @property
    def bytes(self) -> int | None:
        """The files' size in bytes; None while a directory's files are not all opened
        (pass 1 opens every one)."""
        sizes = np.frombuffer(self.sizes, dtype=np.int64)
        return None if sizes.min(initial=0) < 0 else int(sizes.sum())

    @property
    def many(self) -> bool:
        """Whether the inputs are several files (then each is a document)."""
        return len(self.roots) > 1 or any(is_dir for _, _, is_dir in self.roots)

    def files(self) -> Iterator[Item]:
        """The files, in the order they were found (each pass meets the same ones)."""
        j, names, ends = 0, self.names, self.name_ends
        for i, (name, path, is_dir) in enumerate(self.roots):
            if not is_dir:
                yield Item(i, str(path), name if name == "-" else path.name, False)
                j += 1
                continue
            top = os.path.join(str(path), "")
            for j in range(j, self.root_ends[i]):
                rel = names[ends[j - 1] if j else 0:ends[j]].decode(*FS_ENCODING)
                yield Item(i, top + rel, rel, True)
            j = self.root_ends[i]

    def size(self, j: int, item: Item) -> int:
        """File j's size, as recorded (the file's status, when it was not opened yet)."""
        if self.sizes[j] < 0:
            self.check(j, item)
        return self.sizes[j]

    def check(self, j: int, item: Item, st: os.stat_result | None = None) -> None:
        """Record file j's size and modification time (`st`: its status, if the caller has
        it) or, when they were recorded, refuse it if it is not as it was."""
        if st is None:
            try:
                st = os.stat(item.path)
            except OSError:
                raise changed(self.shown(item)) from None
        if self.sizes[j] < 0:
            self.sizes[j], self.mtimes[j] = st.st_size, st.st_mtime_ns
        elif st.st_size != self.sizes[j] or st.st_mtime_ns != self.mtimes[j]:
            raise changed(self.shown(item))

    def shown(self, item: Item) -> str:
        """The file's name in messages: relative to its directory, or as given."""
        return item.rel if item.in_dir else self.roots[item.root][0]

    def read_whole(self, j: int, item: Item) -> bytes:
        """File j at once (a small file): one open, one status, one read."""
        buf = bytearray(self.size(j, item) + 1)
        n = self.read_into(j, item, memoryview(buf))
        del buf[n:]
        return bytes(buf)

    def read_into(self, j: int, item: Item, buf: memoryview) -> int | None:
        """File j into `buf`, if it has room for one byte more than the file holds (to see
        its end); its size, or None when it does not fit."""
        try:
            fd = os.open(item.path, os.O_RDONLY)
        except OSError as e:
            raise DataError(f"cannot read {item.path}: {e.strerror or e}") from None
        try:
            st = os.fstat(fd)
            self.check(j, item, st)
            size = st.st_size
            if size >= len(buf):
                return None
            # One byte more than its size: a file that grew since fstat reads longer. A
            # regular file's read is short only at its end, so `size` bytes are all of it.
            n = os.readv(fd, [buf[:size + 1]])
            if n < size:  # short all the same (some file systems): on to the end
                n += _read_all(fd, buf[n:size + 1])
        finally:
            os.close(fd)
        if n != size:
            raise changed(self.shown(item))
        return n

    def cleanup(self) -> None:
        for s in self.spools:
            s.cleanup()


def _read_all(fd: int, buf: memoryview) -> int:
    """Read into `buf` until it is full or the file ends; how many bytes were read."""
    got = 0
    while got < len(buf):
        n = os.readv(fd, [buf[got:]])
        if not n:
            break
        got += n
    return got


def changed(name: str) -> DataError:
    return DataError(f"{name} changed while it was being prepared; nothing was written: "
                     f"prepare it again once it is complete")


def check_encoding(encoding: str) -> None:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r}") from None


def walk(root: Path, glob: str, prefix: str = "") -> Iterator[tuple[os.DirEntry, str]]:
    """(entry, path relative to the first root) of the files under `root` whose path
    matches `glob` (as Path.rglob matches), in sorted order, one directory listed at a time:
    memory stays flat however many files there are. Symbolic links to directories are not
    followed (a loop would never end)."""
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=operator.attrgetter("name"))
    except OSError as e:
        raise DataError(f"cannot list directory {root}: {e.strerror or e}") from None
    matches = _matcher(glob)
    for entry in entries:
        rel = prefix + entry.name
        if entry.is_dir(follow_symlinks=False):
            yield from walk(Path(entry.path), glob, rel + os.sep)
        elif entry.is_file() and matches(entry.name, rel):
            yield entry, rel


@functools.lru_cache(maxsize=16)
def _matcher(glob: str):
    """(name, path) -> whether a file matches `glob`: its name, or with a / its path."""
    if glob == "*":
        return lambda name, path: True
    if "/" not in glob:
        match = re.compile(fnmatch.translate(glob)).match
        return lambda name, path: match(name) is not None
    return lambda name, path: PurePosixPath(path).match(glob)
