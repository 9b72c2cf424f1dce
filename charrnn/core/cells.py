"""The recurrent cells and their state, as everything that runs one sees them.

    RNN_CLASSES["gru"]            # nn.GRU: the torch module of a cell name
    GATES["lstm"]                 # 4: gate blocks in each weight matrix
    map_hidden(fn, hidden)        # fn on h (GRU, RNN) or on each of (h, c) (LSTM)

A separate module from model.py because precision.py, which model.py imports, needs these
too.
"""

from __future__ import annotations

import torch
from torch import nn

Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

RNN_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def map_hidden(fn, hidden: Hidden) -> Hidden:
    """`fn` applied to each tensor of a state: (h, c) for an LSTM, h otherwise."""
    return tuple(fn(h) for h in hidden) if isinstance(hidden, tuple) else fn(hidden)


def first_tensor(hidden: Hidden) -> torch.Tensor:
    """h of a state (of an LSTM's (h, c), h)."""
    return hidden[0] if isinstance(hidden, tuple) else hidden
