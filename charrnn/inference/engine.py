"""One request's generation, the same for every client: `charrnn sample`, serve, redraw.

    gen = Generation(model, vocab, B, length, temperature, top_k, generator, prime, stops)
    while not gen.priming.chunk(): pass        # the prime, a chunk per call
    ...                                         # a step gives logits (B, V) for the B rows
    gen.picker(logits, gen.noise.next(), ids)   # one character per stream
    pieces = gen.take(ids.tolist(), list(range(B)))  # each stream's new text, cut at stops

A Generation holds what decides a request's text: its settings (checked here), its
generator, the first-character rule, the prime read in PRIME_CHUNK pieces with B rows at
once, the noise drawn in blocks (draws.py), the Picker, and the stop strings. Who runs the
steps -- Sampler (sample.py) with a Stepper of its own, or serve's worker with the rows of
many requests in one Stepper (batch.py) -- changes none of this, so a seed gives the same
text in both (up to how a batched matrix product rounds in the last bits: a request alone
is run exactly as `charrnn sample` runs it).
"""

from __future__ import annotations

import torch

from ..core.model import CharRNN
from ..corpus.vocab import END, Vocab
from .draws import Noise, Picker
from .settings import check_known, check_settings, check_stop_at_end
from .stops import StopStrings

PRIME_CHUNK = 4096  # characters of the prime per model call: bounded memory for any prime


def start_text(vocab: Vocab, prime: str, generator: torch.Generator, device) -> str:
    """What the model reads first: the prime, or with none, where text starts -- after the
    end-of-document mark if the model has one, else after a newline, else after a random
    character (drawn from `generator`)."""
    if prime:
        return prime
    if vocab.end is not None:
        return END
    if "\n" in vocab:
        return "\n"
    return vocab.chars[int(torch.randint(len(vocab), (1,), generator=generator,
                                         device=device))]


class Priming:
    """The prime through the fused RNN, `chunk` characters per call, B rows at once; then
    `logits` (B, V), for the first draw, and `hidden`, the state it leaves."""

    def __init__(self, model: CharRNN, vocab: Vocab, prime: str, B: int,
                 generator: torch.Generator, hidden=None, chunk: int = PRIME_CHUNK):
        self.model, self.vocab, self.prime, self.B = model, vocab, prime, B
        self.generator, self.hidden, self.size = generator, hidden, chunk
        self.device = model.head.weight.device
        self.ids: torch.Tensor | None = None  # made at the first chunk, on the model's thread
        self.at = 0
        self.logits: torch.Tensor | None = None

    def chunk(self) -> bool:
        """One chunk of the prime; True when all of it is read."""
        if self.ids is None:
            text = start_text(self.vocab, self.prime, self.generator, self.device)
            self.ids = torch.tensor(self.vocab.encode(text), device=self.device)
        chunk = self.ids[self.at:self.at + self.size]
        logits, self.hidden = self.model(chunk[None, :].expand(self.B, -1), self.hidden)
        self.at += self.size
        if self.at < len(self.ids):
            return False
        self.logits = logits[:, -1]
        return True

    def read(self):
        """The whole prime: (logits (B, V), hidden)."""
        while not self.chunk():
            pass
        return self.logits, self.hidden

    def hand_over(self):
        """(logits, hidden) to whoever steps on from them, forgotten here."""
        state, self.logits, self.hidden = (self.logits, self.hidden), None, None
        return state


class Pieces:
    """Each stream's text from its ids: cut right after its first stop string, and the
    end-of-document mark shown as a line break -- or, with `stop_at_end`, ending the stream
    like a stop string and dropped."""

    def __init__(self, vocab: Vocab, stops, B: int, stop_at_end: bool = False):
        marked = vocab.end is not None
        self.stops = StopStrings((*stops, END) if marked and stop_at_end else stops, B)
        self.B, self.chars = B, vocab.chars
        self.end_shown = "" if stop_at_end else "\n"
        self.marked = marked
        # Without stop strings, a character is its shown text: one lookup.
        self.shown = vocab.shown_chars  # used only without stops, so never with stop_at_end

    def of_rows(self, rows: list[list[int]]) -> list[str]:
        """The new text of each of the B streams from its ids (several characters each)."""
        if not self.stops.stops:
            return ["".join([self.shown[i] for i in row]) for row in rows]
        return self._cut(["".join([self.chars[i] for i in row]) for row in rows])

    def of_step(self, ids: list[int], kept: list[int]) -> list[str]:
        """The new text of each of the B streams from one character of each kept stream."""
        if not self.stops.stops and len(ids) == self.B:
            return [self.shown[i] for i in ids]
        pieces = [""] * self.B
        for r, i in zip(kept, ids):
            pieces[r] = self.chars[i]
        return self._cut(pieces)

    def _cut(self, texts: list[str]) -> list[str]:
        pieces = self.stops.cut(texts)
        return [p.replace(END, self.end_shown) for p in pieces] if self.marked else pieces


class Generation:
    """One request: B streams of at most `length` characters after one prime, drawn with
    `generator`. `hidden`: a state to read the prime from (a session's), else the start."""

    def __init__(self, model: CharRNN, vocab: Vocab, B: int, length: int,
                 temperature: float = 1.0, top_k: int = 0,
                 generator: torch.Generator | None = None, prime: str = "", stops=(),
                 stop_at_end: bool = False, hidden=None, prime_chunk: int = PRIME_CHUNK):
        check_settings(length, temperature, top_k, B)
        if stop_at_end:
            check_stop_at_end(vocab)
        check_known(vocab, prime, "prime")
        for stop in stops:
            check_known(vocab, stop, "stop")
        V, device = len(vocab), model.head.weight.device
        generator = generator or torch.Generator(device=device)
        self.B, self.length = B, length
        self.priming = Priming(model, vocab, prime, B, generator, hidden, prime_chunk)
        self.noise = Noise(B, V, length, temperature, generator, device)
        self.picker = Picker(V, temperature, top_k)
        self.pieces = Pieces(vocab, stops, B, stop_at_end)
        self.made = 0  # characters drawn per stream so far

    @property
    def ended(self) -> list[bool]:
        """Per stream: whether it has generated a stop string."""
        return self.pieces.stops.ended

    def ended_any(self, kept: list[int]) -> bool:
        """Whether one of the streams `kept` has stopped (cheap without stop strings)."""
        ended = self.pieces.stops.ended
        return bool(self.pieces.stops.stops) and any(ended[s] for s in kept)

    @property
    def done(self) -> bool:
        return self.made >= self.length or self.pieces.stops.all_ended

    def take_rows(self, rows: list[list[int]]) -> list[str]:
        """Several characters of each of the B streams (a row each); their new text."""
        self.made += len(rows[0])
        return self.pieces.of_rows(rows)

    def take(self, ids: list[int], kept: list[int]) -> list[str]:
        """The character drawn for each kept stream; each of the B streams' new text."""
        self.made += 1
        return self.pieces.of_step(ids, kept)
