"""Turn text files into a vocabulary and compact encoded splits.

    charrnn prepare corpus.txt            # -> data/corpus/{vocab.json,meta.json,train.bin,val.bin}

    from charrnn.corpus.prepare import prepare
    meta = prepare(["corpus.txt"], "data/corpus")

The input is streamed in fixed-size chunks, twice: the first pass (passes.py) counts
characters and checks the encoding, plan.py chooses the vocabulary and the splits, the
second pass (writing.py) writes the ids. Peak memory is a few chunks, whatever the corpus
size. Splits are contiguous: train is the beginning of
the text, then validation, then (optionally) test, so validation is the last `val_frac` of
the text when there is no test split, as in nanoGPT's shakespeare_char.

Several files, a directory, or --split-on make a corpus of documents (documents.py): each
starts with the end-of-document mark (vocab.py), documents.npz records them, and the
splits fall between documents where they can.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ..core.bars import progress_bar
from ..core.errors import CharRNNError, DataError
from .documents import SPLIT_ON, TABLE
from .inputs import Corpus, check_encoding
from .passes import Counted, count
from .plan import Plan, make_plan
from .staging import SPLITS, staging
from .text import CHUNK_BYTES, TextOptions
from .vocab import Vocab
from .writing import SplitWriter, encode, reread, spooled

FORMAT_VERSION = 1
ONE_SYMBOL = 0.99  # a corpus of which one character is this share is refused: no text


def prepare(inputs: list[str], out_dir: str | Path, val_frac: float = 0.1,
            test_frac: float = 0.0, options: TextOptions = TextOptions(), glob: str = "*",
            vocab: Vocab | None = None, unk: str | None = None, progress: bool = False,
            chunk_bytes: int = CHUNK_BYTES, reuse=None, replace_vocab: bool = True,
            split_on: str = "file", strict: bool = False) -> dict:
    """Prepare `inputs` into `out_dir`; returns the metadata written to meta.json. `vocab`:
    encode with that vocabulary (fine-tuning), characters outside it becoming `unk` (else an
    error); without `replace_vocab`, refuse to replace a preparation of another vocabulary.
    `split_on` "line" or "blankline": a document per line or paragraph. `strict`: refuse a
    directory's files that are not text instead of skipping them. The files are built in a
    private directory in `out_dir`, moved into place whole under its lock (staging.py): a
    failure keeps the previous preparation. `reuse`, called under the lock, may return the
    meta of a preparation another process has just made."""
    _check_arguments(val_frac, test_frac, split_on, options)
    started = time.perf_counter()
    corpus = Corpus(inputs, glob, Path(tempfile.gettempdir()))
    # Many files: their text spooled in pass 1 for pass 2 (a temporary file, gone on close).
    spool = tempfile.TemporaryFile(prefix=".charrnn-spool-") if corpus.many else None
    try:
        bar = _bar(corpus, progress)
        counted = count(corpus, options, split_on, strict, chunk_bytes, bar.update, spool)
        _check_text(counted, corpus)
        plan = make_plan(counted, corpus, vocab, unk, split_on, val_frac, test_frac)
        with staging(Path(out_dir)) as (stage, publish):
            if reuse is not None and (meta := reuse()) is not None:
                return meta
            if not replace_vocab:
                _check_same_vocab(Path(out_dir), plan.vocab)
            _encode(_text(spool, corpus, counted, options, chunk_bytes, bar.update),
                    counted, stage, plan, corpus.roots[0][0])
            bar.close()
            meta = _meta(plan, val_frac, test_frac, options, unk, corpus, counted,
                         time.perf_counter() - started, split_on)
            _write_tables(stage, plan, counted, meta)
            publish()
        return meta
    finally:
        corpus.cleanup()
        if spool is not None:
            spool.close()


def _bar(corpus: Corpus, progress: bool):
    """A bar over both passes' bytes (no total for a directory, whose files are not opened
    yet: its size is known at the end of pass 1)."""
    total = corpus.bytes
    return progress_bar(2 * total if total is not None else None, progress, "prepare",
                        unit="B")


def _text(spool, corpus: Corpus, counted: Counted, options, chunk_bytes: int, on_bytes):
    """Pass 2's code points: from the spool of many files, or a single file read again."""
    if spool is not None:
        return spooled(spool, counted.ascii, chunk_bytes, on_bytes)
    return reread(corpus, counted, options, chunk_bytes, on_bytes)


