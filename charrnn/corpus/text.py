"""Reading text: the options that turn bytes into the model's characters, finding the
input files, and streaming them as arrays of code points.

    options = TextOptions(lower=True)
    for cps in code_point_chunks(open("corpus.txt", "rb"), "corpus.txt", options):
        ...                                  # uint8 (ASCII) or uint32 code points
"""

from __future__ import annotations

import codecs
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
from unidecode import unidecode

from ..core.errors import DataError
from ..core.files import write_failure

CHUNK_BYTES = 8 << 20


class DecodeError(DataError):
    """Bytes that are not text in the encoding asked for."""


@dataclass(frozen=True)
class TextOptions:
    """How raw bytes become the characters the model sees."""
    encoding: str = "utf-8"
    lower: bool = False
    unidecode: bool = False
    keep_crlf: bool = False  # by default \r\n becomes \n, so samples have plain newlines

    def to_dict(self) -> dict:
        return {"encoding": self.encoding, "lower": self.lower, "unidecode": self.unidecode,
                "keep_crlf": self.keep_crlf}

    @classmethod
    def from_dict(cls, data) -> "TextOptions":
        """As written by to_dict; anything else raises TypeError."""
        if not isinstance(data, dict) or set(data) - {"encoding", "lower", "unidecode", "keep_crlf"}:
            raise TypeError("not a dict of text options")
        options = cls(**data)
        if not isinstance(options.encoding, str) or not all(
                isinstance(v, bool) for v in (options.lower, options.unidecode, options.keep_crlf)):
            raise TypeError("text options of the wrong types")
        return options

    def apply(self, text: str) -> str:
        """The transforms, on decoded text: of a corpus (code_point_chunks), a prime, a
        text to score."""
        if not self.keep_crlf:
            text = text.replace("\r\n", "\n")
        if self.unidecode:
            text = unidecode(text)
        if self.lower:
            text = text.lower()
        return text


# ----------------------------------------------------------------------------------------
# finding and reading sources


def code_point_chunks(raw: BinaryIO, name: str, options: TextOptions,
                      chunk_bytes: int = CHUNK_BYTES, on_bytes=None) -> Iterator[np.ndarray]:
    """Yield the file's characters, through `options`, as arrays of code points (uint8
    when ASCII, else uint32).

    Decoding errors raise DataError naming the file and the byte offset of the bad byte.
    """
    held_cr = ""  # a trailing \r waits for the next chunk, which may start with \n
    for text, final in _decoded(raw, name, options.encoding, chunk_bytes, on_bytes):
        text = held_cr + text
        held_cr = ""
        if not options.keep_crlf and text.endswith("\r") and not final:
            held_cr, text = "\r", text[:-1]
        text = options.apply(text)
        if text:
            yield code_points(text)


def code_points_of(data: bytes, name: str, options: TextOptions) -> np.ndarray:
    """A whole small file's characters at once, as code_point_chunks would give them
    (joined): one decode call instead of an incremental decoder, for the many small files
    of a directory."""
    try:
        text = data.decode(options.encoding)
    except UnicodeDecodeError as e:
        raise _decode_error(name, e.start, options.encoding, e.reason) from None
    except LookupError:
        raise DataError(f"unknown encoding {options.encoding!r}") from None
    if text.startswith("\ufeff") and options.encoding.lower().replace("-", "") == "utf8":
        text = text[1:]
    return code_points(options.apply(text))


def _decode_error(name: str, at: int, encoding: str, reason: str) -> DecodeError:
    return DecodeError(f"{name}: bytes at offset {at} are not valid {encoding} ({reason}); "
                       f"pass --encoding with the file's encoding (e.g. latin-1)")


def _decoded(raw: BinaryIO, name: str, encoding: str, chunk_bytes: int,
             on_bytes) -> Iterator[tuple[str, bool]]:
    """(text, final) for each chunk of the file, decoded incrementally, without a BOM."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r}") from None
    offset = 0  # bytes of the file consumed so far
    first = True
    while True:
        block = raw.read(chunk_bytes)
        final = not block
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(block, final=final)
        except UnicodeDecodeError as e:
            at = offset - pending + e.start
            raise _decode_error(name, at, encoding, e.reason) from None
        offset += len(block)
        if on_bytes is not None:
            on_bytes(len(block))
        if first and text.startswith("\ufeff") and encoding.lower().replace("-", "") == "utf8":
            text = text[1:]  # a byte-order mark is not part of the text
        first = False
        yield text, final
        if final:
            return


def code_points(text: str) -> np.ndarray:
    # str.isascii() is O(1) in CPython: ASCII text goes straight from bytes to uint8.
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


class Source:
    """One input, opened for a pass: a file, or standard input spooled to a temporary file.
    `identity()` (size and modification time) tells whether it changed between passes."""
    def __init__(self, name: str, spool_dir: Path):
        self.name = name
        self.path = Path(name)
        self.spooled = None
        if name == "-":
            fd, tmp = tempfile.mkstemp(prefix=".stdin-", suffix=".tmp", dir=spool_dir)
            self.path = self.spooled = Path(tmp)
            try:
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(sys.stdin.buffer, out, CHUNK_BYTES)
            except BaseException as e:
                self.cleanup()  # an interrupted or failed spool leaves nothing in $TMPDIR
                if isinstance(e, OSError):
                    raise DataError(f"cannot spool standard input to {spool_dir}: "
                                    f"{write_failure(e)}") from None
                raise

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def identity(self) -> tuple[int, int]:
        st = self.path.stat()
        return st.st_size, st.st_mtime_ns

    def open(self) -> BinaryIO:
        try:
            return open(self.path, "rb")
        except OSError as e:
            raise DataError(f"cannot read {self.name}: {e.strerror}") from None

    def cleanup(self) -> None:
        if self.spooled is not None:
            self.spooled.unlink(missing_ok=True)
