"""Starting from a checkpoint: resuming a run, and fine-tuning from another run's weights.

    result = resume("runs/latest", config_file="configs/gpu.toml", overrides={"train": {"max_steps": 20000}})
    cfg, vocab, options, init = fine_tuning(cfg, explicit={"train.lr"})

A resumed run continues exactly: same data position, hidden state, optimizer, schedule,
random state and training-time budget (`train.max_time` is the run's total, counted across
resumes). The config of a resumed run is the checkpoint's; a config file and flags may be
given again as long as they agree with it, except for the keys that may change on resume
(config.RESUMABLE), so a job script can be rerun as it is.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..core.checkpoint import (config_of, data_root_of, load_checkpoint, load_init,
                         text_options_of, vocab_of)
from ..core.config import RESUMABLE, Config, load_config, nest, read_toml
from ..corpus.prepared import PreparedData
from ..core.errors import CheckpointError, ConfigError, DataError
from ..core.model import describe_model
from ..corpus.text import TextOptions
from ..core.runs import resolve_run_dir
from .trainer import TrainResult, train
from ..corpus.vocab import Vocab


def fine_tuning(cfg: Config, explicit: set[str]
                ) -> tuple[Config, Vocab, TextOptions, tuple[Path, dict, Vocab]]:
    """For `train.init_from`: the config with the checkpoint's model, the checkpoint's
    vocabulary and text options (with which new text is to be encoded), and the loaded
    checkpoint for `train(init=...)`. `explicit` names the keys the user set; model keys
    among them must agree with the checkpoint, except the dropout."""
    init = load_init(cfg.train.init_from)
    path, state, vocab = init
    model = config_of(state).model
    for key in sorted(explicit):
        section, _, name = key.partition(".")
        if section == "model" and name != "dropout" and getattr(cfg.model, name) != getattr(model, name):
            raise ConfigError(f"--init-from: the model is the checkpoint's ({describe_model(model)}, "
                              f"model.{name} = {getattr(model, name)!r}); leave out model.{name}")
    if "model.dropout" in explicit:
        model = replace(model, dropout=cfg.model.dropout)
    try:
        options = text_options_of(state)
    except CheckpointError as e:
        raise CheckpointError(f"--init-from {path}: {e}") from None
    return replace(cfg, model=model), vocab, options, init


def flatten(layers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{"model": {"hidden_size": 512}} -> {"model.hidden_size": 512}."""
    return {f"{section}.{key}": value for section, values in layers.items()
            if isinstance(values, dict) for key, value in values.items()}


def resume_config(saved: Config, requested: Config, explicit: set[str] | dict[str, str]
                  ) -> Config:
    """The checkpoint's config with what the user set explicitly (`explicit`, dotted keys,
    values from `requested`; as a dict, each key's origin for messages): keys in RESUMABLE
    take the new value, any other must agree."""
    origin = explicit if isinstance(explicit, dict) else dict.fromkeys(explicit, "given")
    changes = {}
    for key in sorted(origin):
        section, _, name = key.partition(".")
        old, new = getattr(getattr(saved, section), name), getattr(getattr(requested, section), name)
        if new == old:
            continue
        if section != "train" or name not in RESUMABLE:
            raise CheckpointError(
                f"--resume: {key} is {old!r} in the checkpoint, {new!r} {origin[key]}; it cannot "
                f"change on resume (drop it, or start a new run)")
        changes[name] = new
    return Config(model=saved.model, train=replace(saved.train, **changes))


def last_checkpoint(run_dir: str | Path) -> dict:
    """The last.pt of the run in `run_dir` (a link such as runs/latest is followed)."""
    path = resolve_run_dir(run_dir)
    if not path.is_dir():
        raise CheckpointError(f"--resume {run_dir}: not a run directory")
    return load_checkpoint(path / "last.pt")


def resume(run_dir: str | Path, overrides: dict[str, dict] | None = None, *,
           config_file: str | Path | None = None, data: PreparedData | None = None,
           state: dict | None = None, **kwargs) -> TrainResult:
    """Continue the run in `run_dir` (a link such as runs/latest is followed) from its
    last.pt (or `state`, when the caller has loaded it). `config_file` and `overrides`
    ({section: {key: value}}) may repeat the run's settings; they may change only the keys
    in RESUMABLE."""
    run_dir = resolve_run_dir(run_dir)
    if state is None:
        state = last_checkpoint(run_dir)
    overrides = overrides or {}
    file_layer = read_toml(config_file) if config_file else {}
    # Flags come after the file, so a key set by both is the flag's.
    explicit = {**dict.fromkeys(flatten(file_layer), f"in {config_file}"),
                **dict.fromkeys(flatten(overrides), "given")}
    requested = load_config(config_file, flatten(overrides))  # validates both on their own
    cfg = resume_config(config_of(state), requested, explicit)
    if data is None:
        root = data_root_of(state)
        if root is None or not (root / "meta.json").exists():
            raise DataError(f"--resume: the run's data directory {root} is gone; pass the "
                            f"corpus or prepared directory again")
        data = PreparedData(root)
    if data.vocab.chars != vocab_of(state).chars:
        raise CheckpointError("--resume: the corpus's vocabulary differs from the checkpoint's")
    return train(cfg, data, resume_state=state, resume_dir=run_dir, **kwargs)


__all__ = ["fine_tuning", "load_init", "nest", "resume", "resume_config"]
