"""A run directory's checkpoints: best.pt, last.pt and periodic step-N.pt, and the restore
of a run from one.

    checkpointer = Checkpointer(run_dir, cfg.train, is_main, collect=trainer.checkpoint_state)
    checkpointer.after_validation(step, improved)    # last.pt, and best.pt when improved
    checkpointer.periodic(step, evaluated)           # step-N.pt as train.keep/save_every ask

`collect` builds the checkpoint and is collective under DDP (it gathers every rank's hidden
state), so every rank calls the same methods; only the main process writes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from ..core import distributed
from ..core.checkpoint import (
    check_resumable,
    hidden_of,
    load_resumable,
    save_checkpoint,
    training_state,
)
from ..core.config import Config, TrainConfig
from ..core.distributed import Dist
from ..core.errors import CheckpointError
from ..core.model import Hidden, hidden_from_tensors, hidden_tensors, select_rows
from ..core.runs import prune_periodic
from ..corpus.prepared import PreparedData
from .state import TrainingState


class Checkpointer:
    def __init__(self, run_dir: Path | None, cfg: TrainConfig, is_main: bool,
                 collect: Callable[[], dict]):
        self.run_dir, self.cfg, self.is_main, self.collect = run_dir, cfg, is_main, collect
        self.save_seconds = 0.0  # how long the last save took (the time budget keeps room)

    def save(self, *names: str) -> None:
        started = time.monotonic()
        state = self.collect()
        if not self.is_main or self.run_dir is None:
            return
        for name in names:
            save_checkpoint(self.run_dir / name, state)
        self.save_seconds = time.monotonic() - started

    def after_validation(self, improved: bool) -> None:
        # last.pt first: a kill between the two leaves the newest state to resume from.
        self.save(*(("last.pt", "best.pt") if improved else ("last.pt",)))

    def periodic(self, step: int, evaluated: bool) -> None:
        """step-N.pt, pruned to the newest train.keep: at each evaluation, or every
        train.save_every steps when that is set; nothing when keep is 0."""
        t = self.cfg
        due = step % t.save_every == 0 if t.save_every else evaluated
        if not (t.keep and due):
            return
        self.save(f"step-{step:08d}.pt")
        if self.is_main and self.run_dir is not None:
            prune_periodic(self.run_dir, t.keep)


def restore(ckpt: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: Config,
            dist: Dist, device: torch.device) -> tuple[TrainingState, Hidden | None]:
    """Continue from a checkpoint: every part checked once, before anything changes; then
    the weights, optimizer, random state and this rank's rows of the hidden state."""
    rng = check_resumable(ckpt, model, optimizer, cfg)
    state = TrainingState.from_checkpoint(ckpt)
    # Everything checked: only now does anything change.
    load_resumable(ckpt, model, optimizer)
    hidden = None
    saved = hidden_of(ckpt)
    if saved:
        hidden = hidden_from_tensors([h.to(device) for h in saved], cfg.model.cell)
        hidden = select_rows(hidden, slice(*dist.rows(cfg.train.batch_size)))
    if dist.enabled:
        torch.manual_seed(cfg.train.seed + dist.rank + state.step)
    else:
        torch.set_rng_state(rng["torch"])
        if device.type == "cuda" and rng.get("cuda") is not None:
            try:
                torch.cuda.set_rng_state(rng["cuda"], device)
            except RuntimeError:
                raise CheckpointError("checkpoint cannot be resumed: its CUDA random "
                                      "state is damaged") from None
    return state, hidden


def collect(model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: Config,
            data: PreparedData, state: TrainingState, hidden: Hidden | None, dist: Dist,
            device: torch.device) -> dict:
    """The checkpoint of a training run now. Collective under DDP: every rank's hidden
    state is gathered, so every rank must call it."""
    tensors = None
    if hidden is not None:
        tensors = [distributed.gather_rows(dist, h.detach()).float().cpu()
                   for h in hidden_tensors(hidden)]
    return training_state(
        model=model.state_dict(), optimizer=optimizer.state_dict(), config=cfg,
        vocab=data.vocab, text_options=data.options, data_root=data.root,
        progress=state.to_checkpoint(), hidden=tensors, device=device)
