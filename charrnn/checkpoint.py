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

import pickle
from pathlib import Path

import torch

from .config import Config, config_from_dict
from .files import atomic_write
from .errors import CharRNNError, CheckpointError, ConfigError
from .model import CharRNN
from .prepare import TextOptions
from .vocab import Vocab

FORMAT_VERSION = 1
KIND = "charrnn"


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write `state` to `path` so that `path` is always either the old file or the new one."""
    state = {"kind": KIND, "format_version": FORMAT_VERSION, **state}
    atomic_write(path, lambda f: torch.save(state, f), error=CheckpointError)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"not a checkpoint file: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"refused to load {path}: it holds Python objects beyond tensors and plain data, "
            f"which could run code; only charrnn checkpoints are loaded") from None
    except Exception:  # torch raises many kinds for a damaged or foreign file
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated, or not a charrnn checkpoint)") from None
    if not isinstance(state, dict) or state.get("kind") != KIND:
        raise CheckpointError(f"{path} is not a charrnn checkpoint")
    version = state.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer charrnn (format {version}, this "
                              f"one reads up to {FORMAT_VERSION}); upgrade charrnn to load it")
    return state


# ----------------------------------------------------------------------------------------
# the keys of a checkpoint: written and read here only


def training_state(*, model: dict, optimizer: dict, config: Config, vocab: Vocab,
                   text_options: TextOptions, data_root: Path, step: int, best_val_loss: float,
                   best_step: int | None, last_val_loss: float | None, last_eval_step: int,
                   skipped: int, elapsed: float, hidden: list | None,
                   device: torch.device) -> dict:
    """Everything a resumed run needs, as plain tensors and containers."""
    return {
        "model": model,
        "optimizer": optimizer,
        "config": config.to_dict(),
        "vocab": {"chars": vocab.chars},
        "text_options": text_options.to_dict(),
        "data": {"root": str(Path(data_root).resolve())},
        "step": step,
        "best_val_loss": best_val_loss,
        "best_step": best_step,
        "last_val_loss": last_val_loss,
        "last_eval_step": last_eval_step,
        "skipped": skipped,
        "elapsed": elapsed,
        "hidden": hidden,
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
    }


def vocab_of(state: dict) -> Vocab:
    try:
        return Vocab.from_dict(state["vocab"])
    except (KeyError, TypeError, CharRNNError) as e:
        raise CheckpointError(f"checkpoint has no usable vocabulary ({e})") from None


def text_options_of(state: dict) -> TextOptions:
    try:
        return TextOptions(**state["text_options"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint has no usable text options ({e})") from None


def data_root_of(state: dict) -> Path | None:
    root = state.get("data", {}).get("root") if isinstance(state.get("data"), dict) else None
    return Path(root) if isinstance(root, str) and root else None


def hidden_of(state: dict) -> list[torch.Tensor] | None:
    """The training streams' hidden state, (layers, B, H) per tensor, or None."""
    return state.get("hidden") or None


def rng_of(state: dict) -> dict:
    try:
        rng = state["rng"]
        rng["torch"]
    except (KeyError, TypeError):
        raise CheckpointError("checkpoint cannot be resumed: it has no random state") from None
    return rng


def config_of(state: dict) -> Config:
    try:
        return config_from_dict(state["config"])
    except (KeyError, ConfigError) as e:
        raise CheckpointError(f"checkpoint has an unusable config: {e}") from None


def model_from_checkpoint(state: dict) -> tuple[CharRNN, Vocab, TextOptions]:
    """Rebuild the model (on CPU, in eval mode), its vocabulary and text options."""
    vocab, options = vocab_of(state), text_options_of(state)
    try:
        cfg = config_of(state)
        model = CharRNN.from_config(len(vocab), cfg.model)
        model.load_state_dict(state["model"])
    except CharRNNError as e:
        raise CheckpointError(f"checkpoint is inconsistent: {e}") from None
    except (KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint is inconsistent or incomplete: {e}") from None
    return model.eval(), vocab, options


def load_init(source: str | Path) -> tuple[Path, dict, Vocab]:
    """The checkpoint named by `train.init_from`: its path, its state and its vocabulary."""
    path = find_checkpoint(source)
    state = load_checkpoint(path)
    try:
        vocab = vocab_of(state)
    except CheckpointError:
        raise CheckpointError(f"--init-from {path}: the checkpoint has no usable vocabulary") from None
    return path, state, vocab


def find_checkpoint(target: str | Path | None, runs_dir: str | Path = "runs") -> Path:
    """A checkpoint file from a file, a run directory (best.pt, else last.pt) or, with no
    target, the latest run under `runs_dir`."""
    if target is None:
        latest = Path(runs_dir) / "latest"
        if not latest.exists():
            raise CheckpointError(f"no runs found ({latest} does not exist); train a model "
                                  f"first or pass a run directory or checkpoint")
        target = latest
    target = Path(target)
    if target.is_dir() and (target / "latest").is_dir() and not any(
            (target / name).is_file() for name in ("best.pt", "last.pt")):
        target = target / "latest"  # a directory of runs: its latest
    if target.is_dir():
        for name in ("best.pt", "last.pt"):
            if (target / name).is_file():
                return target / name
        raise CheckpointError(f"run directory {target} has no checkpoint (best.pt or last.pt)")
    if not target.exists():
        raise CheckpointError(f"checkpoint or run directory not found: {target}")
    return target
