"""How much of a text is copied from the training text: the longest copied span, where it
comes from, the share of characters inside long copied spans, and a verdict.

    report = novelty_report(index, "To be, or not to be")
    print("\\n".join(report.lines()))     # for people
    json.dumps(report.to_dict())          # for programs

A copied span is a piece of the text that occurs verbatim in the training split; the
matching statistics (matching.py) give the longest one starting at each position. A
character counts as copied at length N when it lies inside a copied span of at least N
characters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import CharRNNError
from ..corpus.vocab import Vocab
from .index import SuffixIndex
from .matching import ABSENT, matching_statistics

SPANS = (20, 50)  # the span lengths shares are given for, by default
SHOWN = 60        # characters of the longest span shown in the report


@dataclass
class NoveltyReport:
    chars: int                   # characters checked
    longest: int                 # the longest copied span, in characters
    span: str                    # that span
    start: int | None            # where it starts in the text checked
    offset: int | None           # where it occurs in the training split (a character offset)
    line: int | None             # the split's line there (1-based)
    shares: dict[int, float]     # N -> share of characters inside copied spans of >= N
    at_least: bool = False       # the longest span may be longer (the index's blocks)

    @property
    def verdict(self) -> str:
        """One line: new, mostly new, copies in part, or largely copied."""
        short, long = min(self.shares), max(self.shares)
        length = f"{self.longest:,}{'+' if self.at_least else ''}"
        if self.longest < short:
            return f"new: no span of {short} characters is copied from the training text"
        if self.longest < long:
            return f"mostly new: its longest copied span is {length} characters"
        if self.shares[long] < 0.5:
            return f"copies in part: it holds a {length}-character span of the training text"
        return (f"largely copied: {self.shares[long]:.0%} of it lies in spans of {long}+ "
                f"characters from the training text")

    def lines(self, label: str = "novelty") -> list[str]:
        out = [f"{label}: {self.verdict}"]
        if self.longest:
            shown = self.span if len(self.span) <= SHOWN else self.span[:SHOWN] + "..."
            out.append(f"  longest copied span: {self.longest:,}{'+' if self.at_least else ''} "
                       f"characters, line {self.line:,} of the training text (character "
                       f"{self.offset:,}): {_quoted(shown)}")
        shares = ", ".join(f"{share:.1%} in spans of {n}+" for n, share in self.shares.items())
        out.append(f"  copied: {shares} characters ({self.chars:,} checked)")
        return out

    def to_dict(self) -> dict:
        return {"chars": self.chars, "longest": self.longest, "at_least": self.at_least,
                "span": self.span, "start": self.start, "offset": self.offset,
                "line": self.line, "shares": {str(n): s for n, s in self.shares.items()},
                "verdict": self.verdict}


def _quoted(text: str) -> str:
    """The span on one line: newlines and other controls escaped."""
    return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def encode(vocab: Vocab, text: str) -> np.ndarray:
    """The ids of `text` in the training text's vocabulary; ABSENT (matching nothing) for
    characters it does not have."""
    points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    table = vocab.lookup_table(unk=ABSENT)
    return table[np.minimum(points, len(table) - 1)].astype(np.int64)


def check_spans(spans) -> tuple[int, ...]:
    """The span lengths asked for, sorted, each at least 1."""
    spans = tuple(sorted(set(spans))) or SPANS
    if spans[0] < 1:
        raise CharRNNError(f"--span must be at least 1, got {spans[0]}")
    return spans


def novelty_report(index: SuffixIndex, text: str, spans=SPANS) -> NoveltyReport:
    """The report on `text` against the indexed training text."""
    spans = check_spans(spans)
    ids = encode(index.vocab, text)
    ms, where = matching_statistics(index, ids)
    return report_from(index, text, ms, where, spans)


def report_from(index: SuffixIndex, text: str, ms: np.ndarray, where: np.ndarray,
                spans=SPANS) -> NoveltyReport:
    n = len(ms)
    shares = {k: _covered(ms, k) / n if n else 0.0 for k in spans}
    if not n or ms.max() == 0:
        return NoveltyReport(n, 0, "", None, None, None, shares)
    start = int(ms.argmax())
    longest, offset = int(ms[start]), int(where[start])
    exact = index.exact_up_to
    return NoveltyReport(n, longest, text[start:start + longest], start, offset,
                         index.line_of(offset), shares,
                         at_least=exact is not None and longest >= exact)


def _covered(ms: np.ndarray, k: int) -> int:
    """Characters inside some copied span [i, i + ms[i]) with ms[i] >= k."""
    starts = np.flatnonzero(ms >= k)
    if not starts.size:
        return 0
    edges = np.zeros(len(ms) + 1, dtype=np.int64)
    np.add.at(edges, starts, 1)
    np.add.at(edges, starts + ms[starts], -1)
    return int(np.count_nonzero(np.cumsum(edges)[:-1] > 0))
