"""When a run ends: its step, epoch and time limits, patience, and the one clock of its
training time across resumes.

    budget = Budget(cfg.train, steps_per_epoch, state)
    budget.tick()                          # state.elapsed brought up to now
    why = budget.limit_reached()           # StopReason.MAX_STEPS, ... or None
    budget.time_up(eval_seconds)           # past the time budget, counting what is to come

Training time counts evaluations and saves (they are part of what a --max-time run
spends), and continues across resumes from the elapsed time the checkpoint records.
"""

from __future__ import annotations

import enum
import math
import time

from ..core.config import TrainConfig, parse_duration
from .optim import run_progress
from .progress import format_seconds
from .state import TrainingState


class StopReason(str, enum.Enum):
    """Why a run stopped. A str, so that it reads and compares as its value."""

    MAX_STEPS = "max_steps"
    MAX_EPOCHS = "max_epochs"
    MAX_TIME = "max_time"
    EARLY_STOP = "early_stop"
    INTERRUPTED = "interrupted"
    DIVERGED = "diverged"

    def __str__(self) -> str:
        return self.value


class Budget:
    def __init__(self, cfg: TrainConfig, steps_per_epoch: int, state: TrainingState):
        self.cfg, self.state = cfg, state
        self.max_seconds = parse_duration(cfg.max_time)
        limits = []
        if cfg.max_steps:
            limits.append(cfg.max_steps)
        if cfg.max_epochs:
            limits.append(math.ceil(cfg.max_epochs * steps_per_epoch))
        self.stop_step: int | None = min(limits) if limits else None
        self.start()

    def start(self) -> None:
        """The clock runs from now, on top of the elapsed time recorded so far."""
        self._started, self._base = time.monotonic(), self.state.elapsed
        self.lent = 0.0  # what spend_all added to the record beyond the time really spent

    def spent_really(self) -> float:
        """The training time really spent, across resumes (for the end-of-run line)."""
        return self.state.elapsed - self.lent

    def tick(self) -> float:
        """Bring state.elapsed (training time across resumes) up to now."""
        self.state.elapsed = self._base + time.monotonic() - self._started
        return self.state.elapsed

    def spend_all(self) -> None:
        """Record the time budget as spent: a resume with the same --max-time trains no
        more, even when its last evaluation ran faster than the one before."""
        self.tick()
        self.lent += max(self.max_seconds - self.state.elapsed, 0.0)
        self._started, self._base = time.monotonic(), max(self.state.elapsed, self.max_seconds)
        self.tick()

    def limit_reached(self) -> StopReason | None:
        """The step, epoch or patience limit reached, if any."""
        step = self.state.step
        if self.stop_step is not None and step >= self.stop_step:
            return (StopReason.MAX_STEPS if self.cfg.max_steps == self.stop_step
                    else StopReason.MAX_EPOCHS)
        if self.cfg.patience and self.state.stale_evals >= self.cfg.patience:
            return StopReason.EARLY_STOP
        return None

    def time_up(self, to_come: float = 0.0) -> bool:
        """Past the time budget, counting `to_come` seconds still to spend (the final
        evaluation)."""
        return bool(self.max_seconds) and self.state.elapsed + to_come >= self.max_seconds

    def spent(self, reason: StopReason) -> str:
        """Why a run has nothing left to train, and which flag gives it more."""
        s, t = self.state, self.cfg
        if reason == StopReason.MAX_TIME:
            return (f"nothing to train: the run has had {format_seconds(s.elapsed)} of its "
                    f"--max-time {t.max_time} (training time counts across resumes); give a "
                    f"larger --max-time to train more")
        if reason == StopReason.EARLY_STOP:
            return (f"nothing to train: {s.stale_evals} evaluations without a better "
                    f"validation loss reached --patience {t.patience}; give a larger "
                    f"--patience (or 0) to train more")
        return (f"nothing to train: the run is at step {s.step:,}, its limit "
                f"({reason}); give a larger --max-steps or --max-epochs to train more")

    def progress(self) -> float | None:
        """How far the run is, in [0, 1] (optim.run_progress): the learning-rate schedule
        continues across a resume."""
        return run_progress(self.state.step, self.state.elapsed, self.cfg, self.stop_step,
                            self.max_seconds)

    def time_left(self, steps_per_s: float, to_come: float = 0.0) -> float | None:
        """Seconds until the run is over at this speed, `to_come` (the final evaluation)
        included; None without a limit. A --max-time run stops early enough for its final
        evaluation to fit, so its time left is what remains of the budget."""
        options = []
        if self.stop_step is not None and steps_per_s > 0:
            options.append((self.stop_step - self.state.step) / steps_per_s + to_come)
        if self.max_seconds:
            options.append(max(self.max_seconds - self.state.elapsed, 0.0))
        return min(options) if options else None


def diverged(stats, cfg: TrainConfig, say) -> StopReason | None:
    """DIVERGED after train.max_bad_steps non-finite steps in a row (metrics.IntervalStats),
    with a line saying what to do."""
    if stats.consecutive_bad < cfg.max_bad_steps:
        return None
    say(f"stopping: {stats.consecutive_bad} steps in a row had a non-finite loss or gradient "
        f"(skipped, weights untouched); try a lower --lr (now {cfg.lr:g}) or --grad-clip; "
        f"last.pt is left as it was")
    return StopReason.DIVERGED
