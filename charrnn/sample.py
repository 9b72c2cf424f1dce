"""Sampling: prime once through the fused RNN, then one character at a time, carrying state.

    model, vocab, options = model_from_checkpoint(load_checkpoint("runs/latest/best.pt"))
    sampler = Sampler(model, vocab, temperature=0.8, seed=1)
    for pieces in sampler.generate(500, prime="ROMEO:"):
        print(pieces[0], end="")

Calling nn.LSTM once per character pays its whole setup for a tiny (B, 1) input. After the
prime, the step is written as per-layer matrix products on the same weights instead
(`Stepper`): the one-hot (or embedded) input of layer 0 is a row of a precomputed table
input @ W_ih^T + biases, and the gates are computed with a handful of in-place element-wise
ops on buffers allocated once. It gives the logits of nn.LSTM/nn.GRU/nn.RNN to float
rounding; `ReferenceStepper` is the plain per-character model call, kept to check against.
Characters are drawn with the Gumbel-max trick from noise drawn in blocks (`Picker`), so a
step never reads a value back to the host.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from .errors import CharRNNError
from .device import check_fits
from .model import GATES, CharRNN, hidden_tensors
from .vocab import Vocab


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
            self.layers = []
            for layer in range(L):
                w_ih = getattr(rnn, f"weight_ih_l{layer}")
                w_hh = getattr(rnn, f"weight_hh_l{layer}")
                b_ih = getattr(rnn, f"bias_ih_l{layer}")
                b_hh = getattr(rnn, f"bias_hh_l{layer}")
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
                self.layers.append(entry)
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


class Picker:
    """Draws the next ids (B,) from logits (B, V), writing them into a given tensor.

    A draw is argmax(logits / T + g) with g ~ Gumbel(0, 1) per entry (the Gumbel-max trick):
    it picks i with probability softmax(logits / T)_i, in two element-wise ops and without
    torch.multinomial's validity check, which reads a value back to the host (a
    synchronisation on GPU) on every call. The caller supplies g, so that the random numbers
    can be drawn in blocks, outside a CUDA graph.
    """

    def __init__(self, vocab_size: int, temperature: float, top_k: int):
        self.temperature = temperature
        self.top_k = top_k if top_k and top_k < vocab_size else 0

    def __call__(self, logits: torch.Tensor, gumbel: torch.Tensor,
                 out: torch.Tensor) -> torch.Tensor:
        """gumbel: Gumbel(0, 1) draws shaped like logits, overwritten; out: the ids (B,)."""
        if self.temperature == 0:
            return torch.argmax(logits, dim=-1, out=out)
        scores = gumbel.add_(logits, alpha=1.0 / self.temperature)
        if self.top_k:
            kth = torch.topk(logits, self.top_k, dim=-1).values[:, -1:]
            scores.masked_fill_(logits < kth, float("-inf"))
        return torch.argmax(scores, dim=-1, out=out)


def gumbel_(t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Fill t with Gumbel(0, 1) draws: -log(E), E ~ Exp(1)."""
    return t.exponential_(generator=generator).log_().neg_()


def pick(logits: torch.Tensor, temperature: float, top_k: int,
         generator: torch.Generator | None) -> torch.Tensor:
    """Next ids (B,) from logits (B, V): argmax at temperature 0, else a draw."""
    out = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
    noise = gumbel_(torch.empty(logits.shape, device=logits.device), generator)
    return Picker(logits.shape[-1], temperature, top_k)(logits.float(), noise, out)


MAX_TEMPERATURE = 1e3
MIN_TEMPERATURE = 1e-3  # below it logits / T overflows float32: use 0 (the argmax) instead


def check_settings(length: int = 0, temperature: float = 1.0, top_k: int = 0,
                   num_samples: int = 1, seed: int | None = None) -> None:
    """Refuse sampling settings out of range, naming the flag."""
    if seed is not None and not 0 <= seed < 2**64:
        raise CharRNNError(f"--seed must be in [0, 2^64), got {seed}")
    if length < 0:
        raise CharRNNError(f"--length must be >= 0, got {length}")
    if not (temperature == 0 or MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE):
        raise CharRNNError(f"--temperature must be 0 (always the likeliest character) or between "
                           f"{MIN_TEMPERATURE:g} and {MAX_TEMPERATURE:g}, got {temperature}")
    if top_k < 0:
        raise CharRNNError(f"--top-k must be >= 1 (or 0 for all), got {top_k}")
    if num_samples < 1:
        raise CharRNNError(f"--num-samples must be >= 1, got {num_samples}")


