"""Reading a run's metrics.jsonl as untrusted input: streamed, in bounded memory.

    reader = MetricsReader(run_dir / "metrics.jsonl")
    for record in reader:            # each usable record, in file order
        ...
    reader.damaged, reader.out_of_range   # lines skipped, counted

Every command that reads metrics.jsonl (plot, runs) reads it here. The file may be huge,
hold one endless line, be a FIFO that never ends, or carry numbers no run produces (a step
of 1e308): a FIFO or device is refused before it is opened for reading, a line is read at
most MAX_LINE bytes at a time, and a record whose numbers are out of range is skipped and
counted like a damaged one rather than drawn or printed.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import CharRNNError
from ..core.escape import shown
from ..core.files import open_regular
from .metrics import parse_record

MAX_LINE = 1 << 16  # bytes: a record is a few hundred; longer lines are damage
MAX_STEP = 10**15  # steps: far beyond any run, and exact as a float
MAX_SECONDS = 10**10  # training time: three centuries
MAX_LOSS = 10**6  # nats per character: a loss beyond is no measurement
LOSSES = ("train_loss", "val_loss")


def in_range(record: dict) -> bool:
    """Whether a parsed record's numbers are ones a run writes: step, elapsed, losses."""
    if record["step"] > MAX_STEP:
        return False
    elapsed = record.get("elapsed")
    if _number(elapsed) and not 0 <= elapsed <= MAX_SECONDS:
        return False
    return all(not _number(record.get(k)) or 0 <= record[k] <= MAX_LOSS for k in LOSSES)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
            record = parse_record(line.decode("utf-8", "replace"))
            if record is None:
                self.damaged += line.strip() != b""
            elif not in_range(record):
                self.out_of_range += 1
            else:
                yield record

    def skipped(self) -> str | None:
        """What was skipped, in words ("2 damaged line(s)"), or None."""
        parts = ([f"{self.damaged} damaged line(s)"] if self.damaged else []) + (
            [f"{self.out_of_range} record(s) with out-of-range numbers"]
            if self.out_of_range else [])
        return " and ".join(parts) or None
