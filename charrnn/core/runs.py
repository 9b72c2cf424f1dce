"""Run directories: runs/<name>/ with config.toml, metrics.jsonl, best.pt, last.pt, and
runs/latest pointing at the newest one.

What is a run and what is a runs directory is decided here only:

    run_of("runs")          # a runs directory: its latest run
    run_of("runs/shakes")   # a run directory: itself
    names_model(path)       # a checkpoint, a run or a runs directory (not a text to read)
    find_checkpoint("runs/shakes")   # its best.pt, else last.pt
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .errors import CharRNNError, CheckpointError
from .escape import shown
from .files import is_locked

RUN_FILES = ("best.pt", "last.pt", "metrics.jsonl", "config.toml")


def is_run(path: Path) -> bool:
    """A directory a training run wrote: it holds one of RUN_FILES."""
    return path.is_dir() and any((path / name).exists() for name in RUN_FILES)


def is_runs(path: Path) -> bool:
    """A directory of runs: not a run itself, with a `latest` run in it."""
    return path.is_dir() and not is_run(path) and (path / "latest").is_dir()


def run_of(target: str | Path) -> Path:
    """The run a directory names: a runs directory's latest run, or the directory itself."""
    path = Path(target)
    return path / "latest" if is_runs(path) else path


def names_model(target: str | Path) -> bool:
    """Whether a command-line path names a model (a .pt checkpoint, a run or a runs
    directory) rather than a text or a prepared corpus."""
    path = Path(target)
    if path.is_file():
        return path.suffix == ".pt"
    return not (path / "meta.json").exists() and (is_run(path) or is_runs(path))


def find_checkpoint(target: str | Path | None, runs_dir: str | Path = "runs") -> Path:
    """A checkpoint file from a file, a run directory (best.pt, else last.pt), a runs
    directory (its latest run) or, with no target, the latest run under `runs_dir`."""
    target = run_of(_latest(runs_dir) if target is None else target)
    if target.is_dir():
        for name in ("best.pt", "last.pt"):
            if (target / name).is_file():
                return target / name
        if (target / ".lock").exists() and not is_locked(target):
            raise CheckpointError(f"run directory {shown(target)} has no checkpoint, and no "
                                  f"training is running in it (it stopped before its first evaluation "
                                  f"saved one); pass another run (charrnn runs lists them)")
        raise CheckpointError(f"run directory {shown(target)} has no checkpoint yet (best.pt "
                              f"or last.pt: the first comes with its first evaluation); wait for "
                              f"it, or pass another run")
    if not target.exists():
        raise CheckpointError(f"checkpoint or run directory not found: {shown(target)}")
    return target


def _latest(runs_dir: str | Path) -> Path:
    """runs_dir/latest, which must lead to a run."""
    latest = Path(runs_dir) / "latest"
    if latest.exists():
        return latest
    others = [p.name for p in sorted(Path(runs_dir).glob("*")) if is_run(p)]
    if latest.is_symlink():
        raise CheckpointError(
            f"{shown(latest)} points at {shown(os.readlink(latest))}, which is gone; pass a run "
            f"directory" + (f" (runs: {shown(', '.join(others[:10]))})" if others else ""))
    raise CheckpointError(f"no runs found ({shown(latest)} does not exist); train a "
                          f"model first or pass a run directory or checkpoint")


def check_run_name(name: str) -> None:
    """A run name is one path component inside the runs directory, and not `latest`."""
    if (not name or name in (".", "..", "latest") or "/" in name or "\0" in name
            or (os.sep != "/" and os.sep in name)):
        raise CharRNNError(f"--name {name!r} is not a run name: use one plain name, no '/', "
                           f"'.', '..' or 'latest' (runs go under --runs)")


def new_run_dir(runs_dir: str | Path, name: str | None, corpus: str) -> Path:
    runs_dir = Path(runs_dir)
    if name is not None:
        check_run_name(name)
    base = name or f"{time.strftime('%Y%m%d-%H%M%S')}-{corpus}"
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        for i in range(1000):
            path = runs_dir / (base if i == 0 else f"{base}-{i}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                if name is not None:
                    raise CharRNNError(f"run directory {path} already exists; choose another "
                                       f"--name or continue it with --resume {path}") from None
    except PermissionError as e:
        raise CharRNNError(f"cannot create run directory under {runs_dir}: {e.strerror}; "
                           f"choose another --runs") from None
    except OSError as e:
        raise CharRNNError(f"cannot create run directory under {runs_dir}: {e.strerror}") from None
    raise CharRNNError(f"too many runs named {base} under {runs_dir}")


def resolve_run_dir(run_dir: str | Path) -> Path:
    """The real run directory behind `run_dir`: `runs/latest` is a link, and a run is known
    by the directory the link points at, never by the link."""
    return Path(os.path.realpath(run_dir))


def update_latest(runs_dir: Path, run_dir: Path) -> None:
    """Point runs_dir/latest at run_dir (a relative symlink, replaced atomically). Anything
    named `latest` that is not such a link is left alone, and so is a link to itself."""
    latest = runs_dir / "latest"
    if run_dir.name == "latest" or (latest.exists() and not latest.is_symlink()):
        return
    tmp = runs_dir / f".latest.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(run_dir.name, tmp)
        os.replace(tmp, latest)
    except OSError:
        tmp.unlink(missing_ok=True)


def prune_periodic(run_dir: Path, keep: int) -> None:
    """Keep only the `keep` newest step-*.pt checkpoints."""
    periodic = sorted(run_dir.glob("step-*.pt"))
    for old in periodic[:-keep] if keep else periodic:
        old.unlink(missing_ok=True)
