"""Sampling: prime once through the fused RNN, then one character at a time, carrying state.

    model, vocab, options = model_from_checkpoint(load_checkpoint("runs/latest/best.pt"))
    sampler = Sampler(model, vocab, temperature=0.8, seed=1)
    for pieces in sampler.generate(500, prime="ROMEO:"):
        print(pieces[0], end="")

Calling nn.LSTM once per character pays its whole setup for a tiny (B, 1) input. After the
prime, the step is written as per-layer matrix products on the same weights instead
(`Stepper`): the one-hot (or embedded) input of layer 0 is a row of a precomputed table
input @ W_ih^T + biases, and the gates are computed with a handful of fused element-wise ops.
It gives the logits of nn.LSTM/nn.GRU/nn.RNN to float rounding; `ReferenceStepper` is the
plain per-character model call, kept to check against.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

from .errors import CharRNNError
from .model import CharRNN, hidden_tensors
from .vocab import Vocab


class Stepper:
    """One step of the model for a batch of streams: ids (B,) + state -> logits (B, V)."""

    def __init__(self, model: CharRNN):
        self.cell = model.cell
        rnn, H = model.rnn, model.hidden_size
        self.num_layers = model.num_layers
        with torch.no_grad():
            inputs = (model.embedding.weight if model.embedding is not None
                      else model.one_hot)  # (V, input_size)
            self.layers = []
            for layer in range(model.num_layers):
                w_ih = getattr(rnn, f"weight_ih_l{layer}")
                w_hh = getattr(rnn, f"weight_hh_l{layer}")
                b_ih = getattr(rnn, f"bias_ih_l{layer}")
                b_hh = getattr(rnn, f"bias_hh_l{layer}")
                if self.cell == "lstm":
                    # Reorder gates (i, f, g, o) -> (i, f, o, g): one sigmoid covers 3H.
                    order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H),
                                       torch.arange(2 * H, 3 * H)]).to(w_ih.device)
                    w_ih, w_hh, b_ih, b_hh = w_ih[order], w_hh[order], b_ih[order], b_hh[order]
                if self.cell == "gru":
                    # The GRU's new-gate uses r * (W_hn h + b_hn): the hidden bias stays apart.
                    entry = {"w_hh": w_hh.contiguous(), "b_hh": b_hh.clone()}
                    bias_in = b_ih
                else:
                    entry = {"w_hh": w_hh.contiguous()}
                    bias_in = b_ih + b_hh
                if layer == 0:
                    entry["table"] = torch.addmm(bias_in, inputs, w_ih.t())  # (V, G*H)
                elif self.cell == "gru":
                    entry.update(w_ih=w_ih.contiguous(), b_ih=b_ih.clone())
                else:
                    # Input and recurrent products in one matmul: [x, h] @ [W_ih; W_hh]^T.
                    entry["w_cat"] = torch.cat([w_ih, w_hh], dim=1).contiguous()
                    entry["bias"] = bias_in.clone()
                self.layers.append(entry)
            self.head_w = model.head.weight.contiguous()
            self.head_b = model.head.bias.clone()
        self.H = H

    def __call__(self, ids: torch.Tensor, state: list) -> tuple[torch.Tensor, list]:
        """ids (B,); state is per layer (h, c) for LSTM, h otherwise, each (B, H)."""
        H, new_state = self.H, []
        x = None
        for layer, entry in enumerate(self.layers):
            if self.cell == "lstm":
                h, c = state[layer]
                if layer == 0:
                    gates = _affine(entry["table"][ids], h, entry["w_hh"])
                else:
                    gates = _affine(entry["bias"], torch.cat([x, h], 1), entry["w_cat"])
                sig = torch.sigmoid(gates[:, :3 * H])
                c = torch.addcmul(sig[:, H:2 * H] * c, sig[:, :H], torch.tanh(gates[:, 3 * H:]))
                h = sig[:, 2 * H:] * torch.tanh(c)
                new_state.append((h, c))
            elif self.cell == "gru":
                h = state[layer]
                gi = entry["table"][ids] if layer == 0 else _affine(entry["b_ih"], x, entry["w_ih"])
                gh = _affine(entry["b_hh"], h, entry["w_hh"])
                rz = torch.sigmoid(gi[:, :2 * H] + gh[:, :2 * H])
                n = torch.tanh(torch.addcmul(gi[:, 2 * H:], rz[:, :H], gh[:, 2 * H:]))
                h = torch.addcmul(n, rz[:, H:], h - n)  # (1 - z) * n + z * h
                new_state.append(h)
            else:
                h = state[layer]
                if layer == 0:
                    h = torch.tanh(_affine(entry["table"][ids], h, entry["w_hh"]))
                else:
                    h = torch.tanh(_affine(entry["bias"], torch.cat([x, h], 1), entry["w_cat"]))
                new_state.append(h)
            x = h
        return _affine(self.head_b, x, self.head_w), new_state

    # nn.RNN-style hidden (layers, B, H) <-> per-layer state
    def state_from_hidden(self, hidden) -> list:
        tensors = hidden_tensors(hidden)
        if self.cell == "lstm":
            return [(tensors[0][i], tensors[1][i]) for i in range(self.num_layers)]
        return [tensors[0][i] for i in range(self.num_layers)]

    def hidden_from_state(self, state: list):
        if self.cell == "lstm":
            return (torch.stack([h for h, _ in state]), torch.stack([c for _, c in state]))
        return torch.stack(state)


def _affine(bias: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """bias + x @ weight^T for x (B, in), weight (out, in) as nn.Linear stores it. For one
    stream a matrix-vector product over the rows in memory order is markedly faster on CPU
    than a (1, in) x (in, out) matrix product."""
    if x.shape[0] == 1:
        return torch.addmv(bias.reshape(-1), weight, x[0])[None]
    return torch.addmm(bias, x, weight.t())


class ReferenceStepper:
    """The plain path: one call of the model per character."""

    def __init__(self, model: CharRNN):
        self.model = model
        self.cell = model.cell

    def __call__(self, ids, hidden):
        logits, hidden = self.model(ids[:, None], hidden)
        return logits[:, -1], hidden

    def state_from_hidden(self, hidden):
        return hidden

    def hidden_from_state(self, state):
        return state


def pick(logits: torch.Tensor, temperature: float, top_k: int,
         generator: torch.Generator | None) -> torch.Tensor:
    """Next ids (B,) from logits (B, V): argmax at temperature 0, else a draw."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


