"""A model loaded for serving, and the watcher that loads a new one when best.pt is replaced.

    loaded = LoadedModel.load(find_checkpoint("runs/latest"), torch.device("cpu"))
    loaded.lines()        # the start-up lines: which checkpoint, cell, size, vocabulary, loss
    watcher = Watcher("runs/latest", "runs", loaded, on_new=print, on_error=print)
    watcher.start()       # polls; a replaced checkpoint is loaded off the worker's thread

Training writes best.pt to a temporary file and renames it into place, so the file found at
the path is always whole: a new inode, size or modification time means a new model. A
request keeps the LoadedModel it started with, so requests in flight finish on their model.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.checkpoint import load_checkpoint, read_header
from ..core.device import describe as describe_device
from ..core.errors import CharRNNError
from ..core.escape import shown
from ..core.model import FLOAT_BYTES, CharRNN, describe_model
from ..core.runs import find_checkpoint
from ..core.units import LN2
from ..corpus.text import TextOptions
from ..corpus.vocab import Vocab
from ..inference.trained import describe_checkpoint, display_path, model_from_checkpoint


@dataclass(eq=False)
class LoadedModel:
    model: CharRNN
    vocab: Vocab
    options: TextOptions
    path: Path
    device: torch.device
    description: str  # describe_checkpoint's line: the file, step and loss
    step: int | None = None
    best_val_loss: float | None = None
    signature: tuple = ()  # the file's identity when it was read (Watcher)
    generation: int = 1  # 1 for the first model, +1 per reload
    loaded_at: float = field(default_factory=time.time)
    data_root: Path | None = None  # the prepared directory it was trained on, if recorded
    step_precision: str = "fp32"  # the batched step's products (serve --step-precision)

    @classmethod
    def load(cls, path: Path, device: torch.device, generation: int = 1,
             step_precision: str = "fp32") -> LoadedModel:
        signature = file_signature(path)
        state = load_checkpoint(path)
        model, vocab, options = model_from_checkpoint(state)
        header = read_header(state)
        return cls(model.to(device).eval(), vocab, options, Path(path), device,
                   describe_checkpoint(path, header), header.step, header.best_val_loss,
                   signature, generation, data_root=header.data_root,
                   step_precision=step_precision)

    @property
    def state_floats(self) -> int:
        """Floats of one stream's hidden state: layers x H, twice for an LSTM (h and c)."""
        m = self.model
        return m.num_layers * m.hidden_size * (2 if m.cell == "lstm" else 1)

    def lines(self) -> list[str]:
        """Which checkpoint (with its step and validation loss), then the model's size."""
        m = self.model
        params = sum(p.numel() for p in m.parameters())
        size = (f"size: {describe_model(m)}, {params:,} parameters, vocabulary of "
                f"{len(self.vocab):,} characters, on {describe_device(self.device)}")
        if self.best_val_loss is None:
            size += "; no validation loss recorded"
        return [self.description, size]

    def info(self) -> dict:
        """What GET /v1/model answers."""
        m = self.model
        loss = self.best_val_loss
        return {"cell": m.cell, "hidden_size": m.hidden_size, "num_layers": m.num_layers,
                "embed_dim": m.embed_dim, "vocab_size": len(self.vocab),
                "vocab": "".join(self.vocab.text_chars),
                # A model of documents: generate takes stop_at_end.
                "end_of_document": self.vocab.end is not None,
                "parameters": sum(p.numel() for p in m.parameters()),
                "step": self.step,
                "best_val_loss": None if loss is None else {"nats": loss, "bits": loss / LN2},
                "checkpoint": display_path(self.path),
                "generation": self.generation, "loaded_at": self.loaded_at,
                "device": str(self.device), "step_precision": self.step_precision,
                "session_bytes": FLOAT_BYTES * self.state_floats,
                "text_options": self.options.to_dict()}


def file_signature(path: Path) -> tuple:
    """What changes when a file is replaced: its inode, size and modification time."""
    st = os.stat(path)
    return (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns)


class Watcher(threading.Thread):
    """Polls TARGET as `charrnn sample` resolves it (best.pt, else last.pt) and loads the
    checkpoint found there whenever it is a new file. A file that fails to load is reported
    once and the current model stays."""

    def __init__(self, target, runs_dir, current: LoadedModel, on_new, on_error,
                 interval: float = 1.0):
        super().__init__(name="charrnn-watch", daemon=True)
        self.target, self.runs_dir, self.interval = target, runs_dir, interval
        self.on_new, self.on_error = on_new, on_error
        self.seen, self.generation = current.signature, current.generation
        self.device, self.step_precision = current.device, current.step_precision
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.poll()
            except Exception as e:  # noqa: BLE001 - the watcher outlives anything it reads
                self.on_error(f"warning: --watch: {_reason(e)}; still serving the previous "
                              f"model")

    def stop(self) -> None:
        self.stopped.set()

    def poll(self) -> LoadedModel | None:
        try:
            path = find_checkpoint(self.target, self.runs_dir)
            signature = file_signature(path)
        except (CharRNNError, OSError):
            return None  # a new run that has not saved yet: keep serving the current model
        if signature == self.seen:
            return None
        self.seen = signature
        try:
            loaded = LoadedModel.load(path, self.device, self.generation + 1,
                                      self.step_precision)
        except CharRNNError as e:
            self.on_error(f"warning: --watch: {shown(e)}; still serving the previous model")
            return None
        except OSError as e:
            self.on_error(f"warning: --watch: cannot read {shown(path)}: {e.strerror or e}; "
                          f"still serving the previous model")
            return None
        except (Exception, MemoryError) as e:  # noqa: BLE001 - a hostile file, whatever it does
            self.on_error(f"warning: --watch: {shown(path)} could not be loaded "
                          f"({_reason(e)}); still serving the previous model")
            return None
        self.generation = loaded.generation
        self.on_new(loaded)
        return loaded


def _reason(e: BaseException) -> str:
    """An unforeseen failure in one short line: its kind and the start of its message."""
    text = shown(str(e).splitlines()[0] if str(e) else "")
    return type(e).__name__ + (f": {text[:120]}" if text else "")
