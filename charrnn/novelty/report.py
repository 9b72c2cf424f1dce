"""How much of a text is copied from the training text: the longest copied span, where it
comes from, the share of characters inside long copied spans, and a verdict.

    report = novelty_report(index, "To be, or not to be")
    print("\\n".join(report.lines()))     # for people
    json.dumps(report.to_dict())          # for programs
    report.copied                         # [(start, end), ...]: where to highlight

A copied span is a piece of the text that occurs verbatim in the training split; the
matching statistics (matching.py) give the longest one starting at each position. A
character counts as copied at length N when it lies inside a copied span of at least N
characters. Positions count characters (Unicode code points) of the text checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.errors import CharRNNError
from ..core.escape import shown as escaped
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
    # [start, end) stretches of the text inside copied spans of >= copied_min characters
    copied: list[tuple[int, int]] = field(default_factory=list)
    copied_min: int = SPANS[0]
    source: tuple[str, int] | None = None  # (file, line) there, for a corpus of many files

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
        out = [f"{escaped(label)}: {self.verdict}"]
        if self.longest:
            shown = self.span if len(self.span) <= SHOWN else self.span[:SHOWN] + "..."
            where = (f"{escaped(self.source[0])}:{self.source[1]} in the training files"
                     if self.source else f"line {self.line:,} of the training text")
            out.append(f"  longest copied span: {self.longest:,}{'+' if self.at_least else ''} "
                       f"characters, {where} (character {self.offset:,}): {_quoted(shown)}")
        shares = ", ".join(f"{share:.1%} in spans of {n}+" for n, share in self.shares.items())
        out.append(f"  copied: {shares} characters ({self.chars:,} checked)")
        return out

    def to_dict(self) -> dict:
        return {"chars": self.chars, "longest": self.longest, "at_least": self.at_least,
                "span": self.span, "start": self.start, "offset": self.offset,
                "line": self.line, "shares": {str(n): s for n, s in self.shares.items()},
                "verdict": self.verdict, "copied_spans": [list(c) for c in self.copied],
                "copied_spans_min": self.copied_min,
                "source": None if self.source is None else {"path": self.source[0],
                                                            "line": self.source[1]}}


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
    spans = check_spans(spans)
    n = len(ms)
    stretches = {k: copied_spans(ms, k) for k in spans}
    shares = {k: sum(end - start for start, end in stretches[k]) / n if n else 0.0
              for k in spans}
    copied, shortest = stretches[spans[0]], spans[0]
    if not n or ms.max() == 0:
        return NoveltyReport(n, 0, "", None, None, None, shares, copied=copied,
                             copied_min=shortest)
    start = int(ms.argmax())
    longest, offset = int(ms[start]), int(where[start])
    exact = index.exact_up_to
    return NoveltyReport(n, longest, text[start:start + longest], start, offset,
                         index.line_of(offset), shares,
                         at_least=exact is not None and longest >= exact,
                         copied=copied, copied_min=shortest, source=index.place_of(offset))


def copied_spans(ms: np.ndarray, min_chars: int = SPANS[0]) -> list[tuple[int, int]]:
    """The stretches [start, end) of the text that lie inside copied spans of at least
    `min_chars` characters, from the matching statistics `ms`: the spans [i, i + ms[i])
    with ms[i] >= min_chars, those that overlap merged into one. Spans that only touch stay
    apart, so that two copies side by side do not read as one longer copy. The stretches
    are sorted and disjoint: their lengths add up to the characters copied at that length.
    """
    ms = np.asarray(ms, dtype=np.int64)
    starts = np.flatnonzero(ms >= max(min_chars, 1))
    if not starts.size:
        return []
    # The furthest end so far: a span may lie inside an earlier one (matching statistics
    # never do this, ms[i + 1] >= ms[i] - 1, but the function takes any ms).
    ends = np.maximum.accumulate(starts + ms[starts])
    # A stretch begins at the first span, and at every span that starts at or after the
    # end of all the spans before it.
    breaks = np.flatnonzero(starts[1:] >= ends[:-1]) + 1
    firsts = np.concatenate([[0], breaks])
    lasts = np.concatenate([breaks - 1, [len(starts) - 1]])
    return list(zip(starts[firsts].tolist(), ends[lasts].tolist()))
