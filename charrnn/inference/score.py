"""Scoring text with a trained model: nats and bits per character, perplexity, and dynamic
evaluation.

    model, vocab, options = model_from_checkpoint(load_checkpoint("runs/latest/best.pt"))
    ids, skipped = read_ids(open("text.txt", "rb"), "text.txt", options, vocab)
    score = score_ids(model, ids, batch_size=32, seq_len=64, device="cpu")
    print(score.bpc, score.perplexity)

The text goes through the checkpoint's own text options, as the training text did. Static
scoring is `evaluate.evaluate`: the text cut into B streams, each run with its carried
state after a burn-in on the text before it, every next-character prediction scored once
with the same context whatever B is. Dynamic evaluation (Krause et al.,
2018) reads the text in order and, after scoring each chunk, takes a gradient step on it,
so the model adapts to the text as it reads; it works on a copy of the model.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import BinaryIO

import numpy as np
import torch

from ..core.errors import DataError
from ..core.model import CharRNN, cross_entropy, detach_hidden
from ..core.units import LN2
from ..corpus.streams import as_index
from ..corpus.text import TextOptions, code_point_chunks
from ..corpus.vocab import Vocab, unknown_characters
from .evaluate import CONTEXT, eval_streams, evaluate

DYNAMIC_LR = 0.1  # the best measured on tiny Shakespeare (docs/benchmarks.md, row 11)


@dataclass
class Score:
    name: str
    chars: int  # next-character predictions scored
    nats: float  # mean cross-entropy per character, natural log
    seconds: float
    skipped: int = 0  # characters outside the vocabulary, left out (--unknown skip)
    streams: int = 1  # the streams the text was cut into (evaluate.eval_streams)

    @property
    def bpc(self) -> float:
        return self.nats / LN2

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats) if self.nats < 700 else math.inf  # exp overflows past ~709

    def to_dict(self) -> dict:
        return {**asdict(self), "bpc": self.bpc, "perplexity": self.perplexity}

    def line(self) -> str:
        return (f"{self.chars:,} characters: {self.nats:.4f} nats/char, {self.bpc:.4f} bits/char,"
                f" perplexity {self.perplexity:.3f}, {self.seconds:.1f} s"
                + (f" ({self.skipped:,} characters outside the vocabulary skipped)"
                   if self.skipped else ""))


def total(name: str, scores: list[Score]) -> Score:
    """The scores of several texts as one: predictions pooled."""
    chars = sum(s.chars for s in scores)
    return Score(name, chars, sum(s.nats * s.chars for s in scores) / chars,
                 sum(s.seconds for s in scores), sum(s.skipped for s in scores),
                 sum(s.streams for s in scores))


def read_ids(raw: BinaryIO, name: str, options: TextOptions, vocab: Vocab,
             skip_unknown: bool = False) -> tuple[np.ndarray, int]:
    """The ids of a text read through `options`: (ids, characters skipped). A character
    outside the vocabulary is an error naming those of the first chunk that has any (an
    endless input fails at once), unless `skip_unknown`."""
    table = vocab.lookup_table(unk=-1)
    parts, skipped = [], 0
    for cps in code_point_chunks(raw, name, options):
        ids = (table[:256] if cps.dtype == np.uint8 else table)[cps]
        bad = ids < 0
        if bad.any():
            if not skip_unknown:
                unknown = [chr(c) for c in dict.fromkeys(cps[bad].tolist())]
                raise DataError(unknown_characters(name, unknown) + "; pass --unknown skip "
                                "to leave them out of the score")
            skipped += int(bad.sum())
            ids = ids[~bad]
        parts.append(ids.astype(vocab.dtype))
    ids = np.concatenate(parts) if parts else np.zeros(0, dtype=vocab.dtype)
    if len(ids) < 2:
        raise DataError(f"{name}: nothing to score (fewer than 2 known characters)")
    return ids, skipped


def score_ids(model: CharRNN, ids: np.ndarray, batch_size: int, seq_len: int, device,
              name: str = "", skipped: int = 0, context: int = CONTEXT, bar=None) -> Score:
    """Static scoring: every prediction once, with carried state and at least `context`
    characters of context, in up to `batch_size` streams (evaluate.py)."""
    started = time.perf_counter()
    nats = evaluate(model.to(device), ids, batch_size, seq_len, device, context=context,
                    bar=bar)
    return Score(name, len(ids) - 1, nats, time.perf_counter() - started, skipped,
                 eval_streams(len(ids), batch_size, context))


def dynamic_score(model: CharRNN, ids: np.ndarray, seq_len: int, device, lr: float = DYNAMIC_LR,
                  name: str = "", skipped: int = 0, bar=None) -> Score:
    """Dynamic evaluation: the text in order, one stream; each chunk of seq_len predictions
    is scored, then the model takes one SGD step on that chunk's loss. The weights adapt to
    the text; `model` itself is left as it was (a copy adapts). A rate so high that the
    loss runs away (past three times that of a uniform guess) is an error naming the
    character where it happened."""
    started = time.perf_counter()
    device = torch.device(device)
    adapted = _adaptable_copy(model, device)
    optimizer = torch.optim.SGD(adapted.parameters(), lr=lr)
    text = as_index(np.ascontiguousarray(ids), device).to(device)
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    first_bad = torch.full((), -1, dtype=torch.int64, device=device)  # no host read per chunk
    hidden = None
    for t in range(0, len(ids) - 1, seq_len):
        T = min(seq_len, len(ids) - 1 - t)
        logits, hidden = adapted(text[None, t:t + T], hidden)
        loss = cross_entropy(logits[0], text[t + 1:t + 1 + T], "sum")
        total_loss += loss.detach()  # scored before the step that learns from it
        # Diverged: not finite, or three times worse than guessing uniformly (log V).
        bad = ~(loss / T <= 3 * math.log(adapted.vocab_size))
        first_bad = torch.where((first_bad < 0) & bad, t, first_bad)
        optimizer.zero_grad(set_to_none=True)
        (loss / T).backward()
        try:
            optimizer.step()
        except RuntimeError:  # a rate beyond what fp32 holds ("without overflow")
            raise _diverged(name, t, lr) from None
        hidden = detach_hidden(hidden)
        if bar is not None:
            bar.update(T)
    if int(first_bad) >= 0:
        raise _diverged(name, int(first_bad), lr)
    return Score(name, len(ids) - 1, total_loss.item() / (len(ids) - 1),
                 time.perf_counter() - started, skipped)


def _diverged(name: str, at: int, lr: float) -> DataError:
    return DataError(f"{name or 'the text'}: dynamic evaluation diverged at character {at:,} "
                     f"(the loss ran past three times that of a uniform guess); use a lower "
                     f"--dynamic-lr than {lr:g}, e.g. {DYNAMIC_LR:g} or less")


def _adaptable_copy(model: CharRNN, device: torch.device) -> CharRNN:
    """A copy in training mode (cuDNN computes recurrent gradients only there) without
    dropout."""
    adapted = copy.deepcopy(model).to(device)
    adapted.train()
    for module in adapted.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    adapted.rnn.dropout = 0.0
    return adapted
