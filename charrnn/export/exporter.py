"""The model as one ONNX file that runs without PyTorch, checked against PyTorch before it
is put in place.

    model, vocab, options = model_from_checkpoint(state)
    exported = export_onnx(model, vocab, options, "model.onnx", state=state)
    charrnn export runs/latest -o model.onnx                 # the same, from the command line

The graph: `ids` (B, T) int64 and the state `h` (L, B, H) (and `c` for an LSTM) in,
`logits` (B, T, V) and the new state `h_out` (and `c_out`) out; B and T are dynamic.
The vocabulary, text options and model shape go into metadata_props (metadata.py).

It uses torch.onnx.export's TorchScript-based mode (dynamo=False). In torch 2.13 the dynamo
mode keeps the time axis free only for a one-layer LSTM or GRU: for a stacked LSTM or GRU,
and for every nn.RNN (unrolled into one Tanh per step), it bakes the example's sequence
length into the graph, so the file fails on any other chunk length (pytorch/pytorch#191855
is the same freeze in another pattern). The TorchScript mode maps nn.LSTM / nn.GRU / nn.RNN
onto ONNX's LSTM / GRU / RNN operators with batch and time left free, for every model
charrnn trains. It is deprecated, so its warnings are silenced here; the verification
(verify.py) would catch a wrong file whichever mode made it.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..core.errors import CharRNNError
from ..core.extras import install_hint
from ..core.files import atomic_write, check_replaceable
from ..core.outputs import guard_output
from ..core.model import CharRNN, describe_model, hidden_tensors
from ..corpus.text import TextOptions
from ..corpus.vocab import Vocab
from .metadata import KEY, input_names, model_metadata, output_names, to_json
from .verify import CHECK_CHARS, CHECK_STREAMS, TOLERANCE, max_logit_difference

INSTALL = install_hint("export")
EXTRA_MODULES = ("onnx", "onnxruntime")  # the TorchScript mode needs no onnxscript
# The recurrent and OneHot operators all predate opset 17; it is old enough for the runtimes
# of 2022 on (onnxruntime, onnxruntime-web, mobile builds) and what the mode knows best.
OPSET = 17


class ExportError(CharRNNError):
    """A model that cannot be exported, or a file that does not match its model."""


class Mismatch(ExportError):
    """The exported file computes other logits than the model it came from."""


@dataclass(frozen=True)
class Exported:
    path: Path
    size: int  # bytes
    max_diff: float  # largest |logit difference| onnxruntime vs PyTorch
    checked_chars: int  # per stream
    checked_streams: int


def require_extra() -> None:
    """Refuse at once, with the install command, when the `export` extra is missing."""
    missing = []
    for name in EXTRA_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f"export needs {' and '.join(missing)}, not installed here: {INSTALL}")


def export_onnx(model: CharRNN, vocab: Vocab, options: TextOptions, path: str | Path,
                state: dict | None = None, tolerance: float = TOLERANCE) -> Exported:
    """Export, verify and write `path` atomically. `state`: the checkpoint, for the step
    and validation loss in the metadata. A failure leaves `path` as it was."""
    require_extra()
    path = check_output(path)  # before the export's work: a bad path fails at once
    try:
        data, diff = checked_bytes(model, vocab, options, state, tolerance)
    except Mismatch as e:
        kept = "the previous one is kept" if path.exists() else "nothing written"
        raise ExportError(f"{e}; {path}: {kept}") from None
    atomic_write(path, lambda f: f.write(data), what=str(path), error=ExportError)
    return Exported(path, len(data), diff, CHECK_CHARS, CHECK_STREAMS)


def checked_bytes(model: CharRNN, vocab: Vocab, options: TextOptions, state: dict | None = None,
                  tolerance: float = TOLERANCE) -> tuple[bytes, float]:
    """The file's bytes and its largest logit difference from PyTorch; Mismatch when that
    is over `tolerance`."""
    model = model.cpu().float().eval()
    data = with_metadata(_export_or_explain(model), model_metadata(model, vocab, options, state),
                         describe_model(model))
    diff = max_logit_difference(model, data)
    if not diff <= tolerance:
        raise Mismatch(f"the exported model does not match PyTorch: logits differ by up to "
                       f"{diff:.3g} over {CHECK_STREAMS} streams of {CHECK_CHARS:,} characters "
                       f"(tolerance {tolerance:g})")
    return data, diff


def check_output(path: str | Path, reads=()) -> Path:
    """A path a file can be written to: not a directory, in a writable directory, not a
    file in `reads` (the checkpoint exported) nor one charrnn needs (core/outputs.py)."""
    try:
        path = guard_output(path, reads, "output")
    except CharRNNError as e:
        raise ExportError(str(e)) from None
    check_replaceable(path, error=ExportError)
    parent = path.parent
    if not parent.is_dir():
        why = "is not a directory" if parent.exists() else "does not exist"
        raise ExportError(f"cannot write {path}: {parent} {why}")
    if not _writable(parent):
        raise ExportError(f"cannot write {path}: no permission to write in {parent}")
    return path


def _writable(directory: Path) -> bool:
    return os.access(directory, os.W_OK | os.X_OK)


# ----------------------------------------------------------------------------------------
# the graph


class Stateful(nn.Module):
    """A CharRNN with its state as plain tensors: (ids, h[, c]) -> (logits, h_out[, c_out]).

    One-hot input goes through F.one_hot (ONNX's OneHot) instead of the model's (V, V)
    identity buffer, which the file would otherwise carry as V*V floats: 100 MB for a
    vocabulary of 5,000. Dropout is left out: an exported model only ever runs in eval."""

    def __init__(self, model: CharRNN):
        super().__init__()
        self.model = model

    def forward(self, ids, h, c=None):
        m = self.model
        if m.embedding is not None:
            x = m.embedding(ids)  # (B, T, E)
        else:
            x = F.one_hot(ids, m.vocab_size).to(h.dtype)  # (B, T, V)
        out, hidden = m.rnn(x, h if c is None else (h, c))  # (B, T, H)
        return (m.head(out), *hidden_tensors(hidden))  # (B, T, V), (L, B, H)...


def onnx_bytes(model: CharRNN) -> bytes:
    """The model's ONNX graph, without metadata. Raises whatever the exporter raises."""
    B, T = 3, 5  # any sizes but 1, which the exporter might take for a fixed axis
    ids = torch.arange(B * T).reshape(B, T) % model.vocab_size
    state = hidden_tensors(model.init_hidden(B))
    inputs, outputs = input_names(model.cell), output_names(model.cell)
    axes = {"ids": {0: "batch", 1: "time"}, "logits": {0: "batch", 1: "time"}}
    axes.update({name: {1: "batch"} for name in inputs[1:] + outputs[1:]})
    buffer = io.BytesIO()
    with _quiet():
        torch.onnx.export(Stateful(model).eval(), (ids, *state), buffer, dynamo=False,
                          opset_version=OPSET, input_names=inputs, output_names=outputs,
                          dynamic_axes=axes)
    return buffer.getvalue()


def with_metadata(data: bytes, meta: dict, description: str) -> bytes:
    """The graph with the metadata document under KEY, checked by onnx's own checker."""
    import onnx

    proto = onnx.load_from_string(data)
    entry = proto.metadata_props.add()
    entry.key, entry.value = KEY, to_json(meta)
    proto.producer_name, proto.producer_version = "charrnn", __version__
    proto.doc_string = (f"charrnn {description} over {len(meta['vocab']):,} characters; "
                        f"metadata_props['{KEY}'] holds its vocabulary and text options")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the exported graph is not valid ONNX: {_first_line(e)}") from None
    return proto.SerializeToString()


# ----------------------------------------------------------------------------------------
# failures, in one line


@contextlib.contextmanager
def _quiet():
    """Nothing from the exporter reaches the user: its deprecation notes and tracer warnings
    are Python warnings, but on a failure its C++ side prints the whole graph to the
    process's standard output, so file descriptors 1 and 2 point at /dev/null meanwhile."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = []
    try:
        for fd in (1, 2):
            with contextlib.suppress(OSError):  # a closed descriptor has nothing to hide
                saved.append((fd, os.dup(fd)))
                os.dup2(devnull, fd)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


def _export_or_explain(model: CharRNN) -> bytes:
    try:
        return onnx_bytes(model)
    except Exception as e:  # the exporter raises many kinds, with pages of graph dump
        raise ExportError(f"the ONNX exporter cannot handle {_failing_part(model)}: "
                          f"{_first_line(e)}") from None


def _failing_part(model: CharRNN) -> str:
    """Which part of the model the exporter refuses, found by exporting each part alone."""
    B, T, V, H = 2, 3, model.vocab_size, model.hidden_size
    ids = torch.zeros(B, T, dtype=torch.long)
    x = torch.zeros(B, T, model.embed_dim or V)
    state = hidden_tensors(model.init_hidden(B))
    parts = [
        ("the input layer (embedding)" if model.embedding is not None else "the one-hot input",
         model.embedding if model.embedding is not None else _OneHot(V), (ids,)),
        (f"the recurrent layers ({describe_model(model)})", model.rnn,
         (x, tuple(state) if model.cell == "lstm" else state[0])),
        ("the output layer", model.head, (torch.zeros(B, T, H),)),
    ]
    for name, module, args in parts:
        try:
            with _quiet():
                torch.onnx.export(module, args, io.BytesIO(), dynamo=False, opset_version=OPSET)
        except Exception:
            return name
    return f"the {describe_model(model)} model"


class _OneHot(nn.Module):
    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, ids):
        return F.one_hot(ids, self.vocab_size).float()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]
