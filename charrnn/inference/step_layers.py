"""The layers of the written-out step (stepper.py): each cell's arithmetic as a fixed list of
kernel calls on tensors allocated once.

    products = Products("fp32")
    ops, table = gru_layer(weights, io, products)       # ops: zero-argument calls
    for op in ops: op()                                 # one step of this layer

Every call is prepared once with all its tensors bound (`functools.partial` of a torch
function with `out=`), so a step pays no slicing, no allocation and no Python beyond the
loop over the calls. At one stream the kernels are matrix-vector products and a few
element-wise ops on a few hundred floats: on CPU the time goes into streaming the weights
and into the fixed cost of each call, so the layout below serves both: weights stored
(in, out) and as few calls per layer as the algebra allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class LayerIO:
    """The tensors one layer reads and writes, views into the Stepper's state.

    h: this layer's state (B, H), updated in place. For layer 0, `inputs` (B, G*H) holds
    the rows of the input table the step has just looked up; for a later layer, `x` is
    the layer below's new h (B, H) and `xh` the same memory followed by h: [x, h] (B, 2H).
    c: an LSTM's cell state (B, H)."""

    h: torch.Tensor
    inputs: torch.Tensor | None = None
    x: torch.Tensor | None = None
    xh: torch.Tensor | None = None
    c: torch.Tensor | None = None


class Products:
    """Prepares the matrix products of a step: out = bias + x @ W^T as zero-argument calls.

    The weight is stored transposed, (in, out): a (1, in) x (in, out) product then runs as
    a sum of the weight's rows scaled by x, which on CPU streams memory markedly faster
    (about 1.4x for a 512-wide layer) than the dot products of an (out, in) matrix-vector
    product, and is no slower for a batch.

    "bf16" keeps the weights in bf16 and multiplies in bf16 (x cast into a bf16 buffer, the
    product rounded to bf16), then adds the bias in fp32: the state and the gates stay
    fp32. It pays where the CPU has bf16 units (avx512_bf16, AMX); elsewhere it is emulated.
    """

    def __init__(self, precision: str):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.dtype = torch.float32 if precision == "fp32" else torch.bfloat16

    def weight(self, w: torch.Tensor) -> torch.Tensor:
        """(out, in) as nn.Linear stores it -> (in, out) contiguous, in this precision."""
        return w.t().to(self.dtype).contiguous()

    def __call__(self, out, bias, x, weight_t) -> list:
        """The calls that write bias + x @ weight_t into out; weight_t from `weight`."""
        if self.dtype == torch.float32:
            return [partial(torch.addmm, bias, x, weight_t, out=out)]
        xb = torch.empty(x.shape, dtype=self.dtype, device=x.device)
        prod = torch.empty(out.shape, dtype=self.dtype, device=x.device)
        return [partial(xb.copy_, x), partial(torch.mm, xb, weight_t, out=prod),
                partial(torch.add, bias, prod, out=out)]


def input_table(inputs, w_ih, bias) -> torch.Tensor:
    """Layer 0's input product for every character at once: (V, G*H). The one-hot (or
    embedded) input of a step only selects rows of it."""
    return torch.addmm(bias, inputs, w_ih.t())


def gru_layer(w: dict, io: LayerIO, products: Products, inputs=None):
    """The GRU step: r, z = sigmoid(W_ir x + W_hr h + b_r...), n = tanh(W_in x + b_in +
    r * (W_hn h + b_hn)), h' = n + z * (h - n). Returns (calls, input table or None).

    r and z need only the sum of their input and hidden products: for a later layer,
    whose input x sits right before h in memory, that is one product of [x, h] with the
    two weights stacked. The new gate keeps its hidden product apart (r scales it)."""
    B, H = io.h.shape
    kw = {"dtype": io.h.dtype, "device": io.h.device}
    rz, gin, hn, n = (torch.empty(B, size, **kw) for size in (2 * H, H, H, H))
    r, z = rz[:, :H], rz[:, H:]
    b_rz = w["b_ih"][:2 * H] + w["b_hh"][:2 * H]
    w_hn, b_hn = products.weight(w["w_hh"][2 * H:]), w["b_hh"][2 * H:].clone()
    w_hrz = w["w_hh"][:2 * H]
    if inputs is not None:
        # Layer 0: the table row holds W_i x + b_i, with b_hr and b_hz folded in.
        table = input_table(inputs, w["w_ih"], torch.cat([b_rz, w["b_ih"][2 * H:]]))
        ops = products(rz, io.inputs[:, :2 * H], io.h, products.weight(w_hrz))
        gin = io.inputs[:, 2 * H:]
    else:
        table = None
        w_rz = products.weight(torch.cat([w["w_ih"][:2 * H], w_hrz], dim=1))
        ops = products(rz, b_rz, io.xh, w_rz)
        ops += products(gin, w["b_ih"][2 * H:].clone(), io.x, products.weight(w["w_ih"][2 * H:]))
    ops += [rz.sigmoid_, *products(hn, b_hn, io.h, w_hn),
            partial(torch.addcmul, gin, r, hn, out=n), n.tanh_,
            partial(torch.lerp, n, io.h, z, out=io.h)]  # n + z * (h - n)
    return ops, table


def lstm_layer(w: dict, io: LayerIO, products: Products, inputs=None):
    """The LSTM step, gates reordered (i, f, g, o) -> (i, f, o, g) so that one sigmoid
    covers 3H. Layer 0 adds W_hh h onto the looked-up table row in place; a later layer
    computes [x, h] @ [W_ih; W_hh]^T as one product. Returns (calls, input table or None)."""
    B, H = io.h.shape
    order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H),
                       torch.arange(2 * H, 3 * H)]).to(io.h.device)
    w_ih, w_hh = w["w_ih"][order], w["w_hh"][order]
    bias = (w["b_ih"] + w["b_hh"])[order]
    tanh_c = torch.empty(B, H, dtype=io.h.dtype, device=io.h.device)
    if inputs is not None:
        g, table = io.inputs, input_table(inputs, w_ih, bias)
        ops = products(g, g, io.h, products.weight(w_hh))
    else:
        g, table = torch.empty(B, 4 * H, dtype=io.h.dtype, device=io.h.device), None
        ops = products(g, bias, io.xh, products.weight(torch.cat([w_ih, w_hh], dim=1)))
    i, f, o, cand = (g[:, k * H:(k + 1) * H] for k in range(4))
    ops += [g[:, :3 * H].sigmoid_, cand.tanh_, partial(io.c.mul_, f),
            partial(io.c.addcmul_, i, cand), partial(torch.tanh, io.c, out=tanh_c),
            partial(torch.mul, o, tanh_c, out=io.h)]
    return ops, table


def rnn_layer(w: dict, io: LayerIO, products: Products, inputs=None):
    """The tanh RNN step: h' = tanh(W_ih x + W_hh h + b), laid out as the LSTM's."""
    bias = w["b_ih"] + w["b_hh"]
    if inputs is not None:
        g, table = io.inputs, input_table(inputs, w["w_ih"], bias)
        ops = products(g, g, io.h, products.weight(w["w_hh"]))
    else:
        g, table = torch.empty(io.h.shape, dtype=io.h.dtype, device=io.h.device), None
        ops = products(g, bias, io.xh, products.weight(torch.cat([w["w_ih"], w["w_hh"]], 1)))
    return ops + [partial(torch.tanh, g, out=io.h)], table


LAYERS = {"gru": gru_layer, "lstm": lstm_layer, "rnn": rnn_layer}
