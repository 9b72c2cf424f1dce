"""The character-level recurrent language model.

    model = CharRNN(vocab_size=65, hidden_size=256, num_layers=2, cell="lstm")
    logits, hidden = model(idx)              # idx (B, T) -> logits (B, T, V)
    logits, hidden = model(next_idx, hidden) # carry the state into the next chunk

One-hot input (or a learned embedding when `embed_dim > 0`) -> stacked nn.LSTM / nn.GRU /
nn.RNN (batch_first) -> dropout -> nn.Linear head over the vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cells import GATES, RNN_CLASSES, Hidden, map_hidden
from .config import ModelConfig
from .precision import quiet_cast, recurrent_autocast, run_cast



class CharRNN(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int = 256, num_layers: int = 2,
                 cell: str = "lstm", dropout: float = 0.0, embed_dim: int = 0):
        super().__init__()
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers
        self.cell, self.embed_dim = cell, embed_dim
        if embed_dim > 0:
            self.embedding = nn.Embedding(vocab_size, embed_dim)
            input_size = embed_dim
        else:
            # One-hot as a lookup into an identity matrix: one gather, no (B, T) int64 copy.
            self.embedding = None
            self.register_buffer("one_hot", torch.eye(vocab_size), persistent=False)
            input_size = vocab_size
        self.rnn = RNN_CLASSES[cell](input_size, hidden_size, num_layers, batch_first=True,
                                     dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)
        if cell == "lstm":
            # A forget-gate bias of 1 lets early training remember across steps
            # (Jozefowicz et al. 2015). PyTorch's gate order is input, forget, cell, output.
            with torch.no_grad():
                for layer in range(num_layers):
                    getattr(self.rnn, f"bias_ih_l{layer}")[hidden_size:2 * hidden_size].fill_(1.0)
                    getattr(self.rnn, f"bias_hh_l{layer}")[hidden_size:2 * hidden_size].zero_()

    @classmethod
    def from_config(cls, vocab_size: int, cfg: ModelConfig) -> "CharRNN":
        return cls(vocab_size, cfg.hidden_size, cfg.num_layers, cfg.cell, cfg.dropout,
                   cfg.embed_dim)

    def encode(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) ids of any integer dtype -> (B, T, input_size) inputs."""
        if idx.dtype not in (torch.int32, torch.int64):
            idx = idx.int()
        if self.embedding is not None:
            return self.embedding(idx)
        return F.embedding(idx, self.one_hot)

    # The dtype the recurrent layers compute in, cast each step from the fp32 weights (None:
    # their own dtype). Set from the precision plan; not part of the state, so a checkpoint
    # is the same whatever precision wrote it.
    recurrent_dtype: torch.dtype | None = None

    def forward(self, idx: torch.Tensor, hidden: Hidden | None = None):
        x = self.encode(idx)  # (B, T, input_size)
        kind = x.device.type
        if self.recurrent_dtype is not None:
            with quiet_cast():
                out, hidden = run_cast(self.rnn, self.recurrent_dtype, x, hidden)  # (B, T, H)
            if not torch.is_autocast_enabled(kind):
                out = out.float()  # an fp32 head (under autocast, autocast casts it)
        elif torch.is_autocast_enabled(kind) and not recurrent_autocast(kind):
            # Autocast would run the recurrent kernel in another dtype than it was asked
            # for, or in none at all (precision.py): it stays in fp32, the head does not.
            with torch.autocast(kind, enabled=False):
                out, hidden = self.rnn(x, hidden)  # (B, T, H)
        else:
            out, hidden = self.rnn(x, hidden)
        return self.head(self.dropout(out)), hidden  # (B, T, V)

    def init_hidden(self, batch_size: int, device=None) -> Hidden:
        device = device or self.head.weight.device
        h = torch.zeros(self.num_layers, batch_size, self.hidden_size, device=device)
        return (h, h.clone()) if self.cell == "lstm" else h


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                  reduction: str = "mean") -> torch.Tensor:
    """Next-character cross-entropy in nats of logits (..., V) for targets (...) of any
    integer dtype, computed in fp32 whatever the logits' precision."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(),
                           targets.reshape(-1).long(), reduction=reduction)


def parameter_count(vocab_size: int, cfg: ModelConfig) -> int:
    """The parameters a CharRNN of this config has, without building it."""
    G, H, L = GATES[cfg.cell], cfg.hidden_size, cfg.num_layers
    first = cfg.embed_dim or vocab_size
    rnn = G * H * (first + H + 2) + (L - 1) * G * H * (2 * H + 2)
    return vocab_size * cfg.embed_dim + rnn + H * vocab_size + vocab_size


FLOAT_BYTES = 4  # weights, gradients, optimizer moments and activations are fp32


def model_bytes(vocab_size: int, cfg: ModelConfig) -> int:
    """Memory a CharRNN of this config takes: its parameters and, for one-hot input, the
    (V, V) identity table it looks inputs up in."""
    table = 0 if cfg.embed_dim else vocab_size * vocab_size
    return FLOAT_BYTES * (parameter_count(vocab_size, cfg) + table)


def describe_model(cfg) -> str:
    """'2x256 LSTM', with the embedding if any: a ModelConfig or a CharRNN."""
    return f"{cfg.num_layers}x{cfg.hidden_size} {cfg.cell.upper()}" + (
        f" (embedding {cfg.embed_dim})" if cfg.embed_dim else "")


def detach_hidden(hidden: Hidden) -> Hidden:
    """Cut the graph between chunks: gradients stop here (truncated BPTT)."""
    return map_hidden(torch.Tensor.detach, hidden)


def hidden_tensors(hidden: Hidden) -> list[torch.Tensor]:
    return list(hidden) if isinstance(hidden, tuple) else [hidden]


def hidden_from_tensors(tensors: list[torch.Tensor], cell: str) -> Hidden:
    return tuple(tensors) if cell == "lstm" else tensors[0]


def select_rows(hidden: Hidden, rows) -> Hidden:
    """The state of some batch rows (streams); hidden tensors are (layers, B, H)."""
    return map_hidden(lambda h: h[:, rows], hidden)
