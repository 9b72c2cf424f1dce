"""Self-contained, safe checkpoint files, and what their header says.

    save_checkpoint("runs/x/last.pt", state)     # atomic: temp file, fsync, rename
    state = load_checkpoint("runs/x/last.pt")    # torch.load(weights_only=True)
    header = read_header(state)                  # config, vocabulary, step, loss: typed

A checkpoint holds only tensors and plain containers: weights, optimizer state, config,
vocabulary, text options, step, RNG states, the training hidden state and best validation
loss. `weights_only=True` refuses anything else, so loading a file from someone else can
never run code. The keys are written by `checkpoint_state` and read back here only
(the run's counters at the top are training/state.py's TrainingState, written and read
whole); the packages above turn the header's plain data into their own types
(inference/trained.py builds the model and its Vocab, training/checkpointer.py resumes a
run).
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint_checks import check_claims, check_keys
from .config import Config
from .config_files import build_config
from .errors import CheckpointError, ConfigError
from .escape import shown
from .files import atomic_write

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
    unreadable = (f"{shown(path)} is not a readable checkpoint (truncated, or not a charrnn "
                  f"checkpoint)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        # torch words it "Unsupported global" up to 2.x and "unsupported GLOBAL" in 2.13.
        if "unsupported global" in str(e).lower():
            raise CheckpointError(
                f"refused to load {shown(path)}: it holds Python objects beyond tensors and "
                f"plain data, which could run code; only charrnn checkpoints are loaded") from None
        raise CheckpointError(unreadable) from None
    except Exception:  # torch raises many kinds for a damaged or foreign file
        raise CheckpointError(unreadable) from None
    _check_format(path, state)
    return state


def _check_format(path: Path, state) -> None:
    """A charrnn checkpoint of a format this charrnn reads, every key text."""
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


# ----------------------------------------------------------------------------------------
# the keys of a checkpoint: written and read here only


def checkpoint_state(*, model: dict, config: Config, vocab: dict, text_options: dict,
                     progress: dict | None = None, data_root: Path | None = None,
                     optimizer: dict | None = None, hidden: list | None = None,
                     rng: dict | None = None, precision: str | None = None) -> dict:
    """A checkpoint as plain tensors and containers. `vocab` and `text_options`: as
    Vocab.to_dict(counts=False) and TextOptions.to_dict write them; `progress`: the run's
    counters (training/state.py: TrainingState.to_checkpoint), stored at the top. A model
    alone (no optimizer, hidden or random state) samples and scores but cannot resume."""
    state = {"model": model}
    if optimizer is not None:
        state["optimizer"] = optimizer
    state.update({"config": config.to_dict(), "vocab": vocab, "text_options": text_options})
    if data_root is not None:
        state["data"] = {"root": str(Path(data_root).resolve())}
    state.update(progress or {})
    if rng is not None:
        state.update(hidden=hidden, rng=rng)
    if precision is not None:  # the plan it trained in, which a resumed `auto` keeps
        state["precision"] = precision
    return state


@dataclass(frozen=True)
class CheckpointHeader:
    """What a checkpoint says besides its tensors, checked and typed. The vocabulary and
    text options are plain data here (core knows no Vocab): inference/trained.py makes
    them a Vocab and TextOptions."""
    config: Config
    chars: tuple[str, ...]  # the text's characters, ids 0 .. n-1
    documents: bool  # a model of documents: the end-of-document mark is id n
    text_options: dict | None  # as TextOptions.to_dict wrote it; None when missing
    step: int | None = None  # optimizer steps taken; None when not recorded
    best_val_loss: float | None = None  # nats/char; None before any evaluation
    elapsed: float | None = None  # training time, seconds
    data_root: Path | None = None  # the prepared directory it was trained on
    precision: str | None = None  # the plan it trained in (fp32 before plans were kept)

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + self.documents

    @property
    def vocab(self) -> dict:
        """The vocabulary as stored: {"chars": [...]} (and the end-of-document mark)."""
        out = {"chars": list(self.chars)}
        if self.documents:
            out["end_of_document"] = {"id": len(self.chars)}
        return out


def read_header(state: dict) -> CheckpointHeader:
    """The header of a loaded checkpoint, once the model its config claims is the one its
    tensors hold (checkpoint_checks.py): checked before a byte of a model is allocated.
    Counters a checkpoint does not have, or holds damaged, read as None."""
    cfg = config_of(state)
    chars, documents = _vocab(state.get("vocab"))
    check_claims(weights_of(state), len(chars) + documents, cfg.model)
    options = state.get("text_options")
    step, loss, elapsed = state.get("step"), state.get("best_val_loss"), state.get("elapsed")
    precision = state.get("precision")
    return CheckpointHeader(
        cfg, chars, documents, options if isinstance(options, dict) else None,
        step=step if type(step) is int and step >= 0 else None,
        best_val_loss=loss if _finite(loss) else None,
        elapsed=float(elapsed) if _finite(elapsed) and elapsed >= 0 else None,
        data_root=data_root_of(state),
        precision=precision if isinstance(precision, str) else None)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _vocab(vocab) -> tuple[tuple[str, ...], bool]:
    """(characters, has the end-of-document mark) of a stored vocabulary, in its shape;
    the Vocab built from it checks the rest (repeats, surrogates)."""
    chars = vocab.get("chars") if isinstance(vocab, dict) else None
    if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
        raise CheckpointError("checkpoint has no usable vocabulary (it must be a list of "
                              "single characters)")
    end = vocab.get("end_of_document")
    if end is not None and (not isinstance(end, dict) or end.get("id") != len(chars)):
        raise CheckpointError("checkpoint has no usable vocabulary (its end-of-document "
                              "mark is not the id after the characters)")
    if not chars and end is None:
        raise CheckpointError("checkpoint has an empty vocabulary")
    return tuple(chars), end is not None


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


def data_root_of(state: dict) -> Path | None:
    root = state.get("data", {}).get("root") if isinstance(state.get("data"), dict) else None
    return Path(root) if isinstance(root, str) and root else None


def weights_of(state: dict):
    """The weights as stored (a state_dict, unchecked: tensor_checks.py checks them)."""
    return state.get("model")


def optimizer_of(state: dict):
    """The optimizer state as stored (unchecked: tensor_checks.check_optimizer)."""
    return state.get("optimizer")


def precision_of(state: dict) -> str:
    """The precision plan a run trained in; a checkpoint from before plans were recorded
    ran fp32."""
    precision = state.get("precision", "fp32")
    return precision if isinstance(precision, str) else "fp32"


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
