"""A trained model and its checkpoint, both ways: the model, vocabulary and text options a
checkpoint holds, and a checkpoint written for a model.

    trained = load_model("runs/latest")          # a file, a run or a runs directory
    trained.model, trained.vocab, trained.options, trained.header.step
    model, vocab, options = model_from_checkpoint(load_checkpoint("m.pt"))
    save_model("m.pt", model, vocab)             # what tests and benchmarks sample from

The file itself (safe loading, its keys, the typed header) is core/checkpoint.py's; this
module turns the header's plain data into the types the commands use.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.checkpoint import (
    CheckpointHeader,
    checkpoint_state,
    load_checkpoint,
    read_header,
    save_checkpoint,
    weights_of,
)
from ..core.config import Config, ModelConfig
from ..core.device import check_fits
from ..core.errors import CharRNNError, CheckpointError
from ..core.escape import shown
from ..core.model import CharRNN, describe_model, model_bytes, parameter_count
from ..core.runs import find_checkpoint
from ..core.tensor_checks import check_weights
from ..core.units import LN2
from ..corpus.text import TextOptions
from ..corpus.vocab import Vocab


def vocab_of(source: dict | CheckpointHeader) -> Vocab:
    """The vocabulary of a checkpoint (a loaded one, or its header)."""
    stored = source.vocab if isinstance(source, CheckpointHeader) else source.get("vocab")
    try:
        vocab = Vocab.from_dict(stored)
    except (TypeError, CharRNNError) as e:
        raise CheckpointError(f"checkpoint has no usable vocabulary ({e})") from None
    if len(vocab) == 0:
        raise CheckpointError("checkpoint has an empty vocabulary")
    return vocab


def text_options_of(source: dict | CheckpointHeader) -> TextOptions:
    """The text options a checkpoint's text went through (a loaded one, or its header)."""
    stored = (source.text_options if isinstance(source, CheckpointHeader)
              else source.get("text_options"))
    try:
        return TextOptions.from_dict(stored)
    except TypeError as e:
        raise CheckpointError(f"checkpoint has no usable text options ({e})") from None


def build_model(vocab_size: int, cfg: Config, device=None) -> CharRNN:
    """The CharRNN of a config, refused before allocating when it cannot fit."""
    device = torch.device(device or "cpu")
    params = parameter_count(vocab_size, cfg.model)
    check_fits(model_bytes(vocab_size, cfg.model), device,
               f"a {describe_model(cfg.model)} model over {vocab_size:,} characters "
               f"({params:,} parameters)", "choose a smaller model")
    return CharRNN.from_config(vocab_size, cfg.model).to(device)


def load_weights(state: dict, model: torch.nn.Module) -> None:
    """The checkpoint's weights into `model`, once checked (finite, every shape right)."""
    check_weights(weights_of(state), model, finite=True)
    model.load_state_dict(weights_of(state))


def model_from_checkpoint(state: dict) -> tuple[CharRNN, Vocab, TextOptions]:
    """Rebuild the model (on CPU, in eval mode), its vocabulary and text options. The
    weights must fit the model and be finite (a diverged model samples nothing useful)."""
    options = text_options_of(state)
    header = read_header(state)
    vocab = vocab_of(header)
    model = build_model(len(vocab), header.config)
    load_weights(state, model)
    return model.eval(), vocab, options


# ----------------------------------------------------------------------------------------
# a model as the commands name one


def display_path(path: str | Path) -> str:
    """A checkpoint's path for a person: runs/latest resolved (so the run is named),
    relative to the working directory where it is under it."""
    real = Path(os.path.realpath(path))
    try:
        real = real.relative_to(Path.cwd())
    except ValueError:
        pass
    return shown(real)


def describe_checkpoint(path: str | Path, header: CheckpointHeader) -> str:
    """One line naming a checkpoint for a person: which file, which step, how good."""
    line = f"model: {display_path(path)}"
    if header.step is not None:
        line += f", step {header.step:,}"
    loss = header.best_val_loss
    if loss is not None:
        line += f", best validation loss {loss:.4f} nats/char ({loss / LN2:.3f} bits/char)"
    return line


@dataclass
class TrainedModel:
    """A model as the commands use one: where it came from, and the line that names it."""
    path: Path
    state: dict
    model: CharRNN
    vocab: Vocab
    options: TextOptions
    header: CheckpointHeader

    @property
    def line(self) -> str:
        return describe_checkpoint(self.path, self.header)


def load_model(target: str | Path | None = None, runs_dir: str | Path = "runs") -> TrainedModel:
    """The model a command's TARGET names (core/runs.py: find_checkpoint), loaded and
    checked; with no target, the latest run's."""
    path = find_checkpoint(target, runs_dir)
    state = load_checkpoint(path)
    return TrainedModel(path, state, *model_from_checkpoint(state), read_header(state))


# ----------------------------------------------------------------------------------------
# a checkpoint for a model


def model_checkpoint(model: CharRNN, vocab: Vocab, cfg: Config | None = None, *,
                     options: TextOptions | None = None, step: int = 0,
                     best_val_loss: float | None = None,
                     data_root: Path | None = None) -> dict:
    """The checkpoint of `model` (no optimizer or random state: it samples, scores and
    exports, and cannot resume). `cfg`: the config it was trained with (default: the
    defaults, with the model's own shape)."""
    if cfg is None:
        cfg = Config(model=ModelConfig(cell=model.cell, hidden_size=model.hidden_size,
                                       num_layers=model.num_layers, embed_dim=model.embed_dim))
    progress = {"step": step}
    if best_val_loss is not None and math.isfinite(best_val_loss):
        progress["best_val_loss"] = float(best_val_loss)
    return checkpoint_state(model=model.state_dict(), config=cfg,
                            vocab=vocab.to_dict(counts=False),
                            text_options=(options or TextOptions()).to_dict(),
                            progress=progress, data_root=data_root)


def save_model(path: str | Path, model: CharRNN, vocab: Vocab, cfg: Config | None = None,
               **kwargs) -> Path:
    """Write `model_checkpoint(model, vocab, cfg, **kwargs)` to `path` atomically."""
    save_checkpoint(path, model_checkpoint(model, vocab, cfg, **kwargs))
    return Path(path)
