"""Sampling: prime once through the fused RNN, then one character at a time, carrying state.

    model, vocab, options = model_from_checkpoint(load_checkpoint("runs/latest/best.pt"))
    sampler = Sampler(model, vocab, temperature=0.8, seed=1)
    for pieces in sampler.generate(500, prime="ROMEO:"):
        print(pieces[0], end="")

After the prime, each character is one step of the written-out model (stepper.py).
Characters are drawn with the Gumbel-max trick from noise drawn in blocks (`Picker`), so a
step never reads a value back to the host.
"""

from __future__ import annotations

from typing import Iterator

import torch

from ..core.device import check_fits
from ..core.errors import CharRNNError
from ..core.model import FLOAT_BYTES, GATES, CharRNN
from ..corpus.vocab import END, Vocab
from .stepper import ReferenceStepper, Stepper
from .stops import StopStrings


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


class Sampler:
    """Samples text from a model: the prime through the fused RNN once, then one step per
    character. Random numbers are drawn for a block of characters at a time; on CUDA the
    per-character step is replayed as a captured CUDA graph, since there a step is a few dozen
    tiny kernels and launching them costs more than running them."""

    PRIME_CHUNK = 4096  # characters of the prime per model call: bounded memory for any prime

    def __init__(self, model: CharRNN, vocab: Vocab, temperature: float = 1.0, top_k: int = 0,
                 seed: int | None = None, device="cpu", reference: bool = False,
                 cuda_graph: bool = True, stop_at_end: bool = False):
        """`stop_at_end`: end each sample where the model ends its document (its
        end-of-document mark, which a model trained on one text file does not have)."""
        check_settings(temperature=temperature, top_k=top_k, seed=seed)
        if stop_at_end and vocab.end is None:
            raise CharRNNError("--stop-at-end needs a model trained on a corpus of documents "
                               "(a directory, or --split-on): this one has no end-of-document "
                               "mark")
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
        B = num_samples
        self._check_memory(B)
        if flush_every is None:
            # Reading ids back to the host synchronises a GPU: do it in blocks there. On CPU,
            # 16 characters (a few ms) still look like a stream, and each yield and write
            # between steps slows the steps around it.
            flush_every = 64 if self.device.type == "cuda" else 16
        block = _block_size(B, len(self.vocab), length)
        flush_every = max(1, min(flush_every, block))
        loop = self._loop(prime, B, block)
        marked = self.vocab.end is not None
        stops = StopStrings((*stop, END) if marked and self.stop_at_end else stop, B)
        # The mark shows as a line break: the next document starts on a line of its own.
        shown_end = "" if self.stop_at_end else "\n"
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
                    pieces = stops.cut(["".join([chars[j] for j in row]) for row in rows])
                    yield [p.replace(END, shown_end) for p in pieces] if marked else pieces
                    shown = i + 1
                    if stops.all_ended:
                        return
            done += n

    def _check_memory(self, B: int) -> None:
        m, V = self.model, len(self.vocab)
        per_stream = m.num_layers * m.hidden_size * (GATES[m.cell] + 3) + 2 * V + 64
        check_fits(FLOAT_BYTES * B * per_stream, self.device, f"sampling {B:,} streams at once",
                   "ask for fewer --num-samples")

    def _loop(self, prime: str, B: int, block: int) -> "_Loop":
        """The per-character loop, started from the state the prime leaves."""
        loop = _Loop(self.model, B, block, self.temperature, self.top_k, self.reference,
                     on_device=self.use_graph or self.on_device)
        if self.use_graph:
            loop.capture()  # falls back to the eager loop where capture fails
        logits, hidden = self._prime(prime, B)
        loop.stepper.load(hidden)
        loop.stepper.logits.copy_(logits)
        return loop

    def _prime(self, prime: str, B: int):
        """The logits (B, V) after the prime and the state it leaves: the prime through the
        fused kernel, a chunk at a time."""
        if not prime and self.vocab.end is not None:
            prime = END  # start where documents start: after the end-of-document mark
        elif not prime:
            # Start where text often starts: after a newline, if the model knows one.
            prime = ("\n" if "\n" in self.vocab else self.vocab.chars[int(torch.randint(
                len(self.vocab), (1,), generator=self.generator, device=self.device))])
        ids = torch.tensor(self.vocab.encode(prime), device=self.device)
        hidden = None
        for start in range(0, len(ids), self.PRIME_CHUNK):
            chunk = ids[start:start + self.PRIME_CHUNK]
            logits, hidden = self.model(chunk[None, :].expand(B, -1), hidden)
        return logits[:, -1], hidden

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
