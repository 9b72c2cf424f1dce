"""Turn text files into a vocabulary and compact encoded splits.

    charrnn prepare corpus.txt            # -> data/corpus/{vocab.json,meta.json,train.bin,val.bin}

    from charrnn.corpus.prepare import prepare
    meta = prepare(["corpus.txt"], "data/corpus")

The input is streamed in fixed-size chunks, twice: the first pass counts characters (the
vocabulary) and checks the encoding, the second writes the ids. Peak memory is a few chunks,
whatever the corpus size. Splits are contiguous: train is the beginning of the text, then
validation, then (optionally) test, so validation is the last `val_frac` of the text when
there is no test split, as in nanoGPT's shakespeare_char.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..core.bars import progress_bar
from ..core.errors import CharRNNError, DataError
from .staging import SPLITS, staging
from .text import CHUNK_BYTES, Source, TextOptions, code_point_chunks, find_sources
from .vocab import MAX_CODE_POINT, Vocab

FORMAT_VERSION = 1


def _changed(source: Source) -> DataError:
    return DataError(f"{source.name} changed while it was being prepared; nothing was "
                     f"written: prepare it again once it is complete")


# ----------------------------------------------------------------------------------------
# the two passes


def prepare(inputs: list[str], out_dir: str | Path, val_frac: float = 0.1,
            test_frac: float = 0.0, options: TextOptions = TextOptions(), glob: str = "*",
            vocab: Vocab | None = None, unk: str | None = None, progress: bool = False,
            chunk_bytes: int = CHUNK_BYTES, reuse=None, replace_vocab: bool = True) -> dict:
    """Prepare `inputs` into `out_dir`; returns the metadata written to meta.json. With
    `vocab`, encode with that vocabulary (fine-tuning), a character outside it becoming
    `unk` if given, else an error; without `replace_vocab`, refuse to replace a preparation
    of another vocabulary.

    The files are built in a private directory in `out_dir`, moved into place once complete,
    under a lock on `out_dir` (staging.py): preparers of the same output take turns, and a
    failure leaves the previous preparation as it was. `reuse`, called under the lock, may
    return the meta of a preparation another process has just made.
    """
    _check_fractions(val_frac, test_frac)
    names, sources = find_sources(inputs, glob), []
    try:
        sources += (Source(n, Path(tempfile.gettempdir())) for n in names)
        bar = progress_bar(2 * sum(s.size for s in sources), progress, "prepare", unit="B")
        started, identities = time.perf_counter(), [s.identity() for s in sources]
        counts, digests = _count(sources, options, chunk_bytes, bar)
        vocab, unk_id, given = _choose_vocab(counts, vocab, unk, sources)
        sizes = split_sizes(int(counts.sum()), val_frac, test_frac)
        with staging(Path(out_dir)) as (stage, publish):
            if reuse is not None and (meta := reuse()) is not None:
                return meta
            if not replace_vocab:
                _check_same_vocab(Path(out_dir), vocab)
            _encode(sources, stage, vocab.lookup_table(unk=unk_id), vocab.dtype, sizes,
                    digests, options, chunk_bytes, bar)
            _check_unchanged(sources, identities)
            bar.close()
            meta = _meta(vocab, sizes, val_frac, test_frac, options, given, unk, sources,
                         digests, time.perf_counter() - started)
            _write_meta(stage, vocab, meta)
            publish()
        return meta
    finally:
        for s in sources:
            s.cleanup()


def _check_unchanged(sources, identities) -> None:
    """Refuse a source that changed (size, time) between the two passes."""
    for source, identity in zip(sources, identities):
        if source.identity() != identity:
            raise _changed(source)


def _check_same_vocab(out_dir: Path, vocab: Vocab) -> None:
    """Refuse to replace a preparation whose vocabulary differs: a model may be trained on
    it, and its ids mean other characters than the new ones would."""
    try:
        old = Vocab.load(out_dir / "vocab.json")
    except (OSError, CharRNNError):
        return  # nothing there, or nothing of ours to keep
    if old.chars != vocab.chars:
        raise DataError(f"{out_dir} holds a preparation with another vocabulary ({len(old)} "
                        f"characters, the text has {len(vocab)}); choose another -o, or "
                        f"--vocab {out_dir}/vocab.json to encode the text with that one")


def _write_meta(stage: Path, vocab: Vocab, meta: dict) -> None:
    vocab.save(stage / "vocab.json")
    with open(stage / "meta.json", "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)


def _check_fractions(val_frac: float, test_frac: float) -> None:
    if not (0 < val_frac < 1):
        raise DataError(f"--val-frac must be between 0 and 1 (exclusive), got {val_frac}")
    if not (0 <= test_frac < 1) or val_frac + test_frac >= 1:
        raise DataError(
            f"--val-frac + --test-frac must leave training text (got {val_frac} + {test_frac})")


def _count(sources, options, chunk_bytes, bar) -> tuple[np.ndarray, list[str]]:
    """Pass 1: the histogram of code points and each source's checksum; decodes every byte,
    so an encoding error is found before anything is written."""
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
    return counts, digests


def _choose_vocab(counts: np.ndarray, vocab: Vocab | None, unk: str | None, sources
                  ) -> tuple[Vocab, int, bool]:
    """The vocabulary to encode with (the text's own, or the given one recounted), the id
    that unknown characters take (-1: none may occur), and whether it was given."""
    seen = Vocab.from_counts(counts)
    if vocab is None:
        return seen, -1, False
    missing = [c for c in seen.chars if c not in vocab]
    if missing and unk is None:
        shown = ", ".join(repr(c) for c in missing[:10])
        raise DataError(f"{len(missing)} character{'s are' if len(missing) > 1 else ' is'} "
                        f"not in the given vocabulary "
                        f"({shown}); pass --unk CHAR to map them to one character")
    unk_id = -1
    if unk is not None:
        if unk not in vocab:
            raise DataError(f"--unk {unk!r} is not in the given vocabulary")
        unk_id = vocab.index[unk]
    # Recount under the given vocabulary so counts line up with its ids.
    recounted = Vocab(vocab.chars, [int(counts[ord(c)]) for c in vocab.chars])
    if unk is not None:
        recounted.counts[unk_id] += sum(seen.counts[seen.index[c]] for c in missing)
    return recounted, unk_id, True


def split_sizes(n_chars: int, val_frac: float, test_frac: float) -> dict[str, int]:
    """Characters per split: train from the start, then val, then test."""
    n_train = int(n_chars * (1 - val_frac - test_frac))
    n_val = int(n_chars * val_frac) if test_frac > 0 else n_chars - n_train
    sizes = {"train": n_train, "val": n_val, "test": n_chars - n_train - n_val}
    if n_train < 2 or n_val < 2:
        raise DataError(f"corpus too short to split: {n_chars} characters give {n_train} "
                        f"for training and {n_val} for validation; give more text")
    return sizes


def _encode(sources, stage: Path, table: np.ndarray, dtype: np.dtype, sizes: dict,
            digests: list[str], options, chunk_bytes, bar) -> None:
    """Pass 2: the ids of every character into one file per split, in `stage`. A source
    that reads differently from pass 1 (checksum, length, a character not counted) is
    refused: the files would not match the vocabulary or the sizes."""
    files = {s: open(stage / f"{s}.bin", "wb") for s in SPLITS if sizes[s] > 0}
    with contextlib.ExitStack() as stack:
        for f in files.values():
            stack.enter_context(f)
        order = iter(files)
        split = next(order)
        room = sizes[split]
        for source, expected in zip(sources, digests):
            digest = hashlib.sha256()
            with source.open() as raw:
                reader = _HashingReader(raw, digest)
                for cps in code_point_chunks(reader, source.name, options, chunk_bytes, bar.update):
                    ids = (table[:256] if cps.dtype == np.uint8 else table)[cps]
                    if len(ids) and ids.min() < 0:
                        raise _changed(source)  # a character pass 1 did not see
                    ids = ids.astype(dtype)
                    while len(ids):
                        if split is None:
                            raise _changed(source)  # longer than in pass 1
                        take = ids[:room]
                        files[split].write(take.tobytes())
                        ids = ids[len(take):]
                        room -= len(take)
                        if room == 0:
                            split = next(order, None)
                            room = sizes[split] if split else 0
            if digest.hexdigest() != expected:
                raise _changed(source)
        if split is not None:
            raise _changed(sources[-1])  # shorter than in pass 1
        for f in files.values():
            f.flush()
            os.fsync(f.fileno())


def _meta(vocab, sizes, val_frac, test_frac, options, given, unk, sources, digests,
          seconds) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "vocab_size": len(vocab),
        "dtype": vocab.dtype.name,
        "byteorder": "little",
        "chars": sum(sizes.values()),
        "splits": sizes,
        "val_frac": val_frac,
        "test_frac": test_frac,
        "options": options.to_dict(),
        # How the vocabulary came about: a reuse of it must be asked for the same way.
        "vocab_given": given,
        "unk": unk,
        "sources": [
            {"path": s.name if s.name == "-" else str(Path(s.name).resolve()),
             "bytes": s.size, "mtime_ns": 0 if s.name == "-" else s.path.stat().st_mtime_ns,
             "sha256": d}
            for s, d in zip(sources, digests)
        ],
        "seconds": round(seconds, 3),
    }


class _HashingReader:
    """A file wrapper that feeds every block it reads into a hash."""
    def __init__(self, raw: BinaryIO, digest):
        self.raw, self.digest = raw, digest

    def read(self, n: int) -> bytes:
        block = self.raw.read(n)
        self.digest.update(block)
        return block


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