def _encode(pieces, counted: Counted, stage: Path, plan: Plan, name: str) -> None:
    """Pass 2 into one file per split, in `stage`, each synced before it is published."""
    files = {s: open(stage / f"{s}.bin", "wb") for s in SPLITS if plan.sizes[s] > 0}
    with contextlib.ExitStack() as stack:
        for f in files.values():
            stack.enter_context(f)
        encode(pieces, counted, SplitWriter(files, plan.sizes),
               plan.vocab.lookup_table(unk=plan.unk_id), plan.vocab.dtype, plan.mark, name)
        for f in files.values():
            f.flush()
            os.fsync(f.fileno())


def _check_text(counted: Counted, corpus: Corpus) -> None:
    """Refuse a corpus that is no text to learn from: nothing, only whitespace, one symbol."""
    counts, n_chars = counted.counts, counted.chars
    names = ", ".join(name for name, _, _ in corpus.roots)
    if n_chars == 0:
        skipped = f" ({counted.n_skipped} files skipped as not text)" if counted.n_skipped else ""
        raise DataError(f"corpus is empty{skipped}: {names}")
    points = np.flatnonzero(counts)
    if all(chr(p).isspace() for p in points):
        raise DataError(f"corpus holds only whitespace ({n_chars} characters): {names}")
    top = int(points[np.argmax(counts[points])])
    if counts[top] >= ONE_SYMBOL * n_chars:
        share = ("only" if len(points) == 1
                 else f"nearly all ({int(counts[top]):,} of {n_chars:,} characters)")
        raise DataError(f"corpus is {share} {chr(top)!r}: there is nothing for a model to "
                        f"learn; is it the file you meant? {names}")


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


def _write_tables(stage: Path, plan: Plan, counted: Counted, meta: dict) -> None:
    """The documents, the vocabulary and meta.json, next to the splits."""
    if plan.documents:
        counted.table.save(stage / TABLE, plan.starts, plan.sizes)
    plan.vocab.save(stage / "vocab.json")
    with open(stage / "meta.json", "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)


def _check_arguments(val_frac: float, test_frac: float, split_on: str,
                     options: TextOptions) -> None:
    if split_on not in SPLIT_ON:
        raise DataError(f"--split-on must be one of {', '.join(SPLIT_ON)}, got {split_on!r}")
    check_encoding(options.encoding)
    if not (0 < val_frac < 1):
        raise DataError(f"--val-frac must be between 0 and 1 (exclusive), got {val_frac}")
    if not (0 <= test_frac < 1) or val_frac + test_frac >= 1:
        raise DataError(
            f"--val-frac + --test-frac must leave training text (got {val_frac} + {test_frac})")


def _meta(plan: Plan, val_frac, test_frac, options, unk, corpus, counted, seconds,
          split_on) -> dict:
    vocab, sizes = plan.vocab, plan.sizes
    meta = {
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
        "vocab_given": plan.given,
        "unk": unk,
        "sources": [_source(corpus, i, d) for i, d in enumerate(counted.digests)],
        "seconds": round(seconds, 3),
    }
    if plan.documents:
        meta.update({"documents": len(counted.table), "split_on": split_on,
                     "split_by": plan.by, "files": int(sum(counted.kept)),
                     "bytes": corpus.bytes, "skipped": counted.n_skipped,
                     "skipped_shown": counted.skipped})
    return meta


def _source(corpus: Corpus, i: int, digest: str) -> dict:
    name, path, is_dir = corpus.roots[i]
    if name == "-":
        return {"path": "-", "bytes": path.stat().st_size, "mtime_ns": 0, "sha256": digest}
    if is_dir:
        return {"path": str(path.resolve()), "directory": True, "glob": corpus.glob,
                "sha256": digest}
    st = path.stat()
    return {"path": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sha256": digest}


def summary(meta: dict, vocab: Vocab, rarest: int = 8) -> list[str]:
    """Human-readable lines describing a prepared dataset."""
    sizes = meta["splits"]
    lines = [
        f"characters: {meta['chars']:,}  vocabulary: {meta['vocab_size']} ({meta['dtype']})"
        + (", with the end-of-document mark" if vocab.end is not None else ""),
        "splits: " + "  ".join(f"{s} {n:,}" for s, n in sizes.items() if n),
    ]
    if vocab.counts:
        n = len(vocab.text_chars)
        order = sorted(range(n), key=lambda i: (vocab.counts[i], vocab.chars[i]))
        shown = ", ".join(f"{vocab.chars[i]!r}×{vocab.counts[i]}" for i in order[:rarest])
        lines.append(f"rarest: {shown}")
    return lines
