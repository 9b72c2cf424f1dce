"""Progress bars for people: a tqdm bar on a terminal, nothing when output is piped or
quiet. Training has its own (training/progress.py); this one is for the commands that read
or write text: prepare, eval, sample.

    bar = progress_bar(total_chars, enabled=sys.stderr.isatty(), desc="eval", unit="char")
    bar.update(n); bar.close()
"""

from __future__ import annotations

from tqdm import tqdm


class NoBar:
    """What a bar does when it is off: nothing."""

    def update(self, n: int) -> None:
        pass

    def reset(self, total: int | None = None) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, enabled: bool, desc: str, unit: str = "char"):
    """A tqdm bar over `total` units on stderr, or a NoBar when not `enabled`."""
    if not enabled:
        return NoBar()
    return tqdm(total=total, unit=unit, unit_scale=True, desc=desc, leave=False,
                dynamic_ncols=True, unit_divisor=1024 if unit == "B" else 1000)
