"""The progress of a run: the counters a checkpoint carries besides the weights.

    state = TrainingState()                       # a new run
    state = TrainingState.from_checkpoint(ckpt)   # a resumed one, every counter checked
    ckpt.update(state.to_checkpoint())
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from ..core.errors import CheckpointError


@dataclass
class TrainingState:
    step: int = 0  # optimizer steps taken, across resumes
    best_val_loss: float = math.inf  # inf until the first evaluation
    best_step: int | None = None
    last_val_loss: float | None = None
    last_eval_step: int = -1
    skipped: int = 0  # steps skipped for a non-finite loss or gradient
    stale_evals: int = 0  # evaluations since the best one (train.patience)
    elapsed: float = 0.0  # training time across resumes, evaluations included (seconds)

    def to_checkpoint(self) -> dict:
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, state: dict) -> "TrainingState":
        """The counters of a checkpoint, each checked: a damaged value is one line."""
        defaults = cls()
        values = {}
        for f in fields(cls):
            optional = f.name in ("best_step", "last_val_loss")
            kind = float if f.type == "float" or f.name == "last_val_loss" else int
            minimum = -1 if f.name == "last_eval_step" else 0
            default = None if f.name == "step" else getattr(defaults, f.name)
            values[f.name] = _number(state, f.name, default, kind, optional, minimum)
        if not math.isfinite(values["elapsed"]):
            raise CheckpointError("checkpoint elapsed is not finite: the file is damaged")
        return cls(**values)


def _number(state: dict, key: str, default, kind, optional: bool, minimum):
    value = state.get(key, default)
    if value is None and optional:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    elif ok:
        ok = not math.isnan(value)
    if not ok or value < minimum:
        raise CheckpointError(f"checkpoint {key} is {value!r}: the file is damaged")
    return kind(value)
