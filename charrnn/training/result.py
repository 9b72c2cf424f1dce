"""What a run ends with: its step, why it stopped, its figures, and the end-of-run line."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..core.units import LN2
from .budget import StopReason
from .progress import format_seconds


@dataclass
class TrainResult:
    run_dir: Path | None
    step: int
    reason: StopReason
    best_val_loss: float  # inf when the run never evaluated
    last_val_loss: float | None
    signal: int | None = None
    best_step: int | None = None
    elapsed: float = 0.0  # training time of the whole run, across resumes (seconds)
    chars_per_s: float = 0.0  # average training speed of this invocation

    def summary(self) -> str:
        """The end-of-run line."""
        parts = [f"stopped at step {self.step} ({self.reason}) after "
                 f"{format_seconds(self.elapsed)}"]
        if math.isfinite(self.best_val_loss):
            parts.append(f"best val loss {self.best_val_loss:.4f} nats/char "
                         f"({self.best_val_loss / LN2:.4f} bpc) at step {self.best_step}")
        else:
            parts.append("not evaluated")
        if self.chars_per_s:
            parts.append(f"{self.chars_per_s:,.0f} chars/s")
        return "; ".join(parts) + (f"; {self.run_dir}/" if self.run_dir else "")
