"""The character vocabulary: distinct Unicode code points in code-point order.

    vocab = Vocab.from_text("hello")
    ids = vocab.encode("hell")      # list[int]
    vocab.decode(ids) == "hell"

Code-point order is stable: the same set of characters always gives the same ids, whatever
order they were seen in, so two corpora with one alphabet share one vocabulary.

A corpus of many documents (documents.py) adds one id after the characters: the
end-of-document mark, written before each document, which the model learns to predict
where a document ends. It is stored as `vocab.end` and, in the list of characters, as END,
a lone surrogate, which no decoded text can hold: it cannot collide with a user's character.
vocab.json records it as {"end_of_document": {"id": ..., "count": ...}}; a vocabulary
without it (one file, or from before) is as it always was.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from ..core.errors import DataError
from ..core.files import atomic_write_text

MAX_CODE_POINT = 0x10FFFF
END = "\udfff"  # the end-of-document mark's place in `chars`: never a decoded character


SHOWN_UNKNOWN = 20  # characters a message lists before "and N more"


def unknown_characters(subject: str, missing: list[str],
                       vocabulary: str = "the model's vocabulary") -> str:
    """The one wording of characters a vocabulary lacks, for every command and the server:
    "prime.txt has characters not in the model's vocabulary: 'é', '€' and 3 more" (the
    first SHOWN_UNKNOWN, in order of first appearance). Callers add the way out."""
    return f"{subject} has characters not in {vocabulary}: {listed(missing)}"


def listed(missing: list[str]) -> str:
    """The first SHOWN_UNKNOWN characters, quoted, and how many more: for any message."""
    more = len(missing) - SHOWN_UNKNOWN
    return (", ".join(repr(c) for c in missing[:SHOWN_UNKNOWN])
            + (f" and {more:,} more" if more > 0 else ""))


class Vocab:
    def __init__(self, chars: list[str], counts: list[int] | None = None,
                 end_count: int | None = None):
        """`chars` of the text; with `end_count`, the end-of-document mark after them,
        counted that many times."""
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
        self.end: int | None = None  # the mark's id
        if end_count is not None:
            self.end = len(self.chars)
            self.chars.append(END)
            if self.counts is not None:
                self.counts.append(int(end_count))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def with_end(self, end_count: int) -> "Vocab":
        """This vocabulary with the end-of-document mark (itself if it has one)."""
        if self.end is not None:
            return self
        return Vocab(self.chars, self.counts, end_count)

    @property
    def shown_chars(self) -> list[str]:
        """The characters as a sample shows them: the mark as a line break."""
        if self.end is None:
            return self.chars
        return self.text_chars + ["\n"]

    @property
    def text_chars(self) -> list[str]:
        """The characters, without the mark."""
        return self.chars[:self.end] if self.end is not None else self.chars

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
            raise DataError(unknown_characters("the text", self.missing(text),
                                               "the vocabulary")) from None

    def decode(self, ids, end: str = "") -> str:
        """The text of `ids`; the end-of-document mark becomes `end` (by default, nothing)."""
        text = "".join(self.chars[i] for i in ids)
        return text.replace(END, end) if self.end is not None else text

    def lookup_table(self, unk: int = -1) -> np.ndarray:
        """A code point -> id array over all of Unicode (ids as int32, `unk` elsewhere)."""
        table = np.full(MAX_CODE_POINT + 1, unk, dtype=np.int32)
        table[[ord(c) for c in self.chars]] = np.arange(len(self.chars), dtype=np.int32)
        return table

    # -- files -----------------------------------------------------------------------------

    def to_dict(self, counts: bool = True) -> dict:
        n = len(self.text_chars)
        out = {"chars": self.text_chars}
        if counts and self.counts is not None:
            out["counts"] = self.counts[:n]
        if self.end is not None:
            out["end_of_document"] = {"id": self.end}
            if counts and self.counts is not None:
                out["end_of_document"]["count"] = self.counts[n]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Vocab":
        if not isinstance(data, dict) or not isinstance(data.get("chars"), list):
            raise DataError("vocabulary must be a JSON object with a 'chars' list")
        end = data.get("end_of_document")
        if end is None:
            return cls(data["chars"], data.get("counts"))
        if not isinstance(end, dict) or end.get("id") != len(data["chars"]):
            raise DataError("'end_of_document' must be {\"id\": the id after the characters}")
        count = end.get("count", 0)
        if type(count) is not int or count < 0:
            raise DataError("'end_of_document' count must be a non-negative integer")
        return cls(data["chars"], data.get("counts"), count)

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
