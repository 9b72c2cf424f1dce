"""Training metrics: the device-side sums of a log interval, and metrics.jsonl.

    meter = IntervalMeter(device, dist, chars_per_step=B * T)
    meter.add(loss, bad)                 # per step: device ops only
    stats = meter.read(close=True)       # per interval: one read of the device
    log = MetricsLog(None)
    with log.opened(run_dir / "metrics.jsonl"):
        log.write({"step": 100, "train_loss": 1.9})
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core import distributed
from ..core.errors import CharRNNError
from ..core.files import atomic_write_text, write_failure


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


class MetricsLog:
    """metrics.jsonl, appended a line at a time; a no-op without a path."""

    def __init__(self, path: Path | None):
        self.path, self.file = path, None

    @contextlib.contextmanager
    def opened(self, path: Path | None):
        self.path = path
        self.file = None
        if path is not None:
            try:
                # O_NOFOLLOW: a link planted in the run directory is not written through.
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
            except OSError as e:
                raise CharRNNError(f"cannot write {path}: {e.strerror or e}") from None
            self.file = os.fdopen(fd, "a", encoding="utf-8")
        try:
            yield self
        finally:
            if self.file is not None:
                self.file.close()
            self.file = None

    def write(self, record: dict) -> None:
        if self.file is None:
            return
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as e:
            file, self.file = self.file, None
            try:
                file.close()
            except OSError:
                pass  # the same failure again, flushing what is buffered
            raise CharRNNError(f"could not write {self.path}: {write_failure(e)}; training "
                               f"stopped, the last checkpoint is kept") from None

    @staticmethod
    def truncate(path: Path, step: int) -> int:
        """Drop records past `step` (written after the checkpoint a run resumes from), and
        damaged ones; returns how many were damaged."""
        if not path.exists() and not path.is_symlink():
            return 0
        if not path.is_symlink() and not path.is_file():  # a FIFO would block us for ever
            raise CharRNNError(f"{path} is not a regular file; move it out of the run "
                               f"directory and resume again")
        kept = []
        try:
            text = "" if path.is_symlink() else path.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise CharRNNError(f"cannot read {path}: {e.strerror or e}") from None
        damaged = 0
        for line in text.splitlines():
            record = parse_record(line)
            if record is None:
                damaged += line.strip() != ""
            elif record["step"] <= step:
                kept.append(line)
        # Rewritten whole and renamed into place: a link there is replaced, not followed.
        atomic_write_text(path, "".join(line + "\n" for line in kept))
        return damaged


def parse_record(line: str) -> dict | None:
    """One line of metrics.jsonl as a record, or None when it is damaged: not a JSON
    object, too deeply nested, or without a finite whole `step` >= 0. Numbers other than
    the step may be anything finite; a non-finite one (Infinity, NaN) is damage too."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    step = record.get("step")
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step) \
            or step < 0 or step != int(step):
        return None
    for value in record.values():
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, (dict, list)):
            return None
    return record
