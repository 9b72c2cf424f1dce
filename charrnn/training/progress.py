"""Progress for people: a tqdm bar on a terminal, one plain line per interval otherwise."""

from __future__ import annotations

import math
import sys

from ..core.bars import bar_terminal


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    def __init__(self, enabled: bool, start_step: int, total_steps: int | None, echo=print):
        self.echo = echo
        self.bar = None
        self.enabled = enabled
        self.postfix: list[str] = []  # the bar's last figures, to update the val bpc alone
        if enabled and bar_terminal(sys.stdout):
            from tqdm import tqdm
            # A short bar and the figures after it, the time left first: on an 80-column
            # terminal the end of the line is what gets cut.
            fmt = ("{l_bar}{bar:10}| {n_fmt}/{total_fmt}{postfix}" if total_steps
                   else "{n_fmt} steps [{elapsed}]{postfix}")
            self.bar = tqdm(total=total_steps, initial=start_step, unit="step",
                            dynamic_ncols=True, file=sys.stdout, bar_format=fmt)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def report(self, step: int, loss: float, val_bpc: float | None, chars_per_s: float,
               elapsed: float, left: float | None) -> None:
        if not self.enabled:
            return
        parts = [f"loss {loss:.4f}"]
        if val_bpc is not None:
            parts.append(f"val bpc {val_bpc:.3f}")
        parts.append(f"{chars_per_s:,.0f} chars/s")
        if self.bar is not None:
            if left is not None:
                parts.insert(0, f"{format_seconds(left)} left")
            self.postfix = parts
            self.bar.set_postfix_str(", ".join(parts), refresh=False)
        else:
            parts.append(f"{format_seconds(elapsed)} elapsed")
            if left is not None:
                parts.append(f"{format_seconds(left)} left")
            self.echo(f"step {step} | " + " | ".join(parts))

    def show_val(self, val_bpc: float) -> None:
        """The bar's val bpc, now that an evaluation gave a new one (not at the next line)."""
        if self.bar is None or not self.postfix:
            return
        parts = [p for p in self.postfix if not p.startswith("val bpc")]
        at = next((i + 1 for i, p in enumerate(parts) if p.startswith("loss")), 0)
        self.postfix = parts[:at] + [f"val bpc {val_bpc:.3f}"] + parts[at:]
        self.bar.set_postfix_str(", ".join(self.postfix))

    def write(self, message: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(message)
        else:
            self.echo(message)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
