"""Turn text files into a vocabulary and compact encoded splits.

    charrnn prepare corpus.txt            # -> data/corpus/{vocab.json,meta.json,train.bin,val.bin}

    from charrnn.corpus.prepare import prepare
    meta = prepare(["corpus.txt"], "data/corpus")

The input is streamed in fixed-size chunks, twice (passes.py): the first pass counts
characters (the vocabulary) and checks the encoding, the second writes the ids. Peak memory
is a few chunks, whatever the corpus size. Splits are contiguous: train is the beginning of
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
from .passes import Counted, SplitWriter, count, encode, reread, spooled
from .staging import SPLITS, staging
from .text import CHUNK_BYTES, TextOptions
from .vocab import Vocab, unknown_characters

FORMAT_VERSION = 1
ONE_SYMBOL = 0.99  # a corpus of which one character is this share is refused: no text


def prepare(inputs: list[str], out_dir: str | Path, val_frac: float = 0.1,
            test_frac: float = 0.0, options: TextOptions = TextOptions(), glob: str = "*",
            vocab: Vocab | None = None, unk: str | None = None, progress: bool = False,
            chunk_bytes: int = CHUNK_BYTES, reuse=None, replace_vocab: bool = True,
            split_on: str = "file", strict: bool = False) -> dict:
    """Prepare `inputs` into `out_dir`; returns the metadata written to meta.json. With
    `vocab`, encode with that vocabulary (fine-tuning), a character outside it becoming
    `unk` if given, else an error; without `replace_vocab`, refuse to replace a preparation
    of another vocabulary. `split_on` "line" or "blankline" makes a document of each line
    or paragraph; `strict` refuses a directory's files that are not text instead of
    skipping them.

    The files are built in a private directory in `out_dir`, moved into place once complete,
    under a lock on `out_dir` (staging.py): preparers of the same output take turns, and a
    failure leaves the previous preparation as it was. `reuse`, called under the lock, may
    return the meta of a preparation another process has just made.
    """
    _check_fractions(val_frac, test_frac)
    if split_on not in SPLIT_ON:
        raise DataError(f"--split-on must be one of {', '.join(SPLIT_ON)}, got {split_on!r}")
    check_encoding(options.encoding)
    corpus = Corpus(inputs, glob, Path(tempfile.gettempdir()))
    # Many files: their text spooled in pass 1 for pass 2 (a temporary file, gone on close).
    spool = tempfile.TemporaryFile(prefix=".charrnn-spool-") if corpus.many else None
    try:
        bar = progress_bar(2 * corpus.bytes, progress, "prepare", unit="B")
        started = time.perf_counter()
        counted = count(corpus, options, split_on, strict, chunk_bytes, bar.update, spool)
        _check_text(counted, corpus)
        vocab, unk_id, given = _choose_vocab(counted.counts, vocab, unk, corpus)
        documents = corpus.many or split_on != "file"
        vocab, mark, starts = _with_mark(vocab, given, documents, counted)
        total = counted.chars + (len(starts) if mark is not None else 0)
        sizes, by = split_sizes(total, val_frac, test_frac, starts if documents else None)
        with staging(Path(out_dir)) as (stage, publish):
            if reuse is not None and (meta := reuse()) is not None:
                return meta
            if not replace_vocab:
                _check_same_vocab(Path(out_dir), vocab)
            pieces = (spooled(spool, chunk_bytes, bar.update) if spool is not None
                      else reread(corpus, counted, options, chunk_bytes, bar.update))
            _encode(pieces, counted, stage, vocab, unk_id, mark, sizes, corpus.roots[0][0])
            bar.close()
            if documents:
                counted.table.save(stage / TABLE, starts, sizes)
            meta = _meta(vocab, sizes, val_frac, test_frac, options, given, unk, corpus,
                         counted, time.perf_counter() - started, split_on, by)
            _write_meta(stage, vocab, meta)
            publish()
        return meta
    finally:
        corpus.cleanup()
        if spool is not None:
            spool.close()


def _with_mark(vocab: Vocab, given: bool, documents: bool, counted: Counted):
    """(the vocabulary, the id of the end-of-document mark written before each document or
    None, where each document starts in the encoded text). Documents of a corpus of many
    get the mark; one text file stays as it always was, without. A given vocabulary without
    the mark (a model trained on one file) keeps none."""
    starts = counted.table.starts()
    if not documents:
        return vocab, None, starts
    n = len(starts)
    if not given:
        vocab = vocab.with_end(n)
    elif vocab.end is not None and vocab.counts is not None:
        vocab.counts[vocab.end] = n
    if vocab.end is None:
        return vocab, None, starts
    return vocab, vocab.end, starts + np.arange(n)  # each document after its own mark


def _encode(pieces, counted, stage: Path, vocab: Vocab, unk_id: int, mark: int | None,
            sizes: dict, name: str) -> None:
    """Pass 2 into one file per split, in `stage`, each synced before it is published."""
    files = {s: open(stage / f"{s}.bin", "wb") for s in SPLITS if sizes[s] > 0}
    with contextlib.ExitStack() as stack:
        for f in files.values():
            stack.enter_context(f)
        encode(pieces, counted, SplitWriter(files, sizes), vocab.lookup_table(unk=unk_id),
               vocab.dtype, mark, name)
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


def _choose_vocab(counts: np.ndarray, vocab: Vocab | None, unk: str | None, corpus
                  ) -> tuple[Vocab, int, bool]:
    """The vocabulary to encode with (the text's own, or the given one recounted), the id
    that unknown characters take (-1: none may occur), and whether it was given."""
    seen = Vocab.from_counts(counts)
    if vocab is None:
        return seen, -1, False
    missing = [c for c in seen.chars if c not in vocab]
    if missing and unk is None:
        raise DataError(unknown_characters("the text", missing, "the given vocabulary")
                        + "; pass --unk CHAR to map them to one character")
    unk_id = -1
    if unk is not None:
        if unk not in vocab:
            raise DataError(f"--unk {unk!r} is not in the given vocabulary")
        unk_id = vocab.index[unk]
    # Recount under the given vocabulary so counts line up with its ids.
    recounted = Vocab(vocab.text_chars, [int(counts[ord(c)]) for c in vocab.text_chars],
                      None if vocab.end is None else 0)
    if unk is not None:
        recounted.counts[unk_id] += sum(seen.counts[seen.index[c]] for c in missing)
    return recounted, unk_id, True


def split_sizes(n_chars: int, val_frac: float, test_frac: float,
                starts: np.ndarray | None = None) -> tuple[dict[str, int], str]:
    """Characters per split: train from the start, then val, then test; and how they were
    cut. With the documents' `starts`, each cut moves to the nearest document start, so
    that no document is split, when that keeps every split within a factor of two of its
    share ("documents"); else the cuts fall where the shares say ("characters")."""
    n_train = int(n_chars * (1 - val_frac - test_frac))
    n_val = int(n_chars * val_frac) if test_frac > 0 else n_chars - n_train
    by = "characters"
    if starts is not None and len(starts) > 1:
        cuts = [_nearest(starts[1:], n_train), _nearest(starts[1:], n_train + n_val)]
        if test_frac == 0:
            cuts[1] = n_chars
        shares = np.diff([0, *cuts, n_chars]) / n_chars
        wanted = [1 - val_frac - test_frac, val_frac, test_frac]
        if all(w / 2 <= s <= 2 * w for s, w in zip(shares, wanted) if w):
            n_train, n_val, by = cuts[0], cuts[1] - cuts[0], "documents"
    sizes = {"train": n_train, "val": n_val, "test": n_chars - n_train - n_val}
    if n_train < 2 or n_val < 2:
        raise DataError(f"corpus too short to split: {n_chars} characters give {n_train} "
                        f"for training and {n_val} for validation; give more text")
    return sizes, by


def _nearest(starts: np.ndarray, at: int) -> int:
    i = int(np.searchsorted(starts, at))
    near = [int(starts[k]) for k in (i - 1, i) if 0 <= k < len(starts)]
    return min(near, key=lambda s: abs(s - at))


def _meta(vocab, sizes, val_frac, test_frac, options, given, unk, corpus, counted, seconds,
          split_on, by) -> dict:
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
        "vocab_given": given,
        "unk": unk,
        "sources": [_source(corpus, i, d) for i, d in enumerate(counted.digests)],
        "seconds": round(seconds, 3),
    }
    if corpus.many or split_on != "file":
        meta.update({"documents": len(counted.table), "split_on": split_on, "split_by": by,
                     "files": int(sum(counted.kept)), "bytes": corpus.bytes, "skipped": counted.n_skipped,
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
