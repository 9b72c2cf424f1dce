"""What a run shows and leaves behind: the progress bar and lines, metrics.jsonl, the
checkpoints (best.pt, last.pt, step-N.pt) and curves.png.

    with Recorder(run_dir, cfg.train, is_main, echo, startup_lines(trainer), show=True,
                  start_step=0, stop_step=1000) as rec:
        rec.interval(state, stats, lr, epoch, left)      # a log interval
        rec.validated(state, loss, improved, checkpoint) # an evaluation, then the saves
        rec.interrupted(step, checkpoint)                # Ctrl-C: last.pt
    # on leaving (the run ended, Ctrl-C included): curves.png drawn a last time

Only the main process writes files; every process makes the same calls (the checkpoint
passed in is collective under DDP, so every rank builds it).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..core.config import TrainConfig
from ..core.units import LN2
from .checkpointer import Checkpointer
from .metrics import IntervalStats
from .metrics_file import MetricsLog, MetricsRecord
from .plot import CurveRefresher
from .progress import Progress
from .state import TrainingState


class Recorder:
    def __init__(self, run_dir: Path | None, cfg: TrainConfig, is_main: bool, echo,
                 lines: list[str], *, show: bool, start_step: int, stop_step: int | None):
        """`lines`: the start-up lines, echoed by the main process; `show`: then the
        progress bar (or lines), from `start_step` to `stop_step`."""
        writes = run_dir if is_main else None
        self.metrics = MetricsLog(writes / "metrics.jsonl" if writes else None)
        # Before the start-up lines: the refresher imports matplotlib, a second or two.
        self.curves = CurveRefresher(writes)
        self.checkpointer = Checkpointer(run_dir, cfg, is_main)
        for line in lines if is_main else []:
            echo(line)
        self.progress = Progress(show, start_step, stop_step, echo)
        self.write = self.curves.warn = self.progress.write
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Recorder:
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.progress)
            stack.enter_context(self.metrics)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc) -> None:
        # The last refresh, at the end of a run (Ctrl-C included): the whole run is drawn.
        with self._stack:
            if exc[0] is None:
                self.curves.final()

    def interval(self, s: TrainingState, stats: IntervalStats, lr: float, epoch: float,
                 left: float | None, record: bool = True) -> None:
        """A log interval's line and (with `record`) its metrics record."""
        if record:
            self.metrics.write(MetricsRecord(
                step=s.step, epoch=epoch, train_loss=stats.loss, lr=lr,
                chars_per_s=round(stats.chars_per_s, 1), elapsed=round(s.elapsed, 3),
                skipped=stats.skipped))
        val_bpc = None if s.last_val_loss is None else s.last_val_loss / LN2
        self.progress.report(s.step, stats.loss, val_bpc, stats.chars_per_s, s.elapsed, left)

    def validated(self, s: TrainingState, loss: float, improved: bool,
                  checkpoint: dict) -> None:
        """An evaluation's record and line, last.pt (and best.pt when it improved) and
        curves.png redrawn."""
        self.metrics.write(MetricsRecord(step=s.step, val_loss=loss,
                                         elapsed=round(s.elapsed, 3)))
        self.write(f"step {s.step} | val loss {loss:.4f} nats/char, {loss / LN2:.4f} bpc"
                   + (" (best)" if improved else ""))
        self.progress.show_val(loss / LN2)
        self.checkpointer.after_validation(checkpoint, improved)
        self.curves()

    def abandoned(self, step: int) -> None:
        self.write(f"step {step} | validation abandoned (interrupted)")

    def interrupted(self, step: int, checkpoint: dict) -> None:
        self.write(f"interrupted at step {step}: saving last.pt")
        self.checkpointer.save(checkpoint, "last.pt")
