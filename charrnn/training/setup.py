"""What a Trainer is built from, before the first step: the memory check, the training
streams and validation text, weights from another run (fine-tuning), the DDP /
torch.compile wrapping, and the start-up lines."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch
from torch.nn.parallel import DistributedDataParallel

from ..core import distributed
from ..core.checkpoint import precision_of
from ..core.config import Config, ModelConfig
from ..core.cpu import describe_threads
from ..core.device import check_fits, describe
from ..core.distributed import Dist
from ..core.errors import CheckpointError, DataError
from ..core.precision import FP32, Precision, cached_speedup, resolve_precision
from ..core.model import (
    FLOAT_BYTES,
    CharRNN,
    GATES,
    describe_model,
    model_bytes,
    parameter_count,
)
from ..corpus.prepared import PreparedData
from ..corpus.streams import Streams
from ..corpus.vocab import Vocab
from ..inference.trained import load_weights
from .finetune import load_init
from .optim import make_optimizer
from .validator import sample_chars


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


@dataclass
class TrainingText:
    streams: Streams  # this rank's rows of the training split
    val: object  # the validation text each evaluation scores (a fixed sample of the split)
    val_chars: int  # the whole split's characters, before any sample


def training_text(cfg: Config, data: PreparedData, dist: Dist, device: torch.device,
                  resident: bool | None) -> TrainingText:
    """This rank's training streams, and the validation text (validator.sample_chars)."""
    t = cfg.train
    row_start, row_stop = dist.rows(t.batch_size)
    starts = None  # streams start blank where documents do (a corpus of many)
    if data.n_documents > 1:
        starts = data.documents().starts_in(0, data.meta["splits"]["train"])
    streams = Streams(data.split("train"), t.batch_size, t.seq_len, device, row_start,
                      row_stop, resident=resident, reset_every=t.reset_every,
                      doc_starts=starts)
    val = data.split("val")
    flops = 2.0 * parameter_count(len(data.vocab), cfg.model)
    n = sample_chars(t, len(val), flops, device.type)
    return TrainingText(streams, val[:n] if n < len(val) else val, len(val))


class TrainingModel(NamedTuple):
    model: CharRNN
    precision: Precision  # the precision plan it trains in
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler


def training_model(cfg: Config, data: PreparedData, dist: Dist, device: torch.device,
                   state: dict | None, init: tuple[Path, dict, Vocab] | None,
                   fused: bool | None) -> TrainingModel:
    """The model (weights from train.init_from for a new fine-tuning run), its precision
    plan (a resumed `auto` keeps the checkpoint's), optimizer and gradient scaler."""
    t, V = cfg.train, len(data.vocab)
    check_training_memory(cfg, V, dist.world_size, device)
    model = CharRNN.from_config(V, cfg.model).to(device)
    # bf16 against fp32 for this model's step, from the per-user cache or measured once
    # (each process its own; `agree` then makes them pick the same plan).
    speedup = lambda: cached_speedup(model.rnn, t.batch_size // dist.world_size,  # noqa: E731
                                     t.seq_len, device)
    started = None if state is None else precision_of(state)
    plan = agree(dist, device, resolve_precision(t.precision, device, cfg.model.cell, speedup,
                                                 cfg.model.hidden_size, started))
    model.recurrent_dtype = plan.cast
    if state is None and t.init_from:
        init_weights(model, init or load_init(t.init_from), data.vocab, data.root)
    # PyTorch has fused AdamW kernels for cuda and cpu; mps and others take the foreach one.
    fused = device.type in ("cuda", "cpu") if fused is None else fused
    return TrainingModel(model, plan, make_optimizer(model, t, fused),
                         torch.amp.GradScaler(device.type, enabled=plan.scaler))


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