def check_prime(vocab: Vocab, prime: str, transliterated: bool = False) -> None:
    """Refuse a prime with characters the model does not know, with the way out."""
    missing = vocab.missing(prime)
    if not missing:
        return
    shown = ", ".join(repr(c) for c in missing[:20])
    ascii_model = all(c.isascii() for c in vocab.chars)
    hint = ("; the model knows only ASCII: add --unidecode to transliterate the prime"
            if ascii_model and not transliterated and not all(c.isascii() for c in missing)
            else "; change the prime")
    raise CharRNNError(f"the prime has characters the model does not know: {shown}{hint}")


class StopStrings:
    """Ends each stream right after the first stop string in its generated text.

    `cut(pieces)` takes the new text of each stream and returns it cut where a stream ends
    (and "" for streams already ended); a stop string may span pieces.
    """

    def __init__(self, stops, num_samples: int):
        self.stops = [s for s in stops if s]
        self.keep = max((len(s) for s in self.stops), default=1) - 1
        self.tails = [""] * num_samples  # the last few generated characters of each stream
        self.ended = [False] * num_samples

    @property
    def all_ended(self) -> bool:
        return bool(self.stops) and all(self.ended)

    def cut(self, pieces: list[str]) -> list[str]:
        if not self.stops:
            return pieces
        out = []
        for b, piece in enumerate(pieces):
            if self.ended[b]:
                out.append("")
                continue
            text = self.tails[b] + piece
            ends = [text.find(s) + len(s) for s in self.stops if s in text]
            if ends:
                self.ended[b] = True
                piece = piece[:min(ends) - len(self.tails[b])]
            self.tails[b] = text[len(text) - self.keep:] if self.keep else ""
            out.append(piece)
        return out


class Sampler:
    """Samples text from a model: the prime through the fused RNN once, then one step per
    character. Random numbers are drawn for a block of characters at a time; on CUDA the
    per-character step is replayed as a captured CUDA graph, since there a step is a few dozen
    tiny kernels and launching them costs more than running them."""

    PRIME_CHUNK = 4096  # characters of the prime per model call: bounded memory for any prime

    def __init__(self, model: CharRNN, vocab: Vocab, temperature: float = 1.0, top_k: int = 0,
                 seed: int | None = None, device="cpu", reference: bool = False,
                 cuda_graph: bool = True):
        check_settings(temperature=temperature, top_k=top_k, seed=seed)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.vocab = vocab
        self.temperature, self.top_k = temperature, top_k
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed if seed is not None else torch.seed())
        # Models the hand-written step does not cover take the plain model call.
        self.reference = reference or not Stepper.supports(self.model)
        self.use_graph = cuda_graph and self.device.type == "cuda" and not self.reference
        self.on_device = False  # the CUDA-graph form of the loop even without a graph (tests)

    @torch.inference_mode()
    def generate(self, length: int, prime: str = "", num_samples: int = 1,
                 flush_every: int | None = None, stop=()) -> Iterator[list[str]]:
        """Yield, every `flush_every` characters, the new text of each of the B streams.
        With `stop` strings, a stream ends right after the first one it generates (its
        later pieces are ""), and generation ends when every stream has."""
        check_settings(length=length, num_samples=num_samples)
        check_prime(self.vocab, prime)
        B, V = num_samples, len(self.vocab)
        m = self.model
        per_stream = m.num_layers * m.hidden_size * (GATES[m.cell] + 3) + 2 * V + 64
        check_fits(4 * B * per_stream, self.device, f"sampling {B:,} streams at once",
                   "ask for fewer --num-samples")
        if flush_every is None:
            # Reading ids back to the host synchronises a GPU: do it in blocks there. On CPU,
            # 16 characters (a few ms) still look like a stream, and each yield and write
            # between steps slows the steps around it.
            flush_every = 64 if self.device.type == "cuda" else 16
        block = _block_size(B, V, length)
        flush_every = max(1, min(flush_every, block))
        loop = _Loop(self.model, B, block, self.temperature, self.top_k, self.reference,
                     on_device=self.use_graph or self.on_device)
        if self.use_graph:
            loop.capture()  # falls back to the eager loop where capture fails
        logits, hidden = self._prime(prime, B)
        loop.stepper.load(hidden)
        loop.stepper.logits.copy_(logits)
        stops = StopStrings(stop, B)
        chars = self.vocab.chars
        done = 0
        while done < length and not stops.all_ended:
            n = min(block, length - done)
            loop.begin_block(self.generator)
            shown = 0
            for i in range(n):
                loop.next(i, first=done == 0 and i == 0)
                if i + 1 - shown == flush_every or i + 1 == n:
                    rows = loop.record[shown:i + 1].t().tolist()
                    yield stops.cut(["".join([chars[j] for j in row]) for row in rows])
                    shown = i + 1
                    if stops.all_ended:
                        return
            done += n

    def _prime(self, prime: str, B: int):
        """The logits (B, V) after the prime and the state it leaves: the prime through the
        fused kernel, a chunk at a time."""
        if not prime:
            # Start where text often starts: after a newline, if the model knows one.
            prime = ("\n" if "\n" in self.vocab else self.vocab.chars[int(torch.randint(
                len(self.vocab), (1,), generator=self.generator, device=self.device))])
        ids = torch.tensor(self.vocab.encode(prime), device=self.device)
        hidden = None
        for start in range(0, len(ids), self.PRIME_CHUNK):
            chunk = ids[start:start + self.PRIME_CHUNK]
            logits, hidden = self.model(chunk[None, :].expand(B, -1), hidden)
        return logits[:, -1], hidden

    def texts(self, length: int, prime: str = "", num_samples: int = 1, stop=()) -> list[str]:
        """The B complete samples (prime excluded) as strings."""
        parts = None  # made after generate has checked that B streams fit
        for pieces in self.generate(length, prime, num_samples, stop=stop):
            parts = parts or [[] for _ in pieces]
            for p, piece in zip(parts, pieces):
                p.append(piece)
        return ["".join(p) for p in parts] if parts else [""] * num_samples


