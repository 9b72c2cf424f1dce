"""When to evaluate, on how much of the validation split, the validation loss, and whether
it is the best so far.

    validator = Validator(cfg.train, state, val, device, dist)
    if validator.due(step):
        loss, improved = validator.validate(model)   # recorded in the state

The loss is the figure of inference/evaluate.py: every character of the validation text
(or of its sample, below) scored once with at least train.eval_context characters of
context, whatever train.eval_batch_size is.

train.eval_every counts steps (500) or training time ("60s"). With time, the first figure
comes within that time of the start whatever the machine's speed, and validation is kept to
about a tenth of the training time two ways: the split is cut to a fixed sample (its first
`sample_chars` characters, the same at every evaluation, so the figures compare), sized
from the model's cost at a rate that even a slow CPU core reaches; and when an evaluation
still takes longer than a tenth of the interval (a busy machine), the next one waits
correspondingly longer.
"""

from __future__ import annotations

import time

import torch

from ..core.config import TrainConfig
from ..core.distributed import Dist
from ..inference.evaluate import eval_streams, evaluate
from .state import TrainingState

EVAL_SHARE = 0.1  # of the training time, at most, spent validating when eval_every is a time
# Forward-pass FLOP/s that validation reaches at least, per device type: a conservative
# figure, so that the sample fits its share on a slow or busy machine (one core of a 2-core
# AMD EPYC scored a 2x256 GRU at about 40 GFLOP/s: docs/benchmarks.md).
EVAL_FLOPS = {"cpu": 30e9, "mps": 300e9, "cuda": 3e12}
MIN_SAMPLE = 20_000  # below this the figure is too noisy to compare or to stop on


def sample_chars(cfg: TrainConfig, split_chars: int, flops_per_char: float,
                 device_type: str) -> int:
    """How many characters of the validation split each evaluation scores: train.eval_chars
    when set, else all of them with a step cadence, else what fits EVAL_SHARE of the
    interval (at least MIN_SAMPLE). Depends on the config, the model and the device type
    only: never on a timing."""
    if cfg.eval_chars:
        return min(cfg.eval_chars, split_chars)
    if not cfg.eval_seconds:
        return split_chars
    rate = EVAL_FLOPS.get(device_type, EVAL_FLOPS["cpu"])
    fits = int(EVAL_SHARE * cfg.eval_seconds * rate / max(flops_per_char, 1.0))
    # Each stream reads eval_context characters unscored first: that is part of the cost.
    fits -= cfg.eval_batch_size * cfg.eval_context
    return min(split_chars, max(fits, MIN_SAMPLE))


class Validator:
    def __init__(self, cfg: TrainConfig, state: TrainingState, val, device="cpu",
                 dist: Dist | None = None):
        """`val`: the ids each evaluation scores (the split, or its sample_chars prefix)."""
        self.cfg, self.state, self.val, self.device, self.dist = cfg, state, val, device, dist
        self.chars = len(val)
        self.interval = cfg.eval_seconds
        self.seconds = 0.0  # how long the last evaluation took
        self.since = state.elapsed  # training time at the last evaluation (or the start)

    def due(self, step: int) -> bool:
        if self.interval:
            wait = max(self.interval, self.seconds / EVAL_SHARE)
            return self.state.elapsed - self.since >= wait
        return step % self.cfg.eval_every == 0

    @property
    def done_at_this_step(self) -> bool:
        return self.state.last_eval_step == self.state.step

    def to_come(self, final_eval: bool, train_chars_per_s: float = 0.0) -> float:
        """Seconds the final evaluation will take, if one is still to come: the last one's
        time with a margin, or before any, an estimate from the training speed (a scored
        character costs about a third of a trained one: no backward pass, no update; half
        is assumed, for the margin)."""
        if not final_eval or self.done_at_this_step:
            return 0.0
        if self.seconds:  # a busy machine can slow the next one: a wide margin
            return 1.5 * self.seconds
        if train_chars_per_s <= 0:
            return 0.0
        streams = eval_streams(self.chars, self.cfg.eval_batch_size, self.cfg.eval_context)
        read = self.chars + (streams - 1) * self.cfg.eval_context  # and the burn-ins
        return read / (2.0 * train_chars_per_s)

    def loss(self, model: torch.nn.Module, abort=None) -> float:
        """Mean nats per character over the validation text (all ranks take part);
        inference.evaluate.Abandoned when `abort()` turns true midway."""
        t = self.cfg
        # In fp32 whatever the plan: the figure that best.pt and patience compare stays one
        # figure across resumes in another precision.
        cast, model.recurrent_dtype = model.recurrent_dtype, None
        try:
            return evaluate(model, self.val, t.eval_batch_size, t.seq_len, self.device, None,
                            self.dist, t.eval_context, abort=abort)
        finally:
            model.recurrent_dtype = cast

    def validate(self, model: torch.nn.Module, abort=None) -> tuple[float, bool]:
        """The validation loss now, and whether it is the best so far (both recorded)."""
        started = time.monotonic()
        loss = self.loss(model, abort)
        return loss, self.record(loss, time.monotonic() - started)

    def record(self, loss: float, seconds: float) -> bool:
        """An evaluation's loss, which took `seconds`, recorded in the state; whether it is
        the best so far. An evaluation abandoned midway (inference.evaluate.Abandoned) is
        never recorded."""
        s = self.state
        self.seconds = seconds
        self.since = s.elapsed + seconds
        s.last_val_loss, s.last_eval_step = loss, s.step
        improved = loss < s.best_val_loss
        if improved:
            s.best_val_loss, s.best_step = loss, s.step
        s.stale_evals = 0 if improved else s.stale_evals + 1
        return improved
