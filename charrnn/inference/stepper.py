"""One step of the model for B streams, written out: the per-character step of sampling.

    stepper = Stepper(model, batch_size=4)     # Stepper.supports(model) must hold
    stepper.load(hidden); stepper.ids.copy_(ids)
    logits = stepper.step()                    # (B, V), the state advanced in place

Calling nn.LSTM once per character pays its whole setup for a tiny (B, 1) input. `Stepper`
computes the same step as per-layer matrix products on the same weights: the one-hot (or
embedded) input of layer 0 is a row of a precomputed table input @ W_ih^T + biases, and the
gates are a handful of in-place element-wise ops on buffers allocated once. It gives the
logits of nn.LSTM/nn.GRU/nn.RNN to float rounding. `ReferenceStepper` is the plain
per-character model call with the same interface: checked against, and used for models the
written-out step does not cover.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.model import GATES, CharRNN, hidden_tensors


class Stepper:
    """One step of the model for B streams, on buffers allocated once.

    The state lives inside: `load(hidden)` sets it from an nn.RNN-style hidden, `step()` reads
    the ids in `self.ids` (B,) and writes the logits into `self.logits` (B, V), and `hidden()`
    gives the state back in nn.RNN form. The element-wise ops write into fixed tensors, so
    the same sequence of kernels can be captured as a CUDA graph.
    """

    @staticmethod
    def supports(model) -> bool:
        """Whether the hand-written step computes this model: a CharRNN whose recurrent
        layers are plain nn.LSTM / nn.GRU / nn.RNN (tanh) with biases, no projection, one
        direction. Any other model is sampled with the plain model call."""
        rnn, head = getattr(model, "rnn", None), getattr(model, "head", None)
        cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}.get(getattr(model, "cell", None))
        return (cls is not None and type(rnn) is cls and rnn.bias and not rnn.bidirectional
                and getattr(rnn, "proj_size", 0) == 0
                and getattr(rnn, "nonlinearity", "tanh") == "tanh"
                and type(head) is nn.Linear and head.bias is not None)

    def __init__(self, model: CharRNN, batch_size: int = 1):
        if not self.supports(model):
            raise ValueError("Stepper does not support this model; use ReferenceStepper")
        self.cell = model.cell
        rnn, H, L = model.rnn, model.hidden_size, model.num_layers
        B, V = batch_size, model.vocab_size
        self.H, self.num_layers, self.batch_size = H, L, B
        weight = model.head.weight
        kw = {"device": weight.device, "dtype": weight.dtype}
        G = GATES[self.cell]
        with torch.no_grad():
            inputs = (model.embedding.weight if model.embedding is not None
                      else model.one_hot)  # (V, input_size)
            # The h of every layer side by side, so that [h_{l-1}, h_l] -- layer l's input at
            # this step next to its own state from the last one -- is one contiguous slice.
            self.hcat = torch.zeros(B, L * H, **kw)
            self.c = torch.zeros(L, B, H, **kw) if self.cell == "lstm" else None
            self.ids = torch.zeros(B, dtype=torch.long, device=weight.device)
            self.logits = torch.zeros(B, V, **kw)
            g = self._gates = torch.empty(B, G * H, **kw)
            t = self._tmp = torch.empty(B, 3 * H if self.cell == "gru" else H, **kw)
            self.layers = [self._layer(rnn, layer, inputs) for layer in range(L)]
            self.head_w = model.head.weight.contiguous()
            self.head_b = model.head.bias.clone()
            self.onednn = B == 1 and weight.device.type == "cpu" and _onednn_matvec_works()
        # Views made once: slicing on every step costs as much as the small ops themselves.
        if self.cell == "lstm":
            self._ifo, self._cand = g[:, :3 * H], g[:, 3 * H:]
            self._i, self._f, self._o = g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H]
        elif self.cell == "gru":
            self._rz, self._r, self._z, self._n = g[:, :2 * H], g[:, :H], g[:, H:2 * H], g[:, 2 * H:]
            self._h_rz, self._h_n = t[:, :2 * H], t[:, 2 * H:]
        self._last = self.layers[-1]["h"]

    def _layer(self, rnn, layer: int, inputs: torch.Tensor) -> dict:
        """The weights of one layer, arranged for `step`, and views of its state."""
        H = self.H
        w_ih, w_hh, b_ih, b_hh = (getattr(rnn, f"{name}_l{layer}") for name in
                                  ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        if self.cell == "lstm":
            # Reorder gates (i, f, g, o) -> (i, f, o, g): one sigmoid covers 3H.
            order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H),
                               torch.arange(2 * H, 3 * H)]).to(w_ih.device)
            w_ih, w_hh, b_ih, b_hh = w_ih[order], w_hh[order], b_ih[order], b_hh[order]
        # The GRU's new gate uses r * (W_hn h + b_hn): its hidden bias stays apart.
        bias_in = b_ih if self.cell == "gru" else b_ih + b_hh
        entry = {"h": self.hcat[:, layer * H:(layer + 1) * H]}
        if layer == 0:
            # The one-hot (or embedded) input only selects a row of this table.
            entry["table"] = torch.addmm(bias_in, inputs, w_ih.t())  # (V, G*H)
        if self.cell == "gru":
            entry.update(w_hh=w_hh.contiguous(), b_hh=b_hh.clone())
            if layer > 0:
                entry.update(w_ih=w_ih.contiguous(), b_ih=b_ih.clone(),
                             h_prev=self.hcat[:, (layer - 1) * H:layer * H])
        elif layer == 0:
            entry["w_hh"] = w_hh.contiguous()
        else:
            # Input and recurrent products in one: [x, h] @ [W_ih; W_hh]^T.
            entry["w_cat"] = torch.cat([w_ih, w_hh], dim=1).contiguous()
            entry["bias"] = bias_in.clone()
            entry["xh"] = self.hcat[:, (layer - 1) * H:(layer + 1) * H]
        if self.c is not None:
            entry["c"] = self.c[layer]
        return entry

    def _affine(self, out, bias, weight, x):
        """out = bias + x @ weight^T; weight (out, in) as nn.Linear stores it, x and out (B, .)."""
        if self.batch_size > 1:
            torch.addmm(bias, x, weight.t(), out=out)
        elif self.onednn and weight.numel() >= _ONEDNN_MIN:
            out.copy_(_onednn_linear(x, weight, bias, "none", [], ""))
        else:
            # One stream: a matrix-vector product over the rows in memory order is markedly
            # faster on CPU than a (1, in) x (in, out) matrix product.
            torch.addmv(bias, weight, x[0], out=out[0])

    def step(self) -> torch.Tensor:
        """Advance every stream by the ids in `self.ids`; returns `self.logits`."""
        g, t = self._gates, self._tmp
        for layer, e in enumerate(self.layers):
            if layer == 0:
                torch.index_select(e["table"], 0, self.ids, out=g)
            if self.cell == "lstm":
                if layer == 0:
                    self._affine(g, g[0] if self.batch_size == 1 else g, e["w_hh"], e["h"])
                else:
                    self._affine(g, e["bias"], e["w_cat"], e["xh"])
                self._ifo.sigmoid_()
                self._cand.tanh_()
                e["c"].mul_(self._f).addcmul_(self._i, self._cand)
                torch.tanh(e["c"], out=t)
                torch.mul(self._o, t, out=e["h"])
            elif self.cell == "gru":
                if layer > 0:
                    self._affine(g, e["b_ih"], e["w_ih"], e["h_prev"])
                self._affine(t, e["b_hh"], e["w_hh"], e["h"])
                self._rz.add_(self._h_rz).sigmoid_()
                self._n.addcmul_(self._r, self._h_n).tanh_()
                e["h"].sub_(self._n).mul_(self._z).add_(self._n)  # (1 - z) * n + z * h
            else:
                if layer == 0:
                    self._affine(g, g[0] if self.batch_size == 1 else g, e["w_hh"], e["h"])
                else:
                    self._affine(g, e["bias"], e["w_cat"], e["xh"])
                torch.tanh(g, out=e["h"])
        self._affine(self.logits, self.head_b, self.head_w, self._last)
        return self.logits

    def load(self, hidden) -> None:
        """Set the state from an nn.RNN-style hidden: (layers, B, H), or a pair for LSTM."""
        tensors = hidden_tensors(hidden)
        L, B, H = self.num_layers, self.batch_size, self.H
        self.hcat.view(B, L, H).copy_(tensors[0].transpose(0, 1))
        if self.c is not None:
            self.c.copy_(tensors[1])

    def hidden(self):
        h = self.hcat.view(self.batch_size, self.num_layers, self.H).transpose(0, 1).contiguous()
        return (h, self.c.clone()) if self.c is not None else h


# One stream on CPU: oneDNN's matrix-vector product uses every core and wide vectors, where
# the BLAS one runs on one core; for the 4H x H blocks of a 512-wide LSTM it is about twice as
# fast. Its fixed cost per call is ~15 us, so small products (the head) stay with BLAS.
_ONEDNN_MIN = 1 << 17
_onednn_linear = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
_onednn_checked: bool | None = None


def _onednn_matvec_works() -> bool:
    """The oneDNN linear op is internal to PyTorch: use it only where it exists and agrees
    with the BLAS product."""
    global _onednn_checked
    if _onednn_checked is None:
        try:
            gen = torch.Generator().manual_seed(0)  # leaves the global random state alone
            w, x, b = (torch.randn(*shape, generator=gen) for shape in ((64, 32), (1, 32), (64,)))
            _onednn_checked = bool(torch.backends.mkldnn.is_available() and torch.allclose(
                _onednn_linear(x, w, b, "none", [], ""), torch.addmm(b, x, w.t()), atol=1e-4))
        except Exception:  # a build without it
            _onednn_checked = False
    return _onednn_checked


class ReferenceStepper:
    """The plain path, with the same interface: one call of the model per character."""

    def __init__(self, model: CharRNN, batch_size: int = 1):
        self.model = model
        p = model.head.weight
        self.ids = torch.zeros(batch_size, dtype=torch.long, device=p.device)
        self.logits = torch.empty(batch_size, model.vocab_size, device=p.device, dtype=p.dtype)
        self._hidden = None

    def step(self) -> torch.Tensor:
        logits, self._hidden = self.model(self.ids[:, None], self._hidden)
        self.logits.copy_(logits[:, -1])
        return self.logits

    def load(self, hidden) -> None:
        self._hidden = hidden

    def hidden(self):
        return self._hidden
