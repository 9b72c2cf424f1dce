"""A run in its directory: a new one, or one resumed from its last.pt.

    from charrnn.core.config_files import load_config
    from charrnn.corpus.prepared import open_corpus
    from charrnn.training.run import resume, train
    result = train(load_config("tiny"), open_corpus("corpus.txt"))
    print(result.run_dir, result.best_val_loss)
    result = resume("runs/latest", overrides={"train": {"max_steps": 20000}})

A resumed run continues exactly: same data position, hidden state, optimizer, schedule,
random state and training-time budget (`train.max_time` is the run's total, counted across
resumes). The config of a resumed run is the checkpoint's; a config file and flags may be
given again as long as they agree with it, except for the keys that may change on resume
(config.RESUMABLE), so a job script can be rerun as it is.
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..core import distributed
from ..core.checkpoint import config_of, data_root_of, load_checkpoint
from ..core.config import RESUMABLE, Config
from ..core.config_files import load_config, read_toml
from ..core.errors import CheckpointError, DataError
from ..core.files import DirectoryLock, atomic_write_text, remove_stale
from ..core.runs import check_run_name, new_run_dir, resolve_run_dir, update_latest
from ..corpus.prepared import PreparedData
from ..corpus.vocab import Vocab
from ..inference.trained import vocab_of
from .metrics_file import MetricsLog
from .trainer import TrainResult, Trainer


def train(cfg: Config, data: PreparedData, *, runs_dir: str | Path = "runs",
          name: str | None = None, resume_state: dict | None = None,
          resume_dir: Path | None = None, echo=print, progress: bool = True,
          resident: bool | None = None, init: tuple[Path, dict, Vocab] | None = None,
          fused: bool | None = None) -> TrainResult:
    """Train a model on `data`; writes runs_dir/<name>/ (or continues `resume_dir` from
    `resume_state`, its checkpoint: see `resume`)."""
    if name is not None:
        check_run_name(name)
    dist = distributed.from_env()
    # Everything that can reject the input (device, data, checkpoint) runs before the run
    # directory is created, so a refused run leaves nothing behind.
    trainer = Trainer(cfg, data, state=resume_state, echo=echo, progress=progress,
                      resident=resident, init=init, fused=fused)
    run_dir, finished = None, False
    if resume_dir is not None:
        resume_dir = resolve_run_dir(resume_dir)
    try:
        with contextlib.ExitStack() as stack:
            if dist.is_main:
                run_dir = _open_run_dir(stack, cfg, trainer.state.step, runs_dir, name,
                                        data.name, resume_dir, echo)
            trainer.run_dir = run_dir
            result = trainer.run()
            finished = True
    finally:
        # The process group's threads stop here rather than at interpreter exit.
        trainer.release()
        gc.collect()
        distributed.shutdown(dist, wait=finished)
    if dist.is_main and run_dir is not None:
        update_latest(run_dir.parent if resume_dir is not None else Path(runs_dir), run_dir)
    return result


def _open_run_dir(stack: contextlib.ExitStack, cfg: Config, step: int, runs_dir, name,
                  corpus: str, resume_dir: Path | None, echo) -> Path:
    """The run directory, made (or resumed), locked for this trainer and tidied."""
    run_dir = resume_dir if resume_dir is not None else new_run_dir(runs_dir, name, corpus)
    if resume_dir is None:
        # latest is the newest run from its start: sample says which step it has.
        update_latest(Path(runs_dir), run_dir)
    # One trainer per run directory; what a killed one left half-written goes.
    stack.enter_context(DirectoryLock(run_dir, "run directory"))
    remove_stale(run_dir)
    atomic_write_text(run_dir / "config.toml", cfg.to_toml())
    damaged = MetricsLog.truncate(run_dir / "metrics.jsonl", step)
    if damaged:
        echo(f"{run_dir}/metrics.jsonl: skipped {damaged} damaged line(s)")
    return run_dir


# ----------------------------------------------------------------------------------------
# resuming


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
    """The last.pt of the run in `run_dir` (a link such as runs/latest is followed), or its
    best.pt when a kill came between the two saves. What a killed save left half-written
    goes first."""
    path = resolve_run_dir(run_dir)
    if not path.is_dir():
        raise CheckpointError(f"--resume {run_dir}: not a run directory")
    if any(path.glob(".*.tmp")):  # touch the directory only when there is debris
        with DirectoryLock(path, "run directory"):
            remove_stale(path)
    for name in ("last.pt", "best.pt"):
        if (path / name).is_file():
            return load_checkpoint(path / name)
    raise CheckpointError(f"--resume {run_dir}: the run has no checkpoint yet (it stopped "
                          f"before its first save); start it again without --resume")


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
