"""Loss curves of runs, from their metrics.jsonl: bits per character against step and
against training time, several runs overlaid.

    plot_runs([Path("runs/a"), Path("runs/b")], Path("curves.png"))

Needs matplotlib (the plot extra), drawn with the Agg backend (no display).
Training refreshes `curves.png` in its run directory after evaluations with `CurveRefresher`,
which skips a refresh when refreshing would cost more than 1% of the run.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

from ..core.errors import CharRNNError
from ..core.escape import shown
from ..core.extras import install_hint
from ..core.files import atomic_write
from ..core.outputs import guard_output
from ..core.runs import run_of
from ..core.units import LN2
from .metrics_file import MetricsReader

INSTALL = "charrnn plot needs matplotlib: " + install_hint("plot")


def have_matplotlib() -> bool:
    try:
        import matplotlib
    except ImportError:
        return False
    return matplotlib is not None


MAX_POINTS = 4000  # per curve: a plot a few inches wide shows no more


class Thinned:
    """A curve kept to at most 2 x `limit` points whatever its length: once full, every
    other point goes and only every `stride`-th new one is kept, so the points stay evenly
    spread over the whole run (memory is bounded, the shape is kept)."""

    def __init__(self, limit: int = MAX_POINTS):
        self.limit, self.stride, self.seen, self.points = limit, 1, 0, []

    def add(self, point: tuple) -> None:
        if self.seen % self.stride == 0:
            self.points.append(point)
            if len(self.points) >= 2 * self.limit:
                self.points, self.stride = self.points[::2], 2 * self.stride
        self.seen += 1


def read_curves(run_dir: Path, limit: int = MAX_POINTS
                ) -> tuple[dict[str, list[tuple[int, float, float]]], MetricsReader]:
    """({"train": [(step, elapsed, bpc)], "val": [...]}, the reader, with its counts of
    damaged and out-of-range lines, which are skipped) from a run's metrics.jsonl, streamed:
    memory stays bounded whatever the file's size, each curve thinned to about `limit`."""
    reader = MetricsReader(run_dir / "metrics.jsonl")
    curves = {"train": Thinned(limit), "val": Thinned(limit)}
    try:
        for r in reader:
            elapsed = r.elapsed or 0.0
            for name, loss in (("train", r.train_loss), ("val", r.val_loss)):
                if loss is not None:
                    curves[name].add((r.step, float(elapsed), loss / LN2))
    except FileNotFoundError:
        raise CharRNNError(f"{shown(run_dir)} has no metrics.jsonl: not a run directory") from None
    except OSError as e:
        raise CharRNNError(f"cannot read {shown(reader.path)}: {e.strerror or e}") from None
    return {name: c.points for name, c in curves.items()}, reader


def run_dirs(targets: list[str]) -> list[Path]:
    """Run directories from arguments: a run, or a runs directory (its latest run); the
    same run named twice (runs/* lists runs/latest too) is drawn once."""
    found, seen = [], set()
    for target in targets:
        path = run_of(target)
        if not path.is_dir():
            raise CharRNNError(f"not a run directory: {shown(target)}")
        real = path.resolve()
        if real not in seen:
            seen.add(real)
            found.append(path)
    return found


def plot_runs(runs: list[Path], out: str | Path) -> list[str]:
    """Draw the curves of `runs` into the PNG file `out` (written atomically, or to
    standard output for "-"); returns what was skipped, a line per run that skipped any.
    `out` is never a file read here nor one a run needs (core/outputs.py)."""
    out = guard_output(out, reads=[run / "metrics.jsonl" for run in runs])
    try:
        import matplotlib
    except ImportError:
        raise CharRNNError(INSTALL) from None
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    read = {run: read_curves(run) for run in runs}
    curves = {run: c for run, (c, _) in read.items()}
    skipped = [f"skipped {r.skipped()} of {shown(r.path)}"
               for _, r in read.values() if r.skipped()]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    by_step, by_time = fig.subplots(1, 2, sharey=True)
    for i, (run, c) in enumerate(curves.items()):
        color = f"C{i % 10}"
        name = run.resolve().name
        for split, style, alpha in (("train", ".-", 0.45), ("val", "o-", 1.0)):
            if not c[split]:
                continue
            steps, seconds, bpc = zip(*c[split])
            label = literal(shown(f"{name} {split}"))
            by_step.plot(steps, bpc, style, color=color, alpha=alpha, label=label, markersize=3)
            by_time.plot([s / 60 for s in seconds], bpc, style, color=color, alpha=alpha,
                         markersize=3)
    by_step.set_xlabel("step")
    by_time.set_xlabel("training time (minutes)")
    by_step.set_ylabel("loss (bits/char)")
    for ax in (by_step, by_time):
        ax.grid(alpha=0.3)
    if by_step.lines:
        by_step.legend(fontsize="small")
    _save_png(fig, out)
    return skipped


def _save_png(fig, out: Path) -> None:
    """The figure as a PNG: to `out`, written atomically, or to standard output for "-"."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    if str(out) == "-":
        sys.stdout.buffer.write(buffer.getvalue())
        sys.stdout.buffer.flush()
        return
    atomic_write(out, lambda f: f.write(buffer.getvalue()), replace_link=False)


def literal(text: str) -> str:
    """Text that matplotlib shows as it is: a $ would start mathtext."""
    return text.replace("$", r"\$")


class CurveRefresher:
    """Redraws a run's curves.png after evaluations, where matplotlib is installed, at most
    1% of the time: a refresh that took d seconds is not repeated for 100 d seconds."""

    def __init__(self, run_dir: Path | None, warn=None):
        self.run_dir, self.warn = run_dir, warn
        self.enabled = run_dir is not None and have_matplotlib()
        self.next_at = 0.0

    def __call__(self) -> None:
        now = time.monotonic()
        if not self.enabled or now < self.next_at:
            return
        try:
            plot_runs([self.run_dir], self.run_dir / "curves.png")
        except Exception as e:  # noqa: BLE001 - optional output never stops training
            self.enabled = False
            if self.warn is not None:
                self.warn(f"warning: curves.png is not refreshed any more ({e}); training "
                          f"goes on")
        self.next_at = now + 100 * (time.monotonic() - now)

    def final(self) -> None:
        """The last refresh, at the end of a run (Ctrl-C included), whenever the last one
        was: the picture then shows the whole run."""
        self.next_at = 0.0
        self()
