"""The runs in a runs directory, one summary each: what `charrnn runs` lists.

    for run in list_runs("runs", sort="loss"):
        print(run.name, run.best_val_loss, run.latest)

A summary comes from what a run writes: metrics.jsonl (steps, training time, the best
validation loss of the whole run) and the checkpoint's header (corpus, model, vocabulary),
read memory-mapped so that listing many large runs reads little. A run whose files are
damaged is still listed, with what could be read and a note saying what could not.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.checkpoint import CheckpointHeader, load_checkpoint, read_header
from ..core.errors import CharRNNError
from ..core.escape import shown
from ..core.model import describe_model
from ..core.runs import RUN_FILES, is_run
from ..core.units import LN2
from ..inference.trained import vocab_of
from .metrics_file import MAX_SECONDS, MAX_STEP, MetricsReader

SORTS = ("time", "loss", "steps", "name")


@dataclass
class RunSummary:
    name: str
    path: str
    latest: bool = False
    corpus: str | None = None  # the prepared directory's name
    data: str | None = None  # its full path
    documents: int | None = None  # its documents (1: one text), None if it is not there
    model: str | None = None  # e.g. "LSTM 2x256"
    vocab_size: int | None = None
    steps: int = 0
    training_seconds: float = 0.0
    best_val_loss: float | None = None
    best_val_bpc: float | None = None
    best_step: int | None = None
    modified: float = 0.0  # when a run file was last written (seconds since the epoch)
    damaged: str | None = None  # why no checkpoint of the run could be read, in short
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def list_runs(runs_dir: str | Path, sort: str = "time", corpus: str | None = None
              ) -> list[RunSummary]:
    """The runs under `runs_dir`, sorted (`SORTS`: time = last written, oldest first; loss =
    best first; steps = most first; name), keeping those whose corpus name contains `corpus`."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise CharRNNError(f"no runs directory {root}; train a model first, or pass --runs DIR")
    if sort not in SORTS:
        raise CharRNNError(f"--sort must be one of {', '.join(SORTS)}, got {sort!r}")
    latest = _real(root / "latest") if (root / "latest").is_dir() else None
    runs = [_summary_or_reason(p, latest) for p in sorted(root.iterdir())
            if p.name != "latest" and not p.is_symlink() and is_run(p)]
    if corpus is not None:
        runs = [r for r in runs if r.corpus is not None and corpus.lower() in r.corpus.lower()]
    key = {"time": lambda r: r.modified,
           "loss": lambda r: math.inf if r.best_val_loss is None else r.best_val_loss,
           "steps": lambda r: -r.steps,
           "name": lambda r: r.name}[sort]
    return sorted(runs, key=key)


def _summary_or_reason(run_dir: Path, latest: Path | None) -> RunSummary:
    """A run's summary; one whose files fail in a way not foreseen is still listed, marked
    with the reason, so that one bad run never hides the others."""
    try:
        return summarize(run_dir, latest)
    except Exception as e:  # noqa: BLE001 - anything a damaged run holds
        run = RunSummary(run_dir.name, str(run_dir), latest == _real(run_dir))
        reason = str(e) if isinstance(e, CharRNNError) else f"{type(e).__name__}: {e}"
        run.damaged = _clip(shown(reason))
        run.notes.append(f"cannot be summarized: {shown(reason)}")
        return run


def summarize(run_dir: Path, latest: Path | None = None) -> RunSummary:
    """One run's summary from its files."""
    run = RunSummary(run_dir.name, str(run_dir), latest == _real(run_dir))
    times = [(run_dir / n).stat().st_mtime for n in RUN_FILES if (run_dir / n).is_file()]
    run.modified = max(times, default=run_dir.stat().st_mtime)
    _read_metrics(run_dir / "metrics.jsonl", run)
    _read_checkpoint(run_dir, run)
    if run.best_val_loss is not None:
        run.best_val_bpc = run.best_val_loss / LN2
    return run


def _read_metrics(path: Path, run: RunSummary) -> None:
    if not path.exists():
        return
    reader = MetricsReader(path)
    try:
        for record in reader:
            run.steps = max(run.steps, record.step)
            if record.elapsed is not None:
                run.training_seconds = max(run.training_seconds, float(record.elapsed))
            loss = record.val_loss
            if loss is not None and (run.best_val_loss is None or loss < run.best_val_loss):
                run.best_val_loss, run.best_step = float(loss), record.step
    except CharRNNError as e:  # not a regular file, or no memory for it
        run.notes.append(str(e))
    except OSError as e:
        run.notes.append(f"metrics.jsonl unreadable ({e.strerror or e})")
    if reader.skipped():
        run.notes.append(f"metrics.jsonl: {reader.skipped()} skipped")


def _read_checkpoint(run_dir: Path, run: RunSummary) -> None:
    """Corpus, model and vocabulary from last.pt (else best.pt); the step and best loss it
    holds fill in what metrics.jsonl lacks."""
    for name in ("last.pt", "best.pt"):
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            header = read_header(load_checkpoint(path, mmap=True))
            vocab = vocab_of(header)
        except (CharRNNError, OSError) as e:
            reason = str(e).removeprefix(f"{shown(path)}: ")
            run.damaged = run.damaged or _clip(reason.removeprefix("checkpoint "))
            if not any(note.endswith(f" is damaged: {reason}") for note in run.notes):
                run.notes.append(f"{name} is damaged: {reason}")
            continue
        _fill_from_header(run, header, len(vocab))
        run.damaged = None  # one good checkpoint is enough to list the run
        return


def _fill_from_header(run: RunSummary, header: CheckpointHeader, vocab_size: int) -> None:
    """Corpus and model from a checkpoint's header; its step, training time and best loss
    where metrics.jsonl has less."""
    root = header.data_root
    run.data, run.corpus = (str(root), root.name) if root else (None, None)
    run.documents = _documents(root) if root else None
    run.model, run.vocab_size = describe_model(header.config.model), vocab_size
    if header.step is not None and header.step <= MAX_STEP:
        run.steps = max(run.steps, header.step)
    if run.best_val_loss is None and header.best_val_loss is not None:
        run.best_val_loss = header.best_val_loss
    if header.elapsed is not None and header.elapsed <= MAX_SECONDS:
        run.training_seconds = max(run.training_seconds, header.elapsed)


def _documents(root: Path) -> int | None:
    """The document count its meta.json records (1 for one text); None if unreadable."""
    try:
        meta = json.loads((root / "meta.json").read_text(encoding="utf-8"))
        count = meta.get("documents", 1) if isinstance(meta, dict) else None
    except (OSError, ValueError):
        return None
    return count if type(count) is int and count >= 0 else None


def _clip(text: str, width: int = 36) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))

