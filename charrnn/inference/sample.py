"""Sampling: prime once through the fused RNN, then one character at a time, carrying state.

    model, vocab, options = model_from_checkpoint(load_checkpoint("runs/latest/best.pt"))
    sampler = Sampler(model, vocab, temperature=0.8, seed=1)
    for pieces in sampler.generate(500, prime="ROMEO:"):
        print(pieces[0], end="")

A Sampler runs one request of B streams on a Stepper of its own (stepper.py); what decides
the text -- settings, prime, noise, draws, stops -- is the request's Generation (engine.py),
which serve's worker runs the same way with the rows of many requests in one Stepper.
Characters are drawn with the Gumbel-max trick from noise drawn in blocks (draws.py), so a
step never reads a value back to the host.
"""

from __future__ import annotations

from typing import Iterator

import torch

from ..core.device import check_fits
from ..core.model import FLOAT_BYTES, GATES, CharRNN
from ..corpus.vocab import Vocab
from .draws import Noise, Picker, pick  # noqa: F401  (pick: a public name)
from .engine import PRIME_CHUNK, Generation, Priming
from .settings import check_prime, check_settings, check_stop_at_end
from .stepper import ReferenceStepper, Stepper


class Sampler:
    """Samples text from a model: the prime through the fused RNN once, then one step per
    character. Random numbers are drawn for a block of characters at a time; on CUDA the
    per-character step is replayed as a captured CUDA graph, since there a step is a few dozen
    tiny kernels and launching them costs more than running them. One generator, seeded
    once, serves every call in turn (the novelty redraw's draws follow one another)."""

    PRIME_CHUNK = PRIME_CHUNK  # characters of the prime per model call

    def __init__(self, model: CharRNN, vocab: Vocab, temperature: float = 1.0, top_k: int = 0,
                 seed: int | None = None, device="cpu", reference: bool = False,
                 cuda_graph: bool = True, stop_at_end: bool = False):
        """`stop_at_end`: end each sample where the model ends its document (its
        end-of-document mark, which a model trained on one text file does not have)."""
        check_settings(temperature=temperature, top_k=top_k, seed=seed)
        if stop_at_end:
            check_stop_at_end(vocab)
        self.stop_at_end = stop_at_end
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
        self._check_memory(num_samples)
        gen = Generation(self.model, self.vocab, num_samples, length, self.temperature,
                         self.top_k, self.generator, prime, stop, self.stop_at_end,
                         prime_chunk=self.PRIME_CHUNK)
        if flush_every is None:
            # Reading ids back to the host synchronises a GPU: do it in blocks there. On CPU,
            # 16 characters (a few ms) still look like a stream, and each yield and write
            # between steps slows the steps around it.
            flush_every = 64 if self.device.type == "cuda" else 16
        flush_every = max(1, min(flush_every, gen.noise.block))
        loop = self._loop(gen)
        while not gen.done:
            yield from self._block(gen, loop, flush_every)

    def _block(self, gen: Generation, loop: "_Loop", flush_every: int) -> Iterator[list[str]]:
        """One block of noise's characters, their text yielded every `flush_every`."""
        n = min(gen.noise.block, gen.length - gen.made)
        first = gen.made == 0
        loop.begin_block()
        shown = 0
        for i in range(n):
            loop.next(i, first=first and i == 0)
            if i + 1 - shown == flush_every or i + 1 == n:
                yield gen.take_rows(loop.record[shown:i + 1].t().tolist())
                shown = i + 1
                if gen.done:
                    return

    def _check_memory(self, B: int) -> None:
        m, V = self.model, len(self.vocab)
        per_stream = m.num_layers * m.hidden_size * (GATES[m.cell] + 3) + 2 * V + 64
        check_fits(FLOAT_BYTES * B * per_stream, self.device, f"sampling {B:,} streams at once",
                   "ask for fewer --num-samples")

    def _loop(self, gen: Generation) -> "_Loop":
        """The per-character loop, started from the state the prime leaves."""
        loop = _Loop(self.model, gen.B, gen.noise.block, self.temperature, self.top_k,
                     self.reference, on_device=self.use_graph or self.on_device,
                     noise=gen.noise)
        if self.use_graph:
            loop.capture()  # falls back to the eager loop where capture fails
        logits, hidden = gen.priming.read()
        loop.stepper.load(hidden)
        loop.stepper.logits.copy_(logits)
        return loop

    def _prime(self, prime: str, B: int):
        """The logits (B, V) after `prime` (or the first-character rule's start) and the
        state it leaves, read as a generation reads it."""
        return Priming(self.model, self.vocab, prime, B, self.generator,
                       chunk=self.PRIME_CHUNK).read()

    def texts(self, length: int, prime: str = "", num_samples: int = 1, stop=(),
              bar=None) -> list[str]:
        """The B complete samples (prime excluded) as strings. `bar` (core/bars.py), if
        given, advances by the characters generated per stream."""
        parts = None  # made after generate has checked that B streams fit
        for pieces in self.generate(length, prime, num_samples, stop=stop):
            parts = parts or [[] for _ in pieces]
            for p, piece in zip(parts, pieces):
                p.append(piece)
            if bar is not None:
                bar.update(max(len(piece) for piece in pieces))
        return ["".join(p) for p in parts] if parts else [""] * num_samples


class _Loop:
    """The per-character work of sampling on fixed buffers: model step, draw, record.

    On CPU the position inside the block is a Python int and each draw writes its ids
    straight into the record. For a CUDA graph every address and index must be fixed, so
    there (`on_device=True`) the position lives in a device tensor and the ids in one buffer;
    `advance` then touches only tensors allocated here and is captured and replayed as it is.
    """

    def __init__(self, model: CharRNN, B: int, block: int, temperature: float, top_k: int,
                 reference: bool = False, on_device: bool = False, noise: Noise | None = None):
        """`noise`: the request's (engine.py); by default one of the loop's own."""
        device = model.head.weight.device
        V = model.vocab_size
        self.stepper = (ReferenceStepper if reference else Stepper)(model, B)
        self.picker = Picker(V, temperature, top_k)
        self.draws = noise or Noise(B, V, block, temperature, None, device)
        # At temperature 0 the picker reads no noise; the graph form still indexes a table.
        self.noise = (self.draws.table if self.draws.table is not None
                      else torch.zeros(block, B, V, device=device))
        self.record = torch.zeros(block, B, dtype=torch.long, device=device)
        self._noise_rows, self._record_rows = self.noise.unbind(0), self.record.unbind(0)
        self.on_device = on_device
        if on_device:
            self._noise = torch.empty(1, B, V, device=device)
            self.slot = torch.zeros(1, dtype=torch.long, device=device)
            self.advance = self._advance_on_device

    def begin_block(self) -> None:
        self.draws.fill()
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
