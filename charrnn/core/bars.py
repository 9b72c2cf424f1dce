"""Progress bars for people: a tqdm bar on a terminal, nothing when output is piped or
quiet. Training has its own (training/progress.py); this one is for the commands that read
or write text: prepare, eval, sample.

    bar = progress_bar(total_chars, enabled=bar_terminal(sys.stderr), desc="eval", unit="char")
    bar.update(n); bar.close()
"""

from __future__ import annotations

import io
import os

from tqdm import tqdm

MIN_COLUMNS = 20  # narrower, a bar shows nothing useful: plain lines instead


def bar_terminal(stream) -> bool:
    """Whether `stream` is a terminal a bar can be drawn on: a tty with a width. A terminal
    of zero columns (`script -c` under some callers, an editor's pane) is a tty on which
    tqdm draws nothing, so there the plain lines are printed instead."""
    try:
        if not stream.isatty():
            return False
    except (AttributeError, ValueError):
        return False
    try:
        return os.get_terminal_size(stream.fileno()).columns >= MIN_COLUMNS
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        return True  # a terminal that does not say its size: tqdm takes 80 columns


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
