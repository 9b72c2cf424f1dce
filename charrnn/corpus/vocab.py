"""The character vocabulary: distinct Unicode code points in code-point order.

    vocab = Vocab.from_text("hello")
    ids = vocab.encode("hell")      # list[int]
    vocab.decode(ids) == "hell"

Code-point order is stable: the same set of characters always gives the same ids, whatever
order they were seen in, so two corpora with one alphabet share one vocabulary.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from ..core.errors import DataError
from ..core.files import atomic_write_text

MAX_CODE_POINT = 0x10FFFF


class Vocab:
    def __init__(self, chars: list[str], counts: list[int] | None = None):
        if not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise DataError("vocabulary entries must be single characters")
        if len(set(chars)) != len(chars):
            raise DataError("vocabulary has repeated characters")
        surrogates = [c for c in chars if 0xD800 <= ord(c) <= 0xDFFF]
        if surrogates:
            raise DataError(f"vocabulary holds {len(surrogates)} lone surrogate(s) "
                            f"(U+{ord(surrogates[0]):04X}), which are not text")
        if counts is not None and (
                not isinstance(counts, list) or len(counts) != len(chars)
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                           for n in counts)):
            raise DataError("vocabulary counts must be one non-negative integer per character")
        self.chars = list(chars)
        self.counts = list(counts) if counts is not None else None
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        counts = Counter(text)
        chars = sorted(counts)
        return cls(chars, [counts[c] for c in chars])

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> "Vocab":
        """From a histogram indexed by code point (as `prepare` builds it)."""
        points = np.flatnonzero(counts)
        return cls([chr(p) for p in points], [int(counts[p]) for p in points])

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: str) -> bool:
        return char in self.index

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.chars == other.chars

    @property
    def dtype(self) -> np.dtype:
        """The smallest unsigned integer type that holds every id."""
        n = len(self.chars)
        return np.dtype(np.uint8 if n <= 1 << 8 else np.uint16 if n <= 1 << 16 else np.uint32)

    def missing(self, text: str) -> list[str]:
        """Characters of `text` not in the vocabulary, in order of first appearance."""
        return list(dict.fromkeys(c for c in text if c not in self.index))

    def encode(self, text: str) -> list[int]:
        try:
            return [self.index[c] for c in text]
        except KeyError:
            shown = ", ".join(repr(c) for c in self.missing(text)[:10])
            raise DataError(f"characters not in the vocabulary: {shown}") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def lookup_table(self, unk: int = -1) -> np.ndarray:
        """A code point -> id array over all of Unicode (ids as int32, `unk` elsewhere)."""
        table = np.full(MAX_CODE_POINT + 1, unk, dtype=np.int32)
        table[[ord(c) for c in self.chars]] = np.arange(len(self.chars), dtype=np.int32)
        return table

    # -- files -----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        out = {"chars": self.chars}
        if self.counts is not None:
            out["counts"] = self.counts
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Vocab":
        if not isinstance(data, dict) or not isinstance(data.get("chars"), list):
            raise DataError("vocabulary must be a JSON object with a 'chars' list")
        return cls(data["chars"], data.get("counts"))

    def save(self, path: str | Path) -> None:
        text = json.dumps(self.to_dict(), ensure_ascii=False, indent=0)
        atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        try:
            with open(path, encoding="utf-8") as f:
                return cls.from_dict(json.load(f))
        except FileNotFoundError:
            raise DataError(f"vocabulary file not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"vocabulary file {path} is not valid JSON: {e}") from None
        except DataError as e:
            raise DataError(f"vocabulary file {path}: {e}") from None
        except OSError as e:
            raise DataError(f"cannot read vocabulary file {path}: {e.strerror or e}") from None
