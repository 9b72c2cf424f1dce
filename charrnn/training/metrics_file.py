"""metrics.jsonl: a run's log for programs, one JSON line per log interval and per
validation. Its record type, its writer (training) and its reader (plot, runs).

    log = MetricsLog(run_dir / "metrics.jsonl")
    with log:
        log.write(MetricsRecord(step=100, elapsed=12.5, train_loss=1.9))
    reader = MetricsReader(run_dir / "metrics.jsonl")
    for record in reader:            # each usable MetricsRecord, in file order
        record.step, record.train_loss, record.val_loss
    reader.damaged, reader.out_of_range   # lines skipped, counted

A training line holds step, epoch, train_loss, lr, chars_per_s, elapsed and skipped; a
validation line step, val_loss, val_bpc and elapsed. A reader takes any line with a whole
`step` and keeps the fields it knows that are numbers, so files of older runs still read.

The file is read as untrusted input: it may be huge, hold one endless line, be a FIFO that
never ends, or carry numbers no run produces (a step of 1e308). A FIFO or device is refused
before it is opened for reading, a line is read at most MAX_LINE bytes at a time, and a
record whose numbers are out of range is skipped and counted like a damaged one rather
than drawn or printed.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

from ..core.errors import CharRNNError
from ..core.escape import shown
from ..core.files import atomic_write_text, open_regular, write_failure
from ..core.units import LN2

MAX_LINE = 1 << 16  # bytes: a record is a few hundred; longer lines are damage
MAX_STEP = 10**15  # steps: far beyond any run, and exact as a float
MAX_SECONDS = 10**10  # training time: three centuries
MAX_LOSS = 10**6  # nats per character: a loss beyond is no measurement


@dataclass(frozen=True)
class MetricsRecord:
    """One line of metrics.jsonl: a log interval's (train_loss ...) or a validation's
    (val_loss); a field a line does not hold is None."""
    step: int
    epoch: float | None = None
    train_loss: float | None = None  # nats/char, mean over the interval's good steps
    lr: float | None = None
    chars_per_s: float | None = None
    val_loss: float | None = None  # nats/char
    elapsed: float | None = None  # training time across resumes, seconds
    skipped: int | None = None  # non-finite steps skipped in this invocation

    @property
    def val_bpc(self) -> float | None:
        return None if self.val_loss is None else self.val_loss / LN2

    def to_json(self) -> str:
        """The line, fields that are None left out (val_bpc written beside val_loss)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value
            if f.name == "val_loss" and value is not None:
                out["val_bpc"] = self.val_bpc
        return json.dumps(out)

    @classmethod
    def from_json(cls, line: str) -> MetricsRecord | None:
        """A line as a record, or None when it is damaged: not a JSON object, too deeply
        nested, or without a finite whole `step` >= 0. Numbers other than the step may be
        anything finite; a non-finite one (Infinity, NaN) is damage too. Fields that are not
        numbers, and keys of no field, are left out."""
        try:
            data = json.loads(line)
        except (ValueError, RecursionError):
            return None
        if not isinstance(data, dict):
            return None
        step = data.get("step")
        if not _number(step) or not math.isfinite(step) or step < 0 or step != int(step):
            return None
        for value in data.values():
            if isinstance(value, (dict, list)) or (isinstance(value, float)
                                                   and not math.isfinite(value)):
                return None
        known = {f.name for f in fields(cls)} - {"step"}
        return cls(step=int(step), **{k: v for k, v in data.items() if k in known and _number(v)})

    def in_range(self) -> bool:
        """Whether the numbers are ones a run writes: step, elapsed, losses."""
        if self.step > MAX_STEP:
            return False
        if self.elapsed is not None and not 0 <= self.elapsed <= MAX_SECONDS:
            return False
        return all(loss is None or 0 <= loss <= MAX_LOSS
                   for loss in (self.train_loss, self.val_loss))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ----------------------------------------------------------------------------------------
# writing


class MetricsLog:
    """metrics.jsonl, appended a line at a time while open (`with log:`); a no-op without
    a path."""

    def __init__(self, path: Path | None):
        self.path, self.file = path, None

    def __enter__(self) -> MetricsLog:
        if self.path is not None:
            try:
                # O_NOFOLLOW: a link planted in the run directory is not written through.
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
                             0o666)
            except OSError as e:
                raise CharRNNError(f"cannot write {self.path}: {e.strerror or e}") from None
            self.file = os.fdopen(fd, "a", encoding="utf-8")
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.close()
        self.file = None

    def write(self, record: MetricsRecord) -> None:
        if self.file is None:
            return
        try:
            self.file.write(record.to_json() + "\n")
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
        try:
            text = "" if path.is_symlink() else path.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise CharRNNError(f"cannot read {path}: {e.strerror or e}") from None
        kept, damaged = [], 0
        for line in text.splitlines():
            record = MetricsRecord.from_json(line)
            if record is None:
                damaged += line.strip() != ""
            elif record.step <= step:
                kept.append(line)
        # Rewritten whole and renamed into place: a link there is replaced, not followed.
        atomic_write_text(path, "".join(line + "\n" for line in kept))
        return damaged


# ----------------------------------------------------------------------------------------
# reading


class MetricsReader:
    """The records of one metrics.jsonl; iterate once. Counts what it skips."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.damaged = 0  # lines that are not a record (cut off, edited, overlong)
        self.out_of_range = 0  # records with numbers no run writes
        self.read_bytes = 0

    def __iter__(self):
        try:
            with open_regular(self.path, "metrics.jsonl") as f:
                yield from self._records(f)
        except MemoryError:
            raise CharRNNError(f"out of memory while reading {shown(self.path)} (after "
                               f"{self.read_bytes / 1e6:,.0f} MB)") from None

    def _records(self, f):
        overlong = False
        while line := f.readline(MAX_LINE):
            self.read_bytes += len(line)
            whole = line.endswith(b"\n")
            if overlong or (not whole and len(line) == MAX_LINE):
                # The rest of a line too long to be a record: skipped a piece at a time.
                self.damaged += not overlong
                overlong = not whole
                continue
            record = MetricsRecord.from_json(line.decode("utf-8", "replace"))
            if record is None:
                self.damaged += line.strip() != b""
            elif not record.in_range():
                self.out_of_range += 1
            else:
                yield record

    def skipped(self) -> str | None:
        """What was skipped, in words ("2 damaged line(s)"), or None."""
        parts = ([f"{self.damaged} damaged line(s)"] if self.damaged else []) + (
            [f"{self.out_of_range} record(s) with out-of-range numbers"]
            if self.out_of_range else [])
        return " and ".join(parts) or None
