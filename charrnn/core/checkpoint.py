"""Self-contained, safe checkpoints.

    save_checkpoint("runs/x/last.pt", state)     # atomic: temp file, fsync, rename
    state = load_checkpoint("runs/x/last.pt")    # torch.load(weights_only=True)
    model, vocab, options = model_from_checkpoint(state)

A checkpoint holds only tensors and plain containers: weights, optimizer state, config,
vocabulary, text options, step, RNG states, the training hidden state and best validation
loss. `weights_only=True` refuses anything else, so loading a file from someone else can
never run code.
"""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from ..corpus.text import TextOptions
from ..corpus.vocab import Vocab
from .config import Config
from .checkpoint_checks import check_claims, check_keys
from .config_files import build_config
from .device import check_fits
from .errors import CharRNNError, CheckpointError, ConfigError
from .escape import shown
from .files import atomic_write, is_locked
from .model import CharRNN, describe_model, model_bytes, parameter_count
from .runs import is_run, run_of
from .tensor_checks import check_hidden, check_optimizer, check_weights
from .units import LN2

FORMAT_VERSION = 1
KIND = "charrnn"


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write `state` to `path` so that `path` is always either the old file or the new one."""
    state = {"kind": KIND, "format_version": FORMAT_VERSION, **state}
    atomic_write(path, lambda f: torch.save(state, f), error=CheckpointError)


def load_checkpoint(path: str | Path, map_location="cpu", mmap: bool = False) -> dict:
    """A charrnn checkpoint, read safely (weights_only). `mmap`: tensors stay on disk until
    touched, for reading a checkpoint's header cheaply."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {shown(path)}")
    if not path.is_file():
        raise CheckpointError(f"not a checkpoint file: {shown(path)}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        # torch words it "Unsupported global" up to 2.x and "unsupported GLOBAL" in 2.13.
        if "unsupported global" in str(e).lower():
            raise CheckpointError(
                f"refused to load {shown(path)}: it holds Python objects beyond tensors and "
                f"plain data, which could run code; only charrnn checkpoints are loaded") from None
        raise CheckpointError(f"{shown(path)} is not a readable checkpoint (truncated, or not "
                              f"a charrnn checkpoint)") from None
    except Exception:  # torch raises many kinds for a damaged or foreign file
        raise CheckpointError(f"{shown(path)} is not a readable checkpoint (truncated, or not "
                              f"a charrnn checkpoint)") from None
    if not isinstance(state, dict) or state.get("kind") != KIND:
        raise CheckpointError(f"{shown(path)} is not a charrnn checkpoint")
    try:
        check_keys(state)
    except CheckpointError as e:
        raise CheckpointError(f"{shown(path)}: {e}") from None
    version = state.get("format_version")
    if type(version) is not int or version < 1:
        raise CheckpointError(f"{shown(path)} has no valid format version "
                              f"({shown(repr(version))[:40]}); it is damaged or not a charrnn "
                              f"checkpoint")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{shown(path)} was written by a newer charrnn (format "
                              f"{version:.3g}, this one reads up to {FORMAT_VERSION}); upgrade "
                              f"charrnn to load it")
    return state


# ----------------------------------------------------------------------------------------
# the keys of a checkpoint: written and read here only


def training_state(*, model: dict, optimizer: dict, config: Config, vocab: Vocab,
                   text_options: TextOptions, data_root: Path, progress: dict,
                   hidden: list | None, device: torch.device) -> dict:
    """Everything a resumed run needs, as plain tensors and containers. `progress`: the
    run's counters (training/state.py: TrainingState.to_checkpoint), stored at the top."""
    return {
        "model": model,
        "optimizer": optimizer,
        "config": config.to_dict(),
        "vocab": vocab.to_dict(counts=False),
        "text_options": text_options.to_dict(),
        "data": {"root": str(Path(data_root).resolve())},
        **progress,
        "hidden": hidden,
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
    }


def vocab_of(state: dict) -> Vocab:
    try:
        vocab = Vocab.from_dict(state["vocab"])
    except (KeyError, TypeError, CharRNNError) as e:
        raise CheckpointError(f"checkpoint has no usable vocabulary ({e})") from None
    if len(vocab) == 0:
        raise CheckpointError("checkpoint has an empty vocabulary")
    return vocab


def text_options_of(state: dict) -> TextOptions:
    try:
        return TextOptions.from_dict(state["text_options"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint has no usable text options ({e})") from None


def data_root_of(state: dict) -> Path | None:
    root = state.get("data", {}).get("root") if isinstance(state.get("data"), dict) else None
    return Path(root) if isinstance(root, str) and root else None


def hidden_of(state: dict) -> list[torch.Tensor] | None:
    """The training streams' hidden state, (layers, B, H) per tensor, or None."""
    hidden = state.get("hidden")
    return None if hidden is None or (isinstance(hidden, list) and not hidden) else hidden


def rng_of(state: dict) -> dict:
    """The random states: {"torch": the CPU generator's, "cuda": the GPU's or None}."""
    rng = state.get("rng")
    if not isinstance(rng, dict) or not _is_byte_tensor(rng.get("torch")):
        raise CheckpointError("checkpoint cannot be resumed: it has no valid random state")
    try:
        torch.Generator().set_state(rng["torch"])
    except (RuntimeError, TypeError):
        raise CheckpointError("checkpoint cannot be resumed: its random state is damaged") from None
    if rng.get("cuda") is not None and not _is_byte_tensor(rng["cuda"]):
        raise CheckpointError("checkpoint cannot be resumed: its CUDA random state is damaged")
    return rng


def _is_byte_tensor(t) -> bool:
    return isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.dim() == 1


# ----------------------------------------------------------------------------------------
# checking a checkpoint against the model it is loaded into, before torch sees it


def check_resumable(state: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    cfg: Config) -> dict:
    """Every tensor a resume uses, checked before any is loaded: weights, optimizer state,
    hidden state; returns the random states. The counters are TrainingState's to check."""
    m = cfg.model
    check_weights(state.get("model"), model, finite=True)
    check_optimizer(state.get("optimizer"), optimizer)
    check_hidden(hidden_of(state), m.cell, m.num_layers, cfg.train.batch_size, m.hidden_size)
    return rng_of(state)


def load_resumable(state: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Weights and optimizer state into place, once check_resumable has passed them."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])


def load_weights(state: dict, model: torch.nn.Module) -> None:
    """The checkpoint's weights into `model`, once checked (finite, every shape right)."""
    check_weights(state.get("model"), model, finite=True)
    model.load_state_dict(state["model"])


def config_of(state: dict) -> Config:
    config = state.get("config")
    if not isinstance(config, dict):
        raise CheckpointError("checkpoint has no config")
    try:
        return build_config(config)
    except ConfigError as e:
        raise CheckpointError(f"checkpoint has an unusable config: {e}") from None
    except (TypeError, ValueError, AttributeError, RecursionError):  # not a config's shape
        raise CheckpointError("checkpoint has an unusable config") from None


def header_of(state: dict) -> tuple[Config, Vocab]:
    """The config and vocabulary of a checkpoint, once the model the config claims is the
    one its tensors hold (checkpoint_checks.py): checked before a byte is allocated."""
    cfg, vocab = config_of(state), vocab_of(state)
    check_claims(state.get("model"), len(vocab), cfg.model)
    return cfg, vocab


def model_from_checkpoint(state: dict) -> tuple[CharRNN, Vocab, TextOptions]:
    """Rebuild the model (on CPU, in eval mode), its vocabulary and text options. The
    weights must fit the model and be finite (a diverged model samples nothing useful)."""
    options = text_options_of(state)
    cfg, vocab = header_of(state)
    model = build_model(len(vocab), cfg)
    load_weights(state, model)
    return model.eval(), vocab, options


def build_model(vocab_size: int, cfg: Config, device=None) -> CharRNN:
    """The CharRNN of a config, refused before allocating when it cannot fit."""
    device = torch.device(device or "cpu")
    params = parameter_count(vocab_size, cfg.model)
    check_fits(model_bytes(vocab_size, cfg.model), device,
               f"a {describe_model(cfg.model)} model over {vocab_size:,} characters "
               f"({params:,} parameters)", "choose a smaller model")
    return CharRNN.from_config(vocab_size, cfg.model).to(device)


def load_init(source: str | Path) -> tuple[Path, dict, Vocab]:
    """The checkpoint named by `train.init_from`: its path, its state and its vocabulary."""
    path = find_checkpoint(source)
    state = load_checkpoint(path)
    try:
        vocab = vocab_of(state)
    except CheckpointError:
        raise CheckpointError(f"--init-from {path}: the checkpoint has no usable vocabulary") from None
    return path, state, vocab


def describe_checkpoint(path: Path, state: dict) -> str:
    """One line naming a checkpoint for a person: which file (runs/latest resolved, so the
    run is named), which step, how good."""
    real = Path(os.path.realpath(path))
    try:
        real = real.relative_to(Path.cwd())
    except ValueError:
        pass
    line = f"model: {shown(real)}"
    step, loss = state.get("step"), state.get("best_val_loss")
    if isinstance(step, int):
        line += f", step {step:,}"
    if isinstance(loss, float) and math.isfinite(loss):
        line += f", best validation loss {loss:.4f} nats/char ({loss / LN2:.3f} bits/char)"
    return line


def find_checkpoint(target: str | Path | None, runs_dir: str | Path = "runs") -> Path:
    """A checkpoint file from a file, a run directory (best.pt, else last.pt), a runs
    directory (its latest run) or, with no target, the latest run under `runs_dir`."""
    if target is None:
        latest = Path(runs_dir) / "latest"
        if not latest.exists():
            others = [p.name for p in sorted(Path(runs_dir).glob("*")) if is_run(p)]
            if latest.is_symlink():
                raise CheckpointError(
                    f"{shown(latest)} points at {shown(os.readlink(latest))}, which is gone; pass a run "
                    f"directory" + (f" (runs: {shown(', '.join(others[:10]))})" if others else ""))
            raise CheckpointError(f"no runs found ({shown(latest)} does not exist); train a "
                                  f"model first or pass a run directory or checkpoint")
        target = latest
    target = run_of(target)
    if target.is_dir():
        for name in ("best.pt", "last.pt"):
            if (target / name).is_file():
                return target / name
        if (target / ".lock").exists() and not is_locked(target):
            raise CheckpointError(f"run directory {shown(target)} has no checkpoint, and no "
                                  f"training is running in it (it stopped before its first evaluation "
                                  f"saved one); pass another run (charrnn runs lists them)")
        raise CheckpointError(f"run directory {shown(target)} has no checkpoint yet (best.pt "
                              f"or last.pt: the first comes with its first evaluation); wait for "
                              f"it, or pass another run")
    if not target.exists():
        raise CheckpointError(f"checkpoint or run directory not found: {shown(target)}")
    return target


@dataclass
class TrainedModel:
    """A model as the commands use one: where it came from, and the line that names it."""
    path: Path
    state: dict
    model: CharRNN
    vocab: Vocab
    options: TextOptions

    @property
    def line(self) -> str:
        return describe_checkpoint(self.path, self.state)


def load_model(target: str | Path | None, runs_dir: str | Path = "runs") -> TrainedModel:
    """The model a command's TARGET names (find_checkpoint), loaded and checked."""
    path = find_checkpoint(target, runs_dir)
    state = load_checkpoint(path)
    return TrainedModel(path, state, *model_from_checkpoint(state))

