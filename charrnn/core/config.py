"""Configuration: frozen dataclasses of every setting, with their defaults and checks.

    cfg = Config(train=TrainConfig(lr=3e-3))      # or config_files.load_config(...)

A config file has one table per section ([model], [train]); every key must be a field of
that section's dataclass (config_files.py reads them). Out-of-range values raise
ConfigError naming the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError

CELLS = ("lstm", "gru", "rnn")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MAX_THREADS = 1024  # more is a typo or a damaged file, not a machine


def _field(default, *, resumable: bool = False, flag: str | None = None,
           help: str | None = None, choices: tuple[str, ...] | None = None):
    """A config field with its metadata: whether it may change when a run is resumed, and
    its command-line flag (`help` given: `--name` from the field's name unless `flag`)."""
    return field(default=default, metadata={"resumable": resumable, "flag": flag, "help": help,
                                            "choices": choices})


def _resumable(default, **kwargs):
    """A [train] field that may change when a run is resumed."""
    return _field(default, resumable=True, **kwargs)


@dataclass(frozen=True)
class ModelConfig:
    cell: str = _field("lstm", flag="--model", choices=CELLS, help="Recurrent cell.")
    hidden_size: int = _field(256, help="Units per recurrent layer.")
    num_layers: int = _field(2, help="Stacked recurrent layers.")
    dropout: float = _field(0.0, help="Dropout between layers and before the head.")
    # 0 = one-hot input (the classic char-rnn); > 0 = a learned embedding of this size,
    # which is cheaper when the vocabulary has thousands of characters.
    embed_dim: int = _field(0, help="Learned embedding size (0 = one-hot input).")

    def __post_init__(self):
        _check_choice("model.cell", self.cell, CELLS)
        _check_positive("model.hidden_size", self.hidden_size)
        _check_positive("model.num_layers", self.num_layers)
        if not 0.0 <= self.dropout < 1.0:  # also refuses nan
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.embed_dim < 0:
            raise ConfigError(f"model.embed_dim must be >= 0 (0 = one-hot), got {self.embed_dim}")


@dataclass(frozen=True)
class TrainConfig:
    seq_len: int = _field(64, help="Characters per chunk (backpropagation length).")
    batch_size: int = _field(32, help="Parallel streams (B).")
    lr: float = _resumable(2e-3, help="Peak learning rate (AdamW).")
    min_lr: float = _resumable(1e-4)
    warmup_steps: int = _resumable(100)
    lr_decay: str = _resumable("cosine")  # cosine | constant
    # Steps over which the learning rate decays; 0 = until the step, epoch or time limit.
    # Set it when a run may be extended with --resume, so the schedule does not move.
    decay_steps: int = _resumable(0)
    weight_decay: float = _resumable(0.0)
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = _resumable(1.0, help="Clip the global gradient norm (0 = off).")
    max_steps: int = _resumable(0, help="Stop after this many steps in total.")
    max_epochs: float = _resumable(0.0, help="Stop after this many passes over the data.")
    max_time: str = _resumable("", help="Stop after this much training time in total, e.g. "
                                        "90s, 10m, 1h30m (across resumes).")
    # Each stream starts from a blank state once every this many chunks, the streams taking
    # turns, so the model keeps working from the blank state every sample and evaluation
    # starts from (0 = only at the start of each epoch).
    reset_every: int = _resumable(16, help="Chunks between blank-state starts of each stream "
                                      "(0 = only at each epoch's start).")
    # Steps (500) or training time ("60s") between evaluations. Time keeps the first
    # figure within a minute of the start on any machine; steps keep evaluations at the same
    # steps on every run, for comparisons of settings.
    eval_every: int | str = _resumable(500, help="Steps, or a duration such as 60s, between "
                                                 "evaluations on the validation split.")
    eval_batch_size: int = _resumable(32)
    # Characters each validation stream reads unscored before scoring, so every character
    # is scored with this much context (where the text has it), whatever the batch size.
    eval_context: int = _resumable(512)
    # Characters of the validation split scored at each evaluation, from its start; 0 = all
    # when eval_every counts steps, and with a duration at most what a validation of this
    # model scores in a tenth of it (training/validator.py): a fixed sample, the same at every
    # evaluation, so the figures compare.
    eval_chars: int = _resumable(0)
    log_every: int = _resumable(50, help="Steps between progress lines and metrics records.")
    keep: int = _resumable(0)  # periodic checkpoints kept besides best.pt and last.pt
    save_every: int = _resumable(0)  # steps between periodic checkpoints (0 = at eval only)
    max_bad_steps: int = _resumable(5)  # consecutive non-finite steps before giving up
    patience: int = _resumable(
        0, help="Stop after this many evaluations without a new best validation loss "
                "(0 = never); best.pt is the best model.")
    seed: int = _field(1337, help="Random seed.")
    # Start from the weights of this checkpoint (a file or a run directory) instead of random
    # ones: fine-tuning. The model shape and vocabulary are the checkpoint's.
    init_from: str = _field("", help="Fine-tune: start from this checkpoint's (or run "
                             "directory's) weights, with its model and vocabulary.")
    device: str = _resumable("auto", help="auto, cpu, cuda, cuda:N or mps.")
    # CPU threads of the kernels. It never changes the model, so it may change on resume.
    threads: int = _resumable(0, help="CPU threads for the kernels (0 = OMP_NUM_THREADS if "
                                      "set, else 1 on up to 2 cores, one less than the cores "
                                      "above that).")
    precision: str = _resumable(
        "auto", choices=PRECISIONS,
        help="auto: bf16 where this CPU has bf16 units and a bf16 step measures faster, "
             "else fp32; fp32; bf16 (recurrent layers and head in bf16, weights, optimizer "
             "and carried state fp32); fp16 (CUDA: cuDNN in fp16 with loss scaling).")
    compile: bool = _resumable(
        False, help="torch.compile the model. The recurrent layers still run as their "
                    "cuDNN/oneDNN kernels (Dynamo does not compile nn.LSTM/GRU): only the "
                    "input, head and loss are compiled, so expect little gain.")

    @property
    def eval_seconds(self) -> float:
        """The training time between evaluations when eval_every is a duration, else 0."""
        return parse_duration(self.eval_every) if isinstance(self.eval_every, str) else 0.0

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "float" and not math.isfinite(value):
                raise ConfigError(f"train.{f.name} must be a finite number, got {value}")
        if not 0 <= self.seed < 2**64:
            raise ConfigError(f"train.seed must be in [0, 2^64), got {self.seed}")
        object.__setattr__(self, "eval_every", _steps_or_duration(self.eval_every,
                                                                  "train.eval_every"))
        if not 0 <= self.threads <= MAX_THREADS:
            raise ConfigError(f"train.threads must be 1 to {MAX_THREADS}, or 0 for the "
                              f"default; got {self.threads}")
        for key in ("seq_len", "batch_size", "eval_batch_size", "log_every",
                    "max_bad_steps"):
            _check_positive(f"train.{key}", getattr(self, key))
        for key in ("max_steps", "warmup_steps", "keep", "save_every", "decay_steps",
                    "eval_chars", "patience", "reset_every", "eval_context"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key} must be >= 0, got {getattr(self, key)}")
        if self.eval_chars == 1:
            raise ConfigError("train.eval_chars must be 0 (the whole split) or >= 2, got 1")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise ConfigError(f"train.min_lr must be in [0, lr={self.lr}], got {self.min_lr}")
        if self.grad_clip < 0:
            raise ConfigError(f"train.grad_clip must be >= 0 (0 disables), got {self.grad_clip}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        for key in ("beta1", "beta2"):
            if not 0 <= getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be in [0, 1), got {getattr(self, key)}")
        if self.max_epochs < 0:
            raise ConfigError(f"train.max_epochs must be >= 0, got {self.max_epochs}")
        _check_choice("train.lr_decay", self.lr_decay, ("cosine", "constant"))
        _check_choice("train.precision", self.precision, PRECISIONS)
        parse_duration(self.max_time, key="train.max_time")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ConfigError(
                f"train.device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")


# Keys of [train] that may change when a run is resumed (limits, logging, evaluation,
# device, the optimizer's rates); anything else must match the checkpoint, since the weights,
# the optimizer state and the stream layout were made with it.
RESUMABLE = frozenset(
    f.name for f in fields(TrainConfig) if f.metadata.get("resumable"))


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        lines = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
            lines.append("")
        return "\n".join(lines)


SECTIONS = {"model": ModelConfig, "train": TrainConfig}


@dataclass(frozen=True)
class Flag:
    """A command-line flag for a config key (from the field's metadata)."""

    key: str  # "model.hidden_size"
    flag: str  # "--hidden-size"
    type: str  # "int" | "float" | "str" | "bool"
    help: str
    choices: tuple[str, ...] | None
    default: Any = None


def flags() -> list[Flag]:
    """The config keys that have a command-line flag of their own, in declaration order."""
    out = []
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            if f.metadata.get("help"):
                out.append(Flag(f"{section}.{f.name}",
                                f.metadata["flag"] or "--" + f.name.replace("_", "-"),
                                f.type, f.metadata["help"], f.metadata["choices"], f.default))
    return out


def _check_positive(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def _steps_or_duration(value: int | str, key: str) -> int | str:
    """A positive step count (an int, or a string of digits: '500' from a flag) or a
    duration ('60s'), as an int or the duration's text."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"{key} must be a step count or a duration like 60s; got {value!r}")
    if isinstance(value, int):
        _check_positive(key, value)
        return value
    value = value.strip().lower()
    if not value:
        raise ConfigError(f"{key} must be a step count or a duration like 60s; got ''")
    try:
        parse_duration(value, key=key)
    except ConfigError:
        raise ConfigError(f"{key} must be a step count (500) or a duration (60s, 2m); got "
                          f"{value!r}") from None
    return value


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(text: str, key: str = "max_time") -> float:
    """'90s', '10m', '1h30m', '2d' or a bare number of seconds -> seconds (0 for '')."""
    text = text.strip().lower()
    if not text:
        return 0.0
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ConfigError(f"{key} must be a duration like 90s, 10m or 1h30m; got {text!r}")
        scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        seconds = sum(float(n) * scale[u] for n, u in parts)
    if not (0 < seconds < math.inf):
        raise ConfigError(f"{key} must be a positive, finite duration like 90s, 10m or 1h30m "
                          f"(or empty for none); got {text!r}")
    return seconds
