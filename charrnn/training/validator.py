"""When to evaluate, the validation loss, and whether it is the best so far.

    validator = Validator(cfg.train, state, loss_fn)
    if validator.due(step):
        loss, improved = validator.validate()   # recorded in the state

The loss is the figure of inference/evaluate.py: every character of the validation text
(or its first train.eval_chars) scored once with at least train.eval_context characters
of context, whatever train.eval_batch_size is.
"""

from __future__ import annotations

import time
from typing import Callable

from ..core.config import TrainConfig
from .state import TrainingState


class Validator:
    def __init__(self, cfg: TrainConfig, state: TrainingState, loss_fn: Callable[[], float]):
        self.cfg, self.state, self.loss_fn = cfg, state, loss_fn
        self.seconds = 0.0  # how long the last evaluation took

    def due(self, step: int) -> bool:
        return step % self.cfg.eval_every == 0

    @property
    def done_at_this_step(self) -> bool:
        return self.state.last_eval_step == self.state.step

    def to_come(self, final_eval: bool) -> float:
        """Seconds the final evaluation will take, if one is still to come."""
        return self.seconds if final_eval and not self.done_at_this_step else 0.0

    def validate(self) -> tuple[float, bool]:
        """The validation loss now, and whether it is the best so far (both recorded)."""
        started = time.monotonic()
        loss = self.loss_fn()
        self.seconds = time.monotonic() - started
        s = self.state
        s.last_val_loss, s.last_eval_step = loss, s.step
        improved = loss < s.best_val_loss
        if improved:
            s.best_val_loss, s.best_step = loss, s.step
        s.stale_evals = 0 if improved else s.stale_evals + 1
        return loss, improved
