"""Fine-tuning: a new run that starts from another run's weights (train.init_from).

    cfg, vocab, options, init = fine_tuning(cfg, explicit={"train.lr"})
    result = train(cfg, open_corpus("new.txt", vocab=vocab, options=options), init=init)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..core.checkpoint import config_of, load_checkpoint
from ..core.config import Config
from ..core.errors import CheckpointError, ConfigError
from ..core.model import describe_model
from ..core.runs import find_checkpoint
from ..corpus.text import TextOptions
from ..corpus.vocab import Vocab
from ..inference.trained import text_options_of, vocab_of


def load_init(source: str | Path) -> tuple[Path, dict, Vocab]:
    """The checkpoint named by `train.init_from`: its path, its state and its vocabulary."""
    path = find_checkpoint(source)
    state = load_checkpoint(path)
    try:
        vocab = vocab_of(state)
    except CheckpointError:
        raise CheckpointError(f"--init-from {path}: the checkpoint has no usable vocabulary") from None
    return path, state, vocab


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
