"""Loss curves of runs, from their metrics.jsonl: bits per character against step and
against training time, several runs overlaid.

    plot_runs([Path("runs/a"), Path("runs/b")], Path("curves.png"))

Needs matplotlib (`pip install 'charrnn[plot]'`), drawn with the Agg backend (no display).
Training refreshes `curves.png` in its run directory after evaluations with `CurveRefresher`,
which skips a refresh when refreshing would cost more than 1% of the run.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from ..core.errors import CharRNNError
from ..core.files import atomic_write
from ..core.runs import run_of
from ..core.units import LN2

INSTALL = "charrnn plot needs matplotlib: pip install 'charrnn[plot]'"


def have_matplotlib() -> bool:
    try:
        import matplotlib
    except ImportError:
        return False
    return matplotlib is not None


def read_curves(run_dir: Path) -> dict[str, list[tuple[int, float, float]]]:
    """{"train": [(step, elapsed, bpc)], "val": [...]} from a run's metrics.jsonl; lines cut
    off by a crash are skipped."""
    path = run_dir / "metrics.jsonl"
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        raise CharRNNError(f"{run_dir} has no metrics.jsonl: not a run directory") from None
    except OSError as e:
        raise CharRNNError(f"cannot read {path}: {e.strerror or e}") from None
    curves = {"train": [], "val": []}
    for line in lines:
        try:
            r = json.loads(line)
            step, elapsed = int(r["step"]), float(r.get("elapsed", 0.0))
        except (ValueError, KeyError, TypeError):
            continue
        for name, key in (("train", "train_loss"), ("val", "val_loss")):
            if isinstance(r.get(key), (int, float)):
                curves[name].append((step, elapsed, r[key] / LN2))
    return curves


def run_dirs(targets: list[str]) -> list[Path]:
    """Run directories from arguments: a run, or a runs directory (its latest run); the
    same run named twice (runs/* lists runs/latest too) is drawn once."""
    found, seen = [], set()
    for target in targets:
        path = run_of(target)
        if not path.is_dir():
            raise CharRNNError(f"not a run directory: {target}")
        real = path.resolve()
        if real not in seen:
            seen.add(real)
            found.append(path)
    return found


def plot_runs(runs: list[Path], out: Path) -> None:
    """Draw the curves of `runs` into the PNG file `out` (written atomically)."""
    try:
        import matplotlib
    except ImportError:
        raise CharRNNError(INSTALL) from None
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    curves = {run: read_curves(run) for run in runs}
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    by_step, by_time = fig.subplots(1, 2, sharey=True)
    for i, (run, c) in enumerate(curves.items()):
        color = f"C{i % 10}"
        name = run.resolve().name
        for split, style, alpha in (("train", ".-", 0.45), ("val", "o-", 1.0)):
            if not c[split]:
                continue
            steps, seconds, bpc = zip(*c[split])
            label = f"{name} {split}"
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
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write(out, lambda f: f.write(buffer.getvalue()))


class CurveRefresher:
    """Redraws a run's curves.png after evaluations, where matplotlib is installed, at most
    1% of the time: a refresh that took d seconds is not repeated for 100 d seconds."""

    def __init__(self, run_dir: Path | None):
        self.run_dir = run_dir
        self.enabled = run_dir is not None and have_matplotlib()
        self.next_at = 0.0

    def __call__(self) -> None:
        now = time.monotonic()
        if not self.enabled or now < self.next_at:
            return
        try:
            plot_runs([self.run_dir], self.run_dir / "curves.png")
        except CharRNNError:
            self.enabled = False  # a failed drawing is not worth failing training for
        self.next_at = now + 100 * (time.monotonic() - now)
