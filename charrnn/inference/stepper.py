"""One step of the model for B streams, written out: the per-character step of sampling.

    stepper = Stepper(model, batch_size=4)     # Stepper.supports(model) must hold
    stepper.load(hidden); stepper.ids.copy_(ids)
    logits = stepper.step()                    # (B, V), the state advanced in place

Calling nn.LSTM once per character pays its whole setup for a tiny (B, 1) input. `Stepper`
computes the same step as per-layer matrix products on the same weights: the one-hot (or
embedded) input of layer 0 is a row of a precomputed table input @ W_ih^T + biases, and the
gates are a handful of in-place element-wise ops on buffers allocated once. The whole step
is a fixed list of prepared kernel calls (step_layers.py). It gives the logits of
nn.LSTM/nn.GRU/nn.RNN to float rounding. `ReferenceStepper` is the plain per-character model
call with the same interface: checked against, and used for models the written-out step
does not cover.

`Stepper(model, B, precision="bf16")` keeps the weights in bf16 and multiplies in bf16,
with the state, the gates and the logits in fp32: for batches on a CPU with bf16 units
(avx512_bf16, AMX; `core.precision.native_bf16`). Its logits differ from fp32 by the
rounding of the weights (about 1e-2 relative); elsewhere bf16 is emulated and slower.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.model import GATES, CharRNN, hidden_tensors
from .step_layers import LAYERS, LayerIO, Products


class Stepper:
    """One step of the model for B streams, on buffers allocated once.

    The state lives inside: `load(hidden)` sets it from an nn.RNN-style hidden, `step()` reads
    the ids in `self.ids` (B,) and writes the logits into `self.logits` (B, V), and `hidden()`
    gives the state back in nn.RNN form. Every kernel writes into fixed tensors, so the same
    sequence of kernels can be captured as a CUDA graph.
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

    def __init__(self, model: CharRNN, batch_size: int = 1, precision: str = "fp32"):
        """`precision`: "fp32", or "bf16" for bf16 weights and products (module docstring)."""
        if not self.supports(model):
            raise ValueError("Stepper does not support this model; use ReferenceStepper")
        self.cell, self.precision = model.cell, precision
        H, L, B, V = model.hidden_size, model.num_layers, batch_size, model.vocab_size
        self.H, self.num_layers, self.batch_size = H, L, B
        weight = model.head.weight
        kw = {"device": weight.device, "dtype": weight.dtype}
        products = Products(precision)
        with torch.no_grad():
            # The h of every layer side by side, so that [h_{l-1}, h_l] -- layer l's input at
            # this step next to its own state from the last one -- is one contiguous slice.
            self.hcat = torch.zeros(B, L * H, **kw)
            self.c = torch.zeros(L, B, H, **kw) if self.cell == "lstm" else None
            self.ids = torch.zeros(B, dtype=torch.long, device=weight.device)
            self.logits = torch.zeros(B, V, **kw)
            self._inputs = torch.empty(B, GATES[self.cell] * H, **kw)  # layer 0's table rows
            self._ops = []
            for layer in range(L):
                ops, table = self._layer(model, layer, products)
                self._ops += ops
                if layer == 0:
                    self._table = table  # (V, G*H)
            self._ops += products(self.logits, model.head.bias.clone(),
                                  self.hcat[:, (L - 1) * H:], products.weight(weight))

    def _layer(self, model: CharRNN, layer: int, products: Products):
        """The calls of one layer's step, and layer 0's input table."""
        H, rnn = self.H, model.rnn
        weights = {short: getattr(rnn, f"{long}_l{layer}").detach() for short, long in
                   (("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"),
                    ("b_hh", "bias_hh"))}
        io = LayerIO(h=self.hcat[:, layer * H:(layer + 1) * H],
                     inputs=self._inputs if layer == 0 else None,
                     x=self.hcat[:, (layer - 1) * H:layer * H] if layer else None,
                     xh=self.hcat[:, (layer - 1) * H:(layer + 1) * H] if layer else None,
                     c=self.c[layer] if self.c is not None else None)
        inputs = None
        if layer == 0:  # the one-hot (or embedded) input, (V, input_size)
            inputs = (model.embedding.weight if model.embedding is not None
                      else model.one_hot).detach()
        return LAYERS[self.cell](weights, io, products, inputs)

    def step(self) -> torch.Tensor:
        """Advance every stream by the ids in `self.ids`; returns `self.logits`."""
        # `ids` is read here, not bound into a call: the sampler may hand over a new tensor.
        torch.index_select(self._table, 0, self.ids, out=self._inputs)
        for op in self._ops:
            op()
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
