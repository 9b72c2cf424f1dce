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
import pickle
from pathlib import Path

import torch

from ..corpus.text import TextOptions
from ..corpus.vocab import Vocab
from .config import Config, config_from_dict
from .device import check_fits
from .errors import CharRNNError, CheckpointError, ConfigError
from .files import atomic_write
from .model import CharRNN, describe_model, model_bytes, parameter_count
from .runs import run_of

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
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):
            raise CheckpointError(
                f"refused to load {path}: it holds Python objects beyond tensors and plain "
                f"data, which could run code; only charrnn checkpoints are loaded") from None
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated, or not a charrnn checkpoint)") from None
    except Exception:  # torch raises many kinds for a damaged or foreign file
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated, or not a charrnn checkpoint)") from None
    if not isinstance(state, dict) or state.get("kind") != KIND:
        raise CheckpointError(f"{path} is not a charrnn checkpoint")
    version = state.get("format_version")
    if type(version) is not int or version < 1:
        raise CheckpointError(f"{path} has no valid format version ({version!r}); it is "
                              f"damaged or not a charrnn checkpoint")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer charrnn (format {version}, this "
                              f"one reads up to {FORMAT_VERSION}); upgrade charrnn to load it")
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
        "vocab": {"chars": vocab.chars},
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


def load_optimizer(state: dict, optimizer: torch.optim.Optimizer) -> None:
    """The checkpoint's optimizer state into `optimizer`, once checked."""
    check_optimizer(state.get("optimizer"), optimizer)
    optimizer.load_state_dict(state["optimizer"])


def check_weights(weights, model: torch.nn.Module, finite: bool = False) -> None:
    """Every weight the model has, with its shape and a floating dtype (and finite values
    with `finite`); raises CheckpointError naming the first that is wrong."""
    check_tensors(weights, dict(model.state_dict()), "weights", finite)


def check_tensors(found, expected: dict, what: str, finite: bool = True) -> None:
    if not isinstance(found, dict):
        raise CheckpointError(f"checkpoint {what} are not a table of tensors")
    if set(found) != set(expected):
        extra, missing = sorted(set(found) - set(expected)), sorted(set(expected) - set(found))
        raise CheckpointError(f"checkpoint {what} do not fit the model: "
                              + (f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"))
    for key, want in expected.items():
        got = found[key]
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise CheckpointError(f"checkpoint {what} {key} has shape {shape}, the model "
                                  f"needs {tuple(want.shape)}")
        if not got.dtype.is_floating_point:
            raise CheckpointError(f"checkpoint {what} {key} is {got.dtype}, not floating point")
        if finite and not bool(torch.isfinite(got).all()):
            raise CheckpointError(f"checkpoint {what} {key} holds NaN or infinite values")


def check_optimizer(saved, optimizer: torch.optim.Optimizer) -> None:
    """An AdamW state for exactly these parameters: groups, moments of each parameter's
    shape, finite step counts (a wrong shape reaches the fused kernel as a crash)."""
    fresh = optimizer.state_dict()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list) \
            or not isinstance(saved.get("state"), dict):
        raise CheckpointError("checkpoint optimizer state is not an optimizer state")
    if len(saved["param_groups"]) != len(fresh["param_groups"]):
        raise CheckpointError("checkpoint optimizer state has the wrong parameter groups")
    for got, want in zip(saved["param_groups"], fresh["param_groups"]):
        ids = got.get("params") if isinstance(got, dict) else None
        if not isinstance(ids, list) or not all(type(i) is int for i in ids) \
                or ids != want["params"]:
            raise CheckpointError("checkpoint optimizer state has the wrong parameter groups")
        for key, value in want.items():
            if key != "params" and not _same_kind(got.get(key, value), value):
                raise CheckpointError(f"checkpoint optimizer setting {key} is "
                                      f"{got.get(key)!r}")
    for index, entry in saved["state"].items():
        if type(index) is not int or not 0 <= index < len(params) or not isinstance(entry, dict):
            raise CheckpointError(f"checkpoint optimizer state has an entry {index!r} for no parameter")
        shape = params[index].shape
        check_tensors({k: entry.get(k) for k in ("exp_avg", "exp_avg_sq")},
                      {"exp_avg": params[index], "exp_avg_sq": params[index]},
                      f"optimizer state of parameter {index}")
        step = entry.get("step")
        if not isinstance(step, torch.Tensor) or step.numel() != 1 or not bool(
                torch.isfinite(step).all()) or float(step) < 0:
            raise CheckpointError(f"checkpoint optimizer step count of parameter {index} "
                                  f"(shape {tuple(shape)}) is damaged")


def _same_kind(got, want) -> bool:
    """An optimizer setting of the kind a fresh optimizer has (numbers finite)."""
    if isinstance(want, bool) or want is None:
        return got is None or isinstance(got, bool)
    if isinstance(want, (int, float)):
        return isinstance(got, (int, float)) and not isinstance(got, bool) and math.isfinite(got)
    if isinstance(want, tuple):
        return isinstance(got, tuple) and len(got) == len(want) and all(
            _same_kind(g, w) for g, w in zip(got, want))
    return type(got) is type(want)


def check_hidden(hidden, cell: str, num_layers: int, batch_size: int, hidden_size: int) -> None:
    if hidden is None:
        return
    want = (num_layers, batch_size, hidden_size)
    if not isinstance(hidden, list) or len(hidden) != (2 if cell == "lstm" else 1) or not all(
            isinstance(h, torch.Tensor) and h.shape == want and h.dtype.is_floating_point
            and bool(torch.isfinite(h).all()) for h in hidden):
        raise CheckpointError(f"checkpoint hidden state is not {len(want)} finite tensor(s) "
                              f"of shape {want}")


def config_of(state: dict) -> Config:
    config = state.get("config")
    if not isinstance(config, dict):
        raise CheckpointError("checkpoint has no config")
    try:
        return config_from_dict(config)
    except ConfigError as e:
        raise CheckpointError(f"checkpoint has an unusable config: {e}") from None


def model_from_checkpoint(state: dict) -> tuple[CharRNN, Vocab, TextOptions]:
    """Rebuild the model (on CPU, in eval mode), its vocabulary and text options. The
    weights must fit the model and be finite (a diverged model samples nothing useful)."""
    vocab, options = vocab_of(state), text_options_of(state)
    cfg = config_of(state)
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


def find_checkpoint(target: str | Path | None, runs_dir: str | Path = "runs") -> Path:
    """A checkpoint file from a file, a run directory (best.pt, else last.pt), a runs
    directory (its latest run) or, with no target, the latest run under `runs_dir`."""
    if target is None:
        latest = Path(runs_dir) / "latest"
        if not latest.exists():
            raise CheckpointError(f"no runs found ({latest} does not exist); train a model "
                                  f"first or pass a run directory or checkpoint")
        target = latest
    target = run_of(target)
    if target.is_dir():
        for name in ("best.pt", "last.pt"):
            if (target / name).is_file():
                return target / name
        raise CheckpointError(f"run directory {target} has no checkpoint (best.pt or last.pt)")
    if not target.exists():
        raise CheckpointError(f"checkpoint or run directory not found: {target}")
    return target
