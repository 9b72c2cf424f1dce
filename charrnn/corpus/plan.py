"""What pass 1 of `prepare` decides for pass 2: the vocabulary (the text's own, or one
given), the end-of-document mark, and where the splits fall.

    plan = make_plan(counted, corpus, vocab=None, unk=None, split_on="file",
                     val_frac=0.1, test_frac=0.0)
    plan.vocab, plan.sizes   # {"train": ..., "val": ..., "test": ...}
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..core.errors import DataError
from .inputs import Corpus
from .passes import Counted
from .vocab import Vocab, unknown_characters


class Plan(NamedTuple):
    """What pass 1 decided for pass 2: the vocabulary and how the text is cut."""
    vocab: Vocab
    unk_id: int            # the id of characters outside a given vocabulary; -1: none may be
    given: bool            # the vocabulary was given, not made from the text
    mark: int | None       # the end-of-document mark's id, written before each document
    starts: np.ndarray     # where each document starts in the encoded text
    documents: bool        # a corpus of documents (documents.npz), not one text
    sizes: dict[str, int]  # characters per split
    by: str                # how the splits were cut: "documents" or "characters"


def make_plan(counted: Counted, corpus: Corpus, vocab: Vocab | None, unk: str | None,
          split_on: str, val_frac: float, test_frac: float) -> Plan:
    vocab, unk_id, given = _choose_vocab(counted.counts, vocab, unk, corpus)
    documents = corpus.many or split_on != "file"
    vocab, mark, starts = _with_mark(vocab, given, documents, counted)
    total = counted.chars + (len(starts) if mark is not None else 0)
    sizes, by = split_sizes(total, val_frac, test_frac, starts if documents else None)
    return Plan(vocab, unk_id, given, mark, starts, documents, sizes, by)


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
