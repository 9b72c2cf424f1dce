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
import os
from array import array
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator, NamedTuple

from ..core.errors import DataError
from .text import Source

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
    """The inputs: walked once here to record every file's size and modification time
    (compact arrays), then again by each pass, which `check` holds to the same files."""

    def __init__(self, inputs: list[str], glob: str, spool_dir: Path):
        if not inputs:
            raise DataError("no corpus given: pass a text file, a directory or - for stdin")
        self.glob = glob
        self.roots: list[tuple[str, Path, bool]] = []  # (name, path, is a directory)
        self.spools: list[Source] = []
        for name in inputs:
            if name == "-":
                self.spools.append(Source(name, spool_dir))
                self.roots.append((name, self.spools[-1].path, False))
                continue
            path = Path(name)
            if path.is_dir():
                self.roots.append((name, path, True))
            elif path.is_file():
                self.roots.append((name, path, False))
            elif path.exists():
                raise DataError(f"not a regular file: {path}")
            else:
                raise DataError(f"corpus not found: {path}")
        self.sizes, self.mtimes = array("q"), array("q")
        found = [0] * len(self.roots)
        for item in self.files():
            st = os.stat(item.path)
            self.sizes.append(st.st_size)
            self.mtimes.append(st.st_mtime_ns)
            found[item.root] += 1
        for (name, path, is_dir), n in zip(self.roots, found):
            if is_dir and not n:
                raise DataError(f"no files matching {glob!r} under directory {path}")
        self.bytes = sum(self.sizes)

    @property
    def many(self) -> bool:
        """Whether the inputs are several files (then each is a document)."""
        return len(self.roots) > 1 or any(is_dir for _, _, is_dir in self.roots)

    def files(self) -> Iterator[Item]:
        for i, (name, path, is_dir) in enumerate(self.roots):
            if not is_dir:
                yield Item(i, str(path), name if name == "-" else path.name, False)
                continue
            for entry, rel in walk(path, self.glob):
                yield Item(i, entry.path, rel, True)

    def check(self, j: int, item: Item, st: os.stat_result | None = None) -> None:
        """Refuse file j of a pass if it is not the file j that was found, as it was (`st`:
        its status, if the caller has it)."""
        if st is None:
            try:
                st = os.stat(item.path)
            except OSError:
                st = None
        if (j >= len(self.sizes) or st is None or st.st_size != self.sizes[j]
                or st.st_mtime_ns != self.mtimes[j]):
            raise changed(self.shown(item))

    def shown(self, item: Item) -> str:
        """The file's name in messages: relative to its directory, or as given."""
        return item.rel if item.in_dir else self.roots[item.root][0]

    def read_whole(self, j: int, item: Item) -> bytes:
        """File j at once (a small file): one open, one status, one read."""
        try:
            fd = os.open(item.path, os.O_RDONLY)
        except OSError as e:
            raise DataError(f"cannot read {item.path}: {e.strerror or e}") from None
        try:
            st = os.fstat(fd)
            self.check(j, item, st)
            data = os.read(fd, st.st_size + 1)
            while len(data) <= st.st_size:  # a short read: more, or the end of the file
                more = os.read(fd, st.st_size + 1 - len(data))
                if not more:
                    break
                data += more
        finally:
            os.close(fd)
        if len(data) != st.st_size:
            raise changed(self.shown(item))
        return data

    def cleanup(self) -> None:
        for s in self.spools:
            s.cleanup()


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
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"cannot list directory {root}: {e.strerror or e}") from None
    for entry in entries:
        rel = prefix + entry.name
        if entry.is_dir(follow_symlinks=False):
            yield from walk(Path(entry.path), glob, rel + os.sep)
        elif entry.is_file() and _matches(entry.name, rel, glob):
            yield entry, rel


def _matches(name: str, path: str, glob: str) -> bool:
    if "/" not in glob:
        return fnmatch.fnmatchcase(name, glob)
    return PurePosixPath(path).match(glob)