def _block_size(B: int, V: int, length: int) -> int:
    """Characters per block of random numbers: 64, fewer when B x V is large."""
    return max(1, min(64, length, (1 << 22) // (B * V)))


class _Loop:
    """The per-character work of sampling on fixed buffers: model step, draw, record.

    On CPU the position inside the block is a Python int and each draw writes its ids
    straight into the record. For a CUDA graph every address and index must be fixed, so
    there (`on_device=True`) the position lives in a device tensor and the ids in one buffer;
    `advance` then touches only tensors allocated here and is captured and replayed as it is.
    """

    def __init__(self, model: CharRNN, B: int, block: int, temperature: float, top_k: int,
                 reference: bool = False, on_device: bool = False):
        device = model.head.weight.device
        V = model.vocab_size
        self.stepper = (ReferenceStepper if reference else Stepper)(model, B)
        self.picker = Picker(V, temperature, top_k)
        self.sampling = temperature > 0
        self.noise = torch.zeros(block, B, V, device=device)
        self.record = torch.zeros(block, B, dtype=torch.long, device=device)
        self._noise_rows, self._record_rows = self.noise.unbind(0), self.record.unbind(0)
        self.on_device = on_device
        if on_device:
            self._noise = torch.empty(1, B, V, device=device)
            self.slot = torch.zeros(1, dtype=torch.long, device=device)
            self.advance = self._advance_on_device

    def begin_block(self, generator: torch.Generator) -> None:
        if self.sampling:
            gumbel_(self.noise, generator)
        if self.on_device:
            self.slot.zero_()

    def next(self, k: int, first: bool) -> None:
        """The k-th character of the block; the first of all follows from the prime's logits."""
        if self.on_device:
            self._draw_on_device() if first else self.advance()
            return
        if not first:
            self.stepper.step()
        self.stepper.ids = self.picker(self.stepper.logits, self._noise_rows[k],
                                       self._record_rows[k])

    def _draw_on_device(self) -> None:
        torch.index_select(self.noise, 0, self.slot, out=self._noise)
        self.picker(self.stepper.logits, self._noise[0], self.stepper.ids)
        self.record.index_copy_(0, self.slot, self.stepper.ids[None])
        self.slot.add_(1)

    def _advance_on_device(self) -> None:
        self.stepper.step()
        self._draw_on_device()

    def capture(self) -> bool:
        """Replace `advance` by the replay of a CUDA graph of it; False if that fails."""
        try:
            device = self.record.device
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):  # warm up (cuBLAS handles, workspaces) off-graph
                for _ in range(2):
                    self.slot.zero_()
                    self._advance_on_device()
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._advance_on_device()
        except Exception:  # an older driver, a build without graphs: run eagerly
            return False
        # The warm-up changed no state that matters: the sampler loads the prime's state,
        # logits, noise and block position after this.
        self.graph = graph
        self.advance = graph.replay
        return True


def sample_text(model: CharRNN, vocab: Vocab, length: int, prime: str = "",
                num_samples: int = 1, stop=(), **kwargs) -> list[str]:
    """Convenience: the B complete samples (prime excluded) as strings."""
    return Sampler(model, vocab, **kwargs).texts(length, prime, num_samples, stop)
