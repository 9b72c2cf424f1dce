"""What a Trainer is built from, before the first step: the memory check, weights from
another run (fine-tuning), the DDP / torch.compile wrapping, and the start-up lines."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from ..core import distributed
from ..core.checkpoint import load_weights
from ..core.config import Config, ModelConfig
from ..core.cpu import describe_threads
from ..core.device import check_fits, describe
from ..core.precision import FP32
from ..core.distributed import Dist
from ..core.errors import CheckpointError, DataError
from ..core.model import (
    FLOAT_BYTES,
    GATES,
    describe_model,
    model_bytes,
    parameter_count,
)
from ..corpus.vocab import Vocab


def check_training_memory(cfg: Config, vocab_size: int, world_size: int,
                          device: torch.device) -> None:
    """Refuse, before allocating, a model and batch that cannot fit on the device: the
    model (with its one-hot table), the weights' gradients and two AdamW moments, and a
    step's activations."""
    t, m, V = cfg.train, cfg.model, vocab_size
    rows = t.batch_size // world_size
    activations = rows * t.seq_len * (m.num_layers * m.hidden_size * (GATES[m.cell] + 2) + 3 * V)
    needed = model_bytes(V, m) + FLOAT_BYTES * (3 * parameter_count(V, m) + activations)
    check_fits(needed, device,
               f"training a {describe_model(m)} over {V:,} characters with "
               f"batch_size {t.batch_size} x seq_len {t.seq_len}",
               "use a smaller model, --batch-size or --seq-len")


def init_weights(model: torch.nn.Module, init: tuple[Path, dict, Vocab], vocab: Vocab,
                 data_root: Path) -> None:
    """Fine-tuning: the weights of another run's checkpoint, for this run's data."""
    path, state, init_vocab = init
    if init_vocab.chars != vocab.chars:
        raise DataError(f"{data_root} is not encoded with the vocabulary of {path}; "
                        f"prepare the text with: charrnn prepare TEXT --vocab {path}")
    try:
        load_weights(state, model)
    except CheckpointError as e:
        raise CheckpointError(f"--init-from {path}: {e}; leave the model settings to the "
                              f"checkpoint") from None


def wrap_model(model: torch.nn.Module, dist: Dist, device: torch.device, compile: bool):
    """The callable a step runs: the model, in DDP with several processes, compiled on
    request. Checkpoints are always saved from the bare model."""
    forward = model
    if dist.enabled:
        # The only buffer is the constant one-hot table: nothing to re-broadcast per step.
        with warnings.catch_warnings():
            # torch marks broadcast_buffers deprecated but asks that code relying on
            # buffers not being synced keep using it until its replacement exists.
            warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated", FutureWarning)
            forward = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                broadcast_buffers=False)
    return torch.compile(forward) if compile else forward


def startup_lines(trainer) -> list[str]:
    """What the run is: device, precision, model, data, sizing advice, limits."""
    cfg, V = trainer.cfg, len(trainer.vocab)
    t = cfg.train
    params = sum(p.numel() for p in trainer.model.parameters())
    device = describe(trainer.device)
    if trainer.device.type == "cpu":
        device = f"cpu, {describe_threads(trainer.threads, t.threads)}"
    lines = [f"device: {device}"
             + (f", {trainer.dist.world_size} processes" if trainer.dist.enabled else "")
             + f"; {trainer.precision.describe(trainer.device)}",
             f"model: {describe_model(cfg.model)}, {params:,} parameters, vocabulary {V}; "
             f"{trainer.steps_per_epoch} steps per epoch"
             + (f"; weights from {t.init_from}" if t.init_from and trainer.state.step == 0
                else ""),
             sizing_advice(params, trainer.data.meta["splits"]["train"], cfg.model)]
    if not cfg.model.embed_dim and V > 500:
        lines.append(f"hint: a one-hot input over {V:,} characters costs {V:,} x "
                     f"{cfg.model.hidden_size} multiply-adds per gate per character; "
                     f"--embed-dim 128 is much cheaper")
    lines.append(validation_line(t, len(trainer.val), trainer.val_chars))
    if trainer.data.n_documents > 1:
        meta = trainer.data.meta
        lines.append(f"documents: {meta['documents']:,} (each {meta.get('split_on', 'file')}), "
                     f"each starting from a blank state; validation by "
                     f"{meta.get('split_by', 'characters')}")
    if trainer.run_dir is not None:
        lines.append(f"run: {trainer.run_dir}")
    lines.append(limits_line(t))
    return lines


def validation_line(t, scored: int, split: int) -> str:
    """How often the run evaluates, and on how much of the validation split."""
    when = (f"every {t.eval_every} of training time" if t.eval_seconds
            else f"every {t.eval_every:,} steps")
    what = (f"all {split:,} characters of the split" if scored >= split
            else f"a fixed sample, the first {scored:,} of its {split:,} characters "
                 f"(--set train.eval_chars=N sets it)")
    return f"validation: {when}, on {what}"


def limits_line(t) -> str:
    """When the run ends, in one line; --max-time said to be training time."""
    if not (t.max_steps or t.max_epochs or t.max_time or t.patience):
        return "no --max-steps, --max-epochs, --max-time or --patience: training until Ctrl-C"
    parts = []
    if t.max_steps:
        parts.append(f"{t.max_steps:,} step{'s' if t.max_steps > 1 else ''}")
    if t.max_epochs:
        parts.append(f"{t.max_epochs:g} epoch{'s' if t.max_epochs != 1 else ''}")
    if t.max_time:
        parts.append(f"{t.max_time} of training time (evaluations and saves count, the "
                     f"final evaluation fits inside, and a resume continues the clock)")
    if t.patience:
        parts.append(f"{t.patience} evaluation{'s' if t.patience > 1 else ''} without a "
                     f"better validation loss")
    first = ", whichever comes first," if len(parts) > 1 else ""
    return "stops at: " + "; ".join(parts) + first + " or on Ctrl-C"


def sizing_advice(params: int, chars: int, model: ModelConfig) -> str:
    """One line relating the parameter count to the training text: char-rnn's rule of thumb
    is the two of the same order of magnitude. A hint when the model is far larger (it
    will memorise) or far smaller (it has room to grow)."""
    ratio = params / max(chars, 1)
    line = (f"size: {params:,} parameters for {chars:,} training characters "
            f"({ratio:.2g} per character)")
    if ratio > 10:
        return (line + f"; the model is far larger than the text and will overfit: raise "
                f"--dropout (now {model.dropout:g}, try 0.3-0.5) or shrink --hidden-size")
    if ratio < 0.1:
        return (line + "; the model is far smaller than the text: a larger --hidden-size or "
                "more --num-layers should do better, given the time")
    return line + " (the same order of magnitude: a good fit)"


def agree(dist: distributed.Dist, device: torch.device, plan):
    """Under DDP, the same plan on every process: bf16 only if every process picked it
    (one all-reduce on every process, whatever each one measured or could do)."""
    if not dist.enabled:
        return plan
    mine = torch.tensor(1.0 if plan.cast is not None else 0.0, device=device)
    everyone = distributed.all_reduce_sum(dist, mine).item()
    if plan.cast is not None and everyone < dist.world_size:
        return replace(FP32, why="auto: fp32, as not every process could use bf16")
    return plan
