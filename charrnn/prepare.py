"""Turn text files into a vocabulary and compact encoded splits.

    charrnn prepare corpus.txt            # -> data/corpus/{vocab.json,meta.json,train.bin,val.bin}

    from charrnn.prepare import prepare
    meta = prepare(["corpus.txt"], "data/corpus")

The input is streamed in fixed-size chunks, twice: the first pass counts characters (the
vocabulary) and checks the encoding, the second writes the ids. Peak memory is a few chunks,
whatever the corpus size. Splits are contiguous: train is the beginning of the text, then
validation, then (optionally) test, so validation is the last `val_frac` of the text when
there is no test split, as in nanoGPT's shakespeare_char.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from .errors import DataError
from .vocab import MAX_CODE_POINT, Vocab

CHUNK_BYTES = 8 << 20
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


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

    def apply(self, text: str) -> str:
        """The same transforms, for a prime given at sampling time."""
        if not self.keep_crlf:
            text = text.replace("\r\n", "\n")
        if self.unidecode:
            text = _unidecode(text)
        if self.lower:
            text = text.lower()
        return text


# ----------------------------------------------------------------------------------------
# finding and reading sources


def find_sources(inputs: list[str], glob: str = "*") -> list[str]:
    """Expand directories (recursively, matching `glob`) into a sorted list of files."""
    if not inputs:
        raise DataError("no corpus given: pass a text file, a directory or - for stdin")
    found: list[str] = []
    for name in inputs:
        if name == "-":
            found.append(name)
            continue
        path = Path(name)
        if path.is_dir():
            files = sorted(p for p in path.rglob(glob) if p.is_file())
            if not files:
                raise DataError(f"no files matching {glob!r} under directory {path}")
            found += [str(p) for p in files]
        elif path.is_file():
            found.append(str(path))
        elif path.exists():
            raise DataError(f"not a regular file: {path}")
        else:
            raise DataError(f"corpus not found: {path}")
    return found


def _unidecode(text: str) -> str:
    from unidecode import unidecode
    return unidecode(text)


def code_point_chunks(raw: BinaryIO, name: str, options: TextOptions,
                      chunk_bytes: int = CHUNK_BYTES, on_bytes=None) -> Iterator[np.ndarray]:
    """Yield the file's characters as arrays of code points (uint8 when ASCII, else uint32).

    Decoding errors raise DataError naming the file and the byte offset of the bad byte.
    """
    try:
        decoder = codecs.getincrementaldecoder(options.encoding)(errors="strict")
    except LookupError:
        raise DataError(f"unknown encoding {options.encoding!r}") from None
    offset = 0  # bytes of the file consumed so far
    held_cr = ""  # a trailing \r waits for the next chunk, which may start with \n
    first = True
    while True:
        block = raw.read(chunk_bytes)
        final = not block
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(block, final=final)
        except UnicodeDecodeError as e:
            at = offset - pending + e.start
            raise DataError(
                f"{name}: bytes at offset {at} are not valid {options.encoding} "
                f"({e.reason}); pass --encoding with the file's encoding (e.g. latin-1)"
            ) from None
        offset += len(block)
        if on_bytes is not None:
            on_bytes(len(block))
        if first and text.startswith("\ufeff") and options.encoding.lower().replace("-", "") == "utf8":
            text = text[1:]  # a byte-order mark is not part of the text
        first = False
        text = held_cr + text
        held_cr = ""
        if not options.keep_crlf:
            if text.endswith("\r") and not final:
                held_cr, text = "\r", text[:-1]
            text = text.replace("\r\n", "\n")
        if options.unidecode:
            text = _unidecode(text)
        if options.lower:
            text = text.lower()
        if text:
            yield _code_points(text)
        if final:
            return


def _code_points(text: str) -> np.ndarray:
    # str.isascii() is O(1) in CPython: ASCII text goes straight from bytes to uint8.
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


class _Source:
    """One input, opened for a pass: a file, or standard input spooled to a temporary file."""

    def __init__(self, name: str, spool_dir: Path):
        self.name = name
        self.path = Path(name)
        self.spooled = None
        if name == "-":
            fd, tmp = tempfile.mkstemp(prefix=".stdin-", dir=spool_dir)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(sys.stdin.buffer, out, CHUNK_BYTES)
            self.path = self.spooled = Path(tmp)

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def open(self) -> BinaryIO:
        try:
            return open(self.path, "rb")
        except OSError as e:
            raise DataError(f"cannot read {self.name}: {e.strerror}") from None

    def cleanup(self) -> None:
        if self.spooled is not None:
            self.spooled.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------
# the two passes


def prepare(inputs: list[str], out_dir: str | Path, val_frac: float = 0.1,
            test_frac: float = 0.0, options: TextOptions = TextOptions(), glob: str = "*",
            vocab: Vocab | None = None, unk: str | None = None, progress: bool = False,
            chunk_bytes: int = CHUNK_BYTES) -> dict:
    """Prepare `inputs` into `out_dir`; returns the metadata written to meta.json.

    With `vocab`, characters are encoded with that vocabulary (for fine-tuning); a character
    outside it becomes `unk` when given, else is an error.
    """
    if not (0 < val_frac < 1):
        raise DataError(f"--val-frac must be between 0 and 1 (exclusive), got {val_frac}")
    if not (0 <= test_frac < 1) or val_frac + test_frac >= 1:
        raise DataError(
            f"--val-frac + --test-frac must leave training text (got {val_frac} + {test_frac})")
    names = find_sources(inputs, glob)
    sources = [_Source(n, Path(tempfile.gettempdir())) for n in names]
    try:
        return _prepare(sources, Path(out_dir), val_frac, test_frac, options, vocab, unk,
                        progress, chunk_bytes)
    finally:
        for s in sources:
            s.cleanup()


def _prepare(sources, out_dir, val_frac, test_frac, options, vocab, unk, progress, chunk_bytes):
    started = time.perf_counter()
    total_bytes = sum(s.size for s in sources)
    bar = _progress_bar(2 * total_bytes, progress)

    # Pass 1: histogram of code points, checksums, and a decode check of every byte.
    counts = np.zeros(MAX_CODE_POINT + 1, dtype=np.int64)
    digests = []
    for source in sources:
        digest = hashlib.sha256()
        with source.open() as raw:
            reader = _HashingReader(raw, digest)
            for cps in code_point_chunks(reader, source.name, options, chunk_bytes, bar.update):
                if cps.dtype == np.uint8:
                    counts[:256] += np.bincount(cps, minlength=256)
                else:
                    counts += np.bincount(cps, minlength=MAX_CODE_POINT + 1)
        digests.append(digest.hexdigest())

    n_chars = int(counts.sum())
    names = ", ".join(s.name for s in sources)
    if n_chars == 0:
        raise DataError(f"corpus is empty: {names}")
    if all(chr(p).isspace() for p in np.flatnonzero(counts)):
        raise DataError(f"corpus holds only whitespace ({n_chars} characters): {names}")

    seen = Vocab.from_counts(counts)
    unk_id = -1
    given_vocab = vocab is not None
    if vocab is None:
        vocab = seen
    else:
        missing = [c for c in seen.chars if c not in vocab]
        if missing and unk is None:
            shown = ", ".join(repr(c) for c in missing[:10])
            raise DataError(f"{len(missing)} characters are not in the given vocabulary "
                            f"({shown}); pass --unk CHAR to map them to one character")
        if unk is not None:
            if unk not in vocab:
                raise DataError(f"--unk {unk!r} is not in the given vocabulary")
            unk_id = vocab.index[unk]
        # Recount under the given vocabulary so counts line up with its ids.
        vocab = Vocab(vocab.chars, [int(counts[ord(c)]) for c in vocab.chars])
        if unk is not None:
            vocab.counts[unk_id] += sum(seen.counts[seen.index[c]] for c in missing)

    n_train = int(n_chars * (1 - val_frac - test_frac))
    n_val = int(n_chars * val_frac) if test_frac > 0 else n_chars - n_train
    n_test = n_chars - n_train - n_val
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    if n_train < 2 or n_val < 2:
        raise DataError(f"corpus too short to split: {n_chars} characters give {n_train} "
                        f"for training and {n_val} for validation; give more text")

    # Pass 2: encode into the split files, written under temporary names. The output
    # directory is made only now, so a corpus refused above leaves nothing behind.
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-").close()
    except OSError as e:
        raise DataError(f"cannot write to output directory {out_dir}: {e.strerror}") from None
    table = vocab.lookup_table(unk=unk_id)
    dtype = vocab.dtype
    tmp = {s: out_dir / f".{s}.bin.tmp" for s in SPLITS if sizes[s] > 0}
    files = {s: open(p, "wb") for s, p in tmp.items()}
    try:
        split_iter = iter(s for s in SPLITS if sizes[s] > 0)
        split = next(split_iter)
        room = sizes[split]
        for source in sources:
            with source.open() as raw:
                for cps in code_point_chunks(raw, source.name, options, chunk_bytes, bar.update):
                    ids = (table[:256] if cps.dtype == np.uint8 else table)[cps].astype(dtype)
                    while len(ids):
                        take = ids[:room]
                        files[split].write(take.tobytes())
                        ids = ids[len(take):]
                        room -= len(take)
                        if room == 0:
                            split = next(split_iter, None)
                            room = sizes[split] if split else 0
        for f in files.values():
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        for f in files.values():
            f.close()
        for p in tmp.values():
            p.unlink(missing_ok=True)
        raise
    for f in files.values():
        f.close()
    bar.close()

    meta = {
        "format_version": FORMAT_VERSION,
        "vocab_size": len(vocab),
        "dtype": dtype.name,
        "byteorder": "little",
        "chars": n_chars,
        "splits": sizes,
        "val_frac": val_frac,
        "test_frac": test_frac,
        "options": options.to_dict(),
        # How the vocabulary came about: a reuse of it must be asked for the same way.
        "vocab_given": given_vocab,
        "unk": unk,
        "sources": [
            {"path": s.name if s.name == "-" else str(Path(s.name).resolve()),
             "bytes": s.size, "mtime_ns": 0 if s.name == "-" else s.path.stat().st_mtime_ns,
             "sha256": d}
            for s, d in zip(sources, digests)
        ],
        "seconds": round(time.perf_counter() - started, 3),
    }
    # Replace the old dataset only now that the new one is complete; meta.json goes last, so
    # a directory with a meta.json always has the files it describes.
    (out_dir / "meta.json").unlink(missing_ok=True)
    for split in SPLITS:
        (out_dir / f"{split}.bin").unlink(missing_ok=True)
    for split, p in tmp.items():
        os.replace(p, out_dir / f"{split}.bin")
    vocab.save(out_dir / "vocab.json")
    with open(out_dir / ".meta.json.tmp", "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    os.replace(out_dir / ".meta.json.tmp", out_dir / "meta.json")
    return meta


class _HashingReader:
    """A file wrapper that feeds every block it reads into a hash."""

    def __init__(self, raw: BinaryIO, digest):
        self.raw, self.digest = raw, digest

    def read(self, n: int) -> bytes:
        block = self.raw.read(n)
        self.digest.update(block)
        return block


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="prepare",
                leave=False, dynamic_ncols=True)


def summary(meta: dict, vocab: Vocab, rarest: int = 8) -> list[str]:
    """Human-readable lines describing a prepared dataset."""
    sizes = meta["splits"]
    lines = [
        f"characters: {meta['chars']:,}  vocabulary: {meta['vocab_size']} ({meta['dtype']})",
        "splits: " + "  ".join(f"{s} {n:,}" for s, n in sizes.items() if n),
    ]
    if vocab.counts:
        order = sorted(range(len(vocab)), key=lambda i: (vocab.counts[i], vocab.chars[i]))
        shown = ", ".join(f"{vocab.chars[i]!r}×{vocab.counts[i]}" for i in order[:rarest])
        lines.append(f"rarest: {shown}")
    return lines