class Sampler:
    def __init__(self, model: CharRNN, vocab: Vocab, temperature: float = 1.0, top_k: int = 0,
                 seed: int | None = None, device="cpu", reference: bool = False):
        if temperature < 0:
            raise CharRNNError(f"--temperature must be >= 0, got {temperature}")
        if top_k < 0:
            raise CharRNNError(f"--top-k must be >= 1 (or 0 for all), got {top_k}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.vocab = vocab
        self.temperature, self.top_k = temperature, top_k
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed if seed is not None else torch.seed())
        self.stepper = ReferenceStepper(self.model) if reference else Stepper(self.model)

    @torch.inference_mode()
    def generate(self, length: int, prime: str = "", num_samples: int = 1,
                 flush_every: int | None = None) -> Iterator[list[str]]:
        """Yield, every `flush_every` characters, the new text of each of the B streams."""
        if length < 0:
            raise CharRNNError(f"--length must be >= 0, got {length}")
        if num_samples < 1:
            raise CharRNNError(f"--num-samples must be >= 1, got {num_samples}")
        missing = self.vocab.missing(prime)
        if missing:
            shown = ", ".join(repr(c) for c in missing[:20])
            raise CharRNNError(f"the prime has characters the model does not know: {shown}")
        B = num_samples
        if flush_every is None:
            # Reading ids back to the host synchronises a GPU: do it in blocks there.
            flush_every = 64 if self.device.type == "cuda" else 1
        if not prime:
            # Start where text often starts: after a newline, if the model knows one.
            start = ("\n" if "\n" in self.vocab else
                     self.vocab.chars[int(torch.randint(len(self.vocab), (1,), generator=self.generator, device=self.device))])
            ids = torch.tensor([self.vocab.index[start]], device=self.device)
        else:
            ids = torch.tensor(self.vocab.encode(prime), device=self.device)
        # The whole prime goes through the fused kernel in one call.
        logits, hidden = self.model(ids[None, :].expand(B, -1), None)
        logits = logits[:, -1]
        state = self.stepper.state_from_hidden(hidden)
        out = torch.empty(B, flush_every, dtype=torch.long, device=self.device)
        chars = self.vocab.chars
        filled = 0
        for i in range(length):
            nxt = pick(logits, self.temperature, self.top_k, self.generator)
            out[:, filled] = nxt
            filled += 1
            if filled == flush_every or i == length - 1:
                rows = out[:, :filled].tolist()
                yield ["".join(chars[j] for j in row) for row in rows]
                filled = 0
            if i < length - 1:
                logits, state = self.stepper(nxt, state)


def sample_text(model: CharRNN, vocab: Vocab, length: int, prime: str = "", **kwargs) -> list[str]:
    """Convenience: the B complete samples (prime excluded) as strings."""
    num_samples = kwargs.pop("num_samples", 1)
    sampler = Sampler(model, vocab, **kwargs)
    parts = [[] for _ in range(num_samples)]
    for pieces in sampler.generate(length, prime, num_samples):
        for p, piece in zip(parts, pieces):
            p.append(piece)
    return ["".join(p) for p in parts]
