"""A run directory's checkpoints: best.pt, last.pt and periodic step-N.pt, and the restore
of a run from one.

    checkpointer = Checkpointer(run_dir, cfg.train, is_main)
    checkpointer.after_validation(trainer.checkpoint_state(), improved)   # last.pt (and best.pt)
    if checkpointer.periodic_due(step, evaluated):                        # step-N.pt
        checkpointer.save_periodic(trainer.checkpoint_state(), step)

The state of a run (`run_state`) is collective under DDP (it gathers every rank's hidden
state), so every rank builds it and calls the same methods; only the main process writes.
"""

from __future__ import annotations

import time
from pathlib import Path
import torch

from ..core import distributed
from ..core.checkpoint import (
    checkpoint_state,
    hidden_of,
    optimizer_of,
    rng_of,
    save_checkpoint,
    weights_of,
)
from ..core.config import Config, TrainConfig
from ..core.distributed import Dist
from ..core.errors import CheckpointError
from ..core.model import Hidden, hidden_from_tensors, hidden_tensors, select_rows
from ..core.runs import prune_periodic
from ..core.tensor_checks import check_hidden, check_optimizer, check_weights
from ..corpus.prepared import PreparedData
from .state import TrainingState


class Checkpointer:
    def __init__(self, run_dir: Path | None, cfg: TrainConfig, is_main: bool):
        self.run_dir, self.cfg, self.is_main = run_dir, cfg, is_main
        self.save_seconds = 0.0  # how long the last save took (the time budget keeps room)

    def save(self, state: dict, *names: str) -> None:
        """`state` (a run_state, built by every rank) written to each of `names`."""
        if not self.is_main or self.run_dir is None:
            return
        started = time.monotonic()
        for name in names:
            save_checkpoint(self.run_dir / name, state)
        self.save_seconds = time.monotonic() - started

    def after_validation(self, state: dict, improved: bool) -> None:
        # last.pt first: a kill between the two leaves the newest state to resume from.
        self.save(state, *(("last.pt", "best.pt") if improved else ("last.pt",)))

    def periodic_due(self, step: int, evaluated: bool) -> bool:
        """Whether a step-N.pt is due: at each evaluation, or every train.save_every steps
        when that is set; never when train.keep is 0."""
        t = self.cfg
        return bool(t.keep) and (step % t.save_every == 0 if t.save_every else evaluated)

    def save_periodic(self, state: dict, step: int) -> None:
        """step-N.pt, and the older ones pruned to the newest train.keep."""
        self.save(state, f"step-{step:08d}.pt")
        if self.is_main and self.run_dir is not None:
            prune_periodic(self.run_dir, self.cfg.keep)


def restore(ckpt: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: Config,
            dist: Dist, device: torch.device) -> tuple[TrainingState, Hidden | None]:
    """Continue from a checkpoint: every part checked once, before anything changes; then
    the weights, optimizer, random state and this rank's rows of the hidden state."""
    rng = check_resumable(ckpt, model, optimizer, cfg)
    state = TrainingState.from_checkpoint(ckpt)
    # Everything checked: only now does anything change.
    model.load_state_dict(weights_of(ckpt))
    optimizer.load_state_dict(optimizer_of(ckpt))
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


def run_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: Config,
            data: PreparedData, state: TrainingState, hidden: Hidden | None, dist: Dist,
            device: torch.device, precision: str | None = None) -> dict:
    """The checkpoint of a training run now. Collective under DDP: every rank's hidden
    state is gathered, so every rank must call it."""
    tensors = None
    if hidden is not None:
        tensors = [distributed.gather_rows(dist, h.detach()).float().cpu()
                   for h in hidden_tensors(hidden)]
    rng = {"torch": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    return checkpoint_state(
        model=model.state_dict(), optimizer=optimizer.state_dict(), config=cfg,
        vocab=data.vocab.to_dict(counts=False), text_options=data.options.to_dict(),
        data_root=data.root, progress=state.to_checkpoint(), hidden=tensors, rng=rng,
        precision=precision)


def check_resumable(state: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    cfg: Config) -> dict:
    """Every tensor a resume uses, checked before any is loaded: weights, optimizer state,
    hidden state; returns the random states. The counters are TrainingState's to check."""
    m = cfg.model
    check_weights(weights_of(state), model, finite=True)
    check_optimizer(optimizer_of(state), optimizer)
    check_hidden(hidden_of(state), m.cell, m.num_layers, cfg.train.batch_size, m.hidden_size)
    return rng_of(state)
