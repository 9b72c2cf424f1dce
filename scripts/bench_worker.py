"""Serve's worker without HTTP: what a turn costs besides the model's step.

    python scripts/bench_worker.py                 # this tree
    python scripts/bench_worker.py /path/to/tree   # another checkout of charrnn, to compare

For 1 and 32 streaming requests of LENGTH characters each (a random 2x256 GRU), the worker's
turns are run in this process until every request is done, and timed: the whole turn, the
bare batched step (a Stepper alone), and the turn less its step -- the draws, each request's
text and its events, which is the worker's own work. The fastest of 5 repetitions is kept:
on a shared machine it is the one least disturbed. Run two trees alternately to compare.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
sys.path[:0] = [str(root), str(root / "scripts")]
from bench_serve import random_checkpoint  # noqa: E402
from charrnn.inference.stepper import Stepper  # noqa: E402
from charrnn.serve.limits import Limits  # noqa: E402
from charrnn.serve.loaded import LoadedModel  # noqa: E402
from charrnn.serve.service import Service  # noqa: E402
from charrnn.serve.validation import GenerateSettings  # noqa: E402
from charrnn.serve.worker import Worker  # noqa: E402

try:
    from charrnn.inference.batch import Batch  # noqa: E402
except ImportError:  # a tree from before the engine's Batch
    from charrnn.serve.batch import Batch  # noqa: E402

LENGTH = 1000
REPEATS = 5
STEPPED = [0.0]  # seconds in Batch.step during a run


class NoLoop:
    def call_soon_threadsafe(self, function, *args) -> None:
        pass  # the events are made and handed over; nobody reads them


def timed(step):
    def wrapper(self):
        started = time.perf_counter()
        step(self)
        STEPPED[0] += time.perf_counter() - started
    return wrapper


def run(loaded: LoadedModel, n: int) -> tuple[float, float]:
    """(seconds of the whole run, seconds per turn besides the step) for n requests."""
    STEPPED[0] = 0.0
    service = Service(loaded, Limits(max_streams=1000), echo=lambda line: None)
    service.worker = worker = Worker(deliver=lambda events: None, loop=NoLoop())
    for seed in range(n):
        service.generate(GenerateSettings(length=LENGTH, seed=seed, stream=True))
    new, worker.inbox = worker.inbox, []
    started = time.perf_counter()
    worker._turn(new)
    worker._flush()
    while worker.busy:
        worker._turn([])
        worker._flush()
    total = time.perf_counter() - started
    return total, (total - STEPPED[0]) / worker.turns


def main() -> None:
    torch.set_num_threads(1)
    Batch.step = timed(Batch.step)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = LoadedModel.load(random_checkpoint(Path(tmp) / "model.pt", "gru", 256, 2),
                                  torch.device("cpu"))
    with torch.inference_mode():
        for n in (1, 32):
            stepper = Stepper(loaded.model, n)
            started = time.perf_counter()
            for _ in range(300):
                stepper.step()
            step = (time.perf_counter() - started) / 300
            runs = [run(loaded, n) for _ in range(REPEATS)]
            total, besides = min(r[0] for r in runs), min(r[1] for r in runs)
            print(f"{root.name}: {n:2d} requests: {n * LENGTH / total:8,.0f} chars/s, "
                  f"bare step {step * 1e6:6.0f} us, the turn besides the step "
                  f"{besides * 1e6:5.0f} us")


if __name__ == "__main__":
    main()
