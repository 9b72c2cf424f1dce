"""Sampling that refuses copies: redraw each sample whose longest copied span is too long.

    result = redraw(sampler, 500, "", (), lambda t: novelty_report(index, t),
                    num_samples=4, max_copy=40, tries=10)
    result.texts, result.reports, result.notes()

`redraw` draws through the generation engine (a Sampler, inference/sample.py); `draw_novel`
is its loop over any `draw(k)`.

The first draw gives every sample; each later round redraws, as one batch, the samples
still over `max_copy`, until all pass or each has had `tries` draws. A redraw replaces a
sample only when it copies less, so a sample that never passes keeps its least-copying
draw. Draws come from the sampler's own generator in a fixed order, so a seed gives the
same final samples every time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.errors import SettingError
from .report import NoveltyReport

if TYPE_CHECKING:
    from ..inference.sample import Sampler


@dataclass
class Redrawn:
    texts: list[str]
    reports: list[NoveltyReport]
    redraws: int          # draws beyond the first, over all samples
    redrawn: int          # samples drawn more than once
    max_copy: int
    tries: int

    @property
    def failed(self) -> list[int]:
        """The samples (0-based) still over max_copy after `tries` draws."""
        return [j for j, r in enumerate(self.reports) if r.longest > self.max_copy]

    def notes(self, many: bool) -> list[str]:
        """What happened, for people: nothing when no sample was redrawn."""
        out = []
        if self.redraws:
            which = f"{self.redrawn} of {len(self.texts)} samples" if many else "the sample"
            out.append(f"novelty: redrew {which} {self.redraws} time"
                       f"{'s' if self.redraws != 1 else ''} in all, to keep copied spans "
                       f"to {self.max_copy} characters at most")
        for j in self.failed:
            name = f"sample {j + 1}" if many else "the sample"
            out.append(f"novelty: no draw of {name} passed in {self.tries} tries; kept the one "
                       f"that copies least (a span of {self.reports[j].longest:,} characters)")
        return out


def check_redraw(max_copy: int | None, tries: int) -> None:
    if max_copy is not None and max_copy < 0:
        raise SettingError("max_copy", f"must be >= 0, got {max_copy}")
    if tries < 1:
        raise SettingError("tries", f"must be >= 1, got {tries}")


def redraw(sampler: Sampler, length: int, prime: str, stops: Sequence[str],
           judge: Callable[[str], NoveltyReport], num_samples: int, max_copy: int,
           tries: int = 10) -> Redrawn:
    """draw_novel with the sampler's draws: each round one batch of the samples still over
    `max_copy`, from the sampler's one generator in turn."""
    return draw_novel(lambda k: sampler.texts(length, prime, k, stops), judge, num_samples,
                      max_copy, tries)


def draw_novel(draw: Callable[[int], list[str]], judge: Callable[[str], NoveltyReport],
               num_samples: int, max_copy: int, tries: int = 10) -> Redrawn:
    """`draw(k)`: k new samples; `judge(text)`: its report. At most `tries` draws a sample."""
    check_redraw(max_copy, tries)
    texts = list(draw(num_samples))
    reports = [judge(t) for t in texts]
    redraws, redrawn = 0, set()
    for _ in range(tries - 1):
        over = [j for j, r in enumerate(reports) if r.longest > max_copy]
        if not over:
            break
        for j, text in zip(over, draw(len(over))):
            report = judge(text)
            if report.longest < reports[j].longest:
                texts[j], reports[j] = text, report
        redraws += len(over)
        redrawn.update(over)
    return Redrawn(texts, reports, redraws, len(redrawn), max_copy, tries)
