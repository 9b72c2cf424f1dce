"""What a checkpoint claims, checked against what it holds, before anything is built.

    check_keys(state)                          # on load: every key is text
    check_claims(state["model"], V, cfg.model)  # before a model is built

A checkpoint's config says how big a model to build; its weights are what the file actually
carries. A header claiming a 3 GB model over a few kilobytes of tensors once made
`serve --watch` allocate the 3 GB, and one claiming thousands of layers kept it busy for
a minute. So every command that reads a checkpoint (load_model, the watcher, export,
runs) checks here first, in this order, each step cheap and bounded by the file's size:
the table's keys are text, the config parses, the number of weight tensors is the number
the config implies, and each tensor has the shape the config implies. Only then is a
model built, and it is no bigger than the tensors that fill it.
"""

from __future__ import annotations

import torch

from .config import ModelConfig
from .errors import CheckpointError
from .model import GATES


def check_keys(table, what: str = "checkpoint") -> None:
    """Every key of a loaded table is text, at the top and one level down (the config's
    sections, the vocabulary, the weights): a foreign pickle of ints is refused here."""
    if not isinstance(table, dict):
        raise CheckpointError(f"{what} is not a table: damaged or not a charrnn checkpoint")
    for key, value in table.items():
        inner = value.keys() if isinstance(value, dict) else ()
        bad = next((k for k in (key, *inner) if not isinstance(k, str)), None)
        if bad is not None:
            raise CheckpointError(f"{what} has a key that is not text ({type(bad).__name__} "
                                  f"{_short(bad)}): damaged or not a charrnn checkpoint")


def expected_count(cfg: ModelConfig) -> int:
    """Weight tensors of a CharRNN: 4 per recurrent layer, the head's 2, the embedding."""
    return 4 * cfg.num_layers + 2 + (1 if cfg.embed_dim else 0)


def expected_shapes(vocab_size: int, cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The state_dict shapes of a CharRNN of this config, computed without building it."""
    V, H, E, G = vocab_size, cfg.hidden_size, cfg.embed_dim, GATES[cfg.cell]
    shapes = {"embedding.weight": (V, E)} if E else {}
    for k in range(cfg.num_layers):
        shapes.update({f"rnn.weight_ih_l{k}": (G * H, (E or V) if k == 0 else H),
                       f"rnn.weight_hh_l{k}": (G * H, H),
                       f"rnn.bias_ih_l{k}": (G * H,), f"rnn.bias_hh_l{k}": (G * H,)})
    shapes.update({"head.weight": (V, H), "head.bias": (V,)})
    return shapes


def check_claims(weights, vocab_size: int, cfg: ModelConfig) -> None:
    """The weights present are exactly those of the model the config claims: first their
    number (so a claim of a million layers costs nothing), then each one's shape."""
    if not isinstance(weights, dict) or not all(isinstance(k, str) for k in weights):
        raise CheckpointError("checkpoint weights are not a table of tensors")
    want = expected_count(cfg)
    if len(weights) != want:
        raise CheckpointError(f"checkpoint claims a {_model(cfg)} model ({want:,} weight "
                              f"tensors) but holds {len(weights):,}: damaged or edited")
    for key, shape in expected_shapes(vocab_size, cfg).items():
        got = weights.get(key)
        if not isinstance(got, torch.Tensor):
            raise CheckpointError(f"checkpoint claims a {_model(cfg)} model but has no "
                                  f"tensor {key}: damaged or edited")
        if tuple(got.shape) != shape:
            raise CheckpointError(f"checkpoint claims a {_model(cfg)} model over "
                                  f"{vocab_size:,} characters, but its {key} has shape "
                                  f"{tuple(got.shape)}, not {shape}: damaged or edited")


def _model(cfg: ModelConfig) -> str:
    return f"{cfg.num_layers:,}x{cfg.hidden_size:,} {cfg.cell.upper()}"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
