"""Every cell of every layer, step by step, from the weights of the model's nn.LSTM / nn.GRU
/ nn.RNN: the fused kernels return only the top layer's outputs and no gates, and the
gates are what saturation is measured on (tests check this against the fused module).

    cells = Cells(model)
    for chunk in cells.stream(ids, batch_size=32, seq_len=64):
        chunk.values    # (B, T, C) every cell: for each layer, (c then) h, H units each
        chunk.position  # (B, T) where each character is in the text, -1 for padding
        chunk.gates     # {(layer, "forget"): (B, T, H), ...}

The text is cut into B contiguous streams, each starting from a zero state (as `eval`
does without its burn-in): B cold starts in a long text change the sums negligibly, and
a batch of streams is what makes the Python loop over steps affordable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.model import CharRNN

# PyTorch's gate order in weight_ih_l{k} / weight_hh_l{k}; the activations a gate goes
# through. "cell" (LSTM) and "new" (GRU) are tanh candidates, not gates: not saturation.
GATE_NAMES = {"lstm": ("input", "forget", "cell", "output"), "gru": ("reset", "update", "new"),
              "rnn": ()}
SATURATING = {"lstm": ("input", "forget", "output"), "gru": ("reset", "update"), "rnn": ()}


def states_of(cell: str) -> tuple[str, ...]:
    """The states recorded per layer, in the order they sit in the cell axis."""
    return ("c", "h") if cell == "lstm" else ("h",)


@dataclass
class Chunk:
    values: torch.Tensor  # (B, T, C)
    position: torch.Tensor  # (B, T) int64, -1 past the end of the text
    gates: dict[tuple[int, str], torch.Tensor]  # (B, T, H) per layer and saturating gate


class Cells:
    """Runs a CharRNN's recurrent layers one step at a time, keeping every state."""

    def __init__(self, model: CharRNN):
        self.model = model.eval()
        self.cell, self.H, self.L = model.cell, model.hidden_size, model.num_layers
        self.states = states_of(self.cell)
        self.count = self.L * len(self.states) * self.H
        rnn = model.rnn
        self.relu = getattr(rnn, "nonlinearity", "tanh") == "relu"
        self.weights = [tuple(getattr(rnn, f"{name}_l{k}").detach().float()
                              for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                        for k in range(self.L)]

    def name(self, index: int) -> tuple[int, str, int]:
        """Cell index -> (layer from 1, state, unit)."""
        block, unit = divmod(index, self.H)
        layer, state = divmod(block, len(self.states))
        return layer + 1, self.states[state], unit

    def index(self, layer: int, state: str, unit: int) -> int:
        return ((layer - 1) * len(self.states) + self.states.index(state)) * self.H + unit

    @torch.no_grad()
    def run(self, idx: torch.Tensor, hidden: list | None = None):
        """idx (B, T) -> (values (B, T, C), gates, hidden): the hidden state carried on is
        a list per layer of (h, c) or (h,)."""
        x = self.model.encode(idx).float()  # (B, T, input_size)
        B = idx.size(0)
        zero = torch.zeros(B, self.H, device=x.device)
        hidden = hidden or [(zero, zero) if self.cell == "lstm" else (zero,)] * self.L
        values, gates, carried = [], {}, []
        for layer, w in enumerate(self.weights):
            outs, layer_gates, state = self._layer(x, hidden[layer], w)
            values.extend(outs)  # (B, T, H) each: c then h, or h
            gates.update({(layer + 1, g): v for g, v in layer_gates.items()})
            carried.append(state)
            x = outs[-1]  # h feeds the next layer (dropout is off in eval)
        return torch.cat(values, dim=2), gates, carried

    def _layer(self, x, state, w):
        """One layer over all T steps; the input projection is done for all steps at once."""
        w_ih, w_hh, b_ih, b_hh = w
        pre = torch.addmm(b_ih, x.flatten(0, 1), w_ih.t()).view(x.size(0), x.size(1), -1)
        step = {"lstm": self._lstm, "gru": self._gru, "rnn": self._rnn}[self.cell]
        B, T, H = x.size(0), x.size(1), self.H
        hs = torch.empty(B, T, H, device=x.device)
        cs = torch.empty_like(hs) if self.cell == "lstm" else None
        names = SATURATING[self.cell]
        gate_values = {g: torch.empty_like(hs) for g in names}
        for t in range(T):
            state, g = step(pre[:, t], state, w_hh, b_hh)
            hs[:, t] = state[0]
            if cs is not None:
                cs[:, t] = state[1]
            for name in names:
                gate_values[name][:, t] = g[name]
        return ([cs, hs] if cs is not None else [hs]), gate_values, state

    def _lstm(self, pre, state, w_hh, b_hh):
        h, c = state
        i, f, g, o = torch.addmm(b_hh, h, w_hh.t()).add_(pre).chunk(4, dim=1)  # (B, H) each
        i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
        c = f * c + i * g
        return (o * c.tanh(), c), {"input": i, "forget": f, "output": o}

    def _gru(self, pre, state, w_hh, b_hh):
        (h,) = state
        xr, xz, xn = pre.chunk(3, dim=1)
        hr, hz, hn = torch.addmm(b_hh, h, w_hh.t()).chunk(3, dim=1)
        r, z = (xr + hr).sigmoid(), (xz + hz).sigmoid()
        n = (xn + r * hn).tanh()
        return ((1 - z) * n + z * h,), {"reset": r, "update": z}

    def _rnn(self, pre, state, w_hh, b_hh):
        a = torch.addmm(b_hh, state[0], w_hh.t()).add_(pre)
        return (a.relu() if self.relu else a.tanh(),), {}

    def stream(self, ids: np.ndarray, batch_size: int = 32, seq_len: int = 64,
               device: str | torch.device = "cpu"):
        """Chunks over the whole text, cut into `batch_size` contiguous streams."""
        n = len(ids)
        B = max(1, min(batch_size, n))
        length = -(-n // B)  # ceil: the last stream is padded past the end
        position = torch.arange(B * length).view(B, length)
        idx = torch.zeros(B * length, dtype=torch.int64)
        idx[:n] = torch.as_tensor(np.asarray(ids, dtype=np.int64))
        idx = idx.view(B, length)
        position[position >= n] = -1
        self.model.to(device)
        self.weights = [tuple(t.to(device) for t in w) for w in self.weights]
        hidden = None
        for start in range(0, length, seq_len):
            values, gates, hidden = self.run(idx[:, start:start + seq_len].to(device), hidden)
            yield Chunk(values, position[:, start:start + seq_len], gates)

    def excerpt(self, ids: np.ndarray, start: int, length: int, cells: list[int],
                burn_in: int = 512, device="cpu") -> np.ndarray:
        """(length, len(cells)) values of some cells over ids[start:start+length], read
        with the `burn_in` characters before it first, as one stream."""
        begin = max(0, start - burn_in)
        idx = torch.as_tensor(np.asarray(ids[begin:start + length], dtype=np.int64))[None]
        out, hidden = [], None
        for at in range(0, idx.size(1), 256):
            values, _, hidden = self.run(idx[:, at:at + 256].to(device), hidden)
            out.append(values[0][:, cells].cpu())
        return torch.cat(out)[start - begin:].numpy()
