"""Training metrics: the device-side sums of a log interval (metrics_file.py writes them
to metrics.jsonl).

    meter = IntervalMeter(device, dist, chars_per_step=B * T)
    meter.add(loss, bad)                 # per step: device ops only
    stats = meter.read(close=True)       # per interval: one read of the device
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import torch

from ..core import distributed


@dataclass
class IntervalStats:
    loss: float  # mean training loss over the interval's good steps (nan if none)
    chars_per_s: float  # over all ranks, training time only
    skipped: int  # non-finite steps skipped in this invocation
    consecutive_bad: int  # non-finite steps in a row, up to now


class IntervalMeter:
    """Sums the loss of good steps and counts bad ones on the device; `read` reads them
    once (under DDP, summed over all ranks)."""

    def __init__(self, device: torch.device, dist: distributed.Dist, chars_per_step: int):
        self.dist, self.chars_per_step = dist, chars_per_step
        z = lambda: torch.zeros((), device=device)  # noqa: E731
        self.loss_sum, self.good, self.bad_run, self.bad_total = z(), z(), z(), z()
        self.started = self.interval_start = time.monotonic()
        self.steps = self.total_steps = 0
        self.paused_seconds = 0.0

    def add(self, loss: torch.Tensor, bad: torch.Tensor) -> None:
        self.loss_sum += torch.where(bad, 0.0, loss)
        self.good += ~bad
        self.bad_run.add_(bad).mul_(bad)
        self.bad_total += bad
        self.steps += 1
        self.total_steps += 1

    @contextlib.contextmanager
    def paused(self):
        """Time spent inside does not count as training time (evaluations, saves)."""
        started = time.monotonic()
        try:
            yield
        finally:
            spent = time.monotonic() - started
            self.interval_start += spent
            self.paused_seconds += spent

    def read(self, close: bool = True) -> IntervalStats:
        totals = distributed.all_reduce_sum(self.dist, torch.stack([self.loss_sum, self.good]))
        loss_sum, good = totals.tolist()
        now = time.monotonic()
        speed = self.steps * self.chars_per_step / max(now - self.interval_start, 1e-9)
        stats = IntervalStats(loss_sum / good if good else math.nan, speed,
                              int(self.bad_total.item()), int(self.bad_run.item()))
        if close:
            self.loss_sum.zero_(), self.good.zero_()
            self.interval_start, self.steps = now, 0
        return stats

    def average_speed(self) -> float:
        """Characters per second over everything added, training time only."""
        seconds = time.monotonic() - self.started - self.paused_seconds
        return self.total_steps * self.chars_per_step / seconds if seconds > 0 else 0.0
