"""int8 weights for the web page's model (`charrnn export --web DIR --quantize int8`):
onnxruntime's dynamic quantization, kept only where it leaves the greedy text unchanged.

    data, report = quantize_model(model, data, "int8")   # data: the checked fp32 file

Dynamic quantization stores weights as int8 with a scale each and quantizes activations on
the fly. onnxruntime has an int8 LSTM (DynamicQuantizeLSTM) and int8 MatMul, but no int8
GRU or RNN: an LSTM's file shrinks about 4x, while for a GRU or RNN only the output layer
(a few percent of the weights) changes. Either way the file is accepted only if, from the
same start, it generates the same 1,000 greedy characters as the fp32 file; what it costs
in quality is measured in docs/benchmarks.md.
"""

from __future__ import annotations

import logging
import os
import tempfile

import numpy as np

from ..core.model import CharRNN
from .exporter import ExportError, _quiet
from .metadata import state_names
from .verify import session_for

GREEDY_CHARS = 1000
# The operators with an int8 form: the output layer (MatMul), an LSTM, an embedding (Gather).
OPS = ["MatMul", "LSTM", "Gather"]


def quantize_model(model: CharRNN, data: bytes, kind: str = "int8") -> tuple[bytes, dict]:
    """The quantized file's bytes and a report {type, bytes, fp32_bytes, summary}; refused
    when its greedy text differs from the fp32 file's within GREEDY_CHARS characters."""
    if kind != "int8":
        raise ExportError(f"--quantize: only int8 is supported, not {kind}")
    quantized = quantize_bytes(data)
    want, got = (greedy_ids(d, model, GREEDY_CHARS) for d in (data, quantized))
    if want != got:
        at = next(i for i, (a, b) in enumerate(zip(want, got)) if a != b)
        raise ExportError(f"--quantize int8 changes this model's greedy text at character "
                          f"{at + 1:,} of {GREEDY_CHARS:,}; export it without --quantize")
    summary = (f"{len(data) / 1e6:.2f} MB -> {len(quantized) / 1e6:.2f} MB, the same "
               f"{GREEDY_CHARS:,} greedy characters"
               + ("" if model.cell == "lstm" else
                  f" (onnxruntime has no int8 {model.cell.upper()}: only the output layer "
                  f"is int8)"))
    return quantized, {"type": kind, "bytes": len(quantized), "fp32_bytes": len(data),
                       "summary": summary}


def quantize_bytes(data: bytes) -> bytes:
    """An ONNX file's int8 form (onnxruntime.quantization.quantize_dynamic), unchecked."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        source, target = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        with open(source, "wb") as f:
            f.write(data)
        try:
            # It logs advice on pre-processing at WARNING level, through the root logger.
            logging.disable(logging.WARNING)
            # reduce_range: 7-bit weights. With 8 bits, onnxruntime's AVX2 kernels saturate
            # their 16-bit sums (u8 x s8 pairs) and give logits 0.09 away from fp32 on a
            # random LSTM, while its wasm build does not saturate (0.003): the check here
            # would judge another model than the browser runs. With 7 bits the two builds
            # give the same logits to the bit (tests/test_web_export.py), 0.004 from fp32.
            with _quiet():
                quantize_dynamic(source, target, weight_type=QuantType.QInt8, reduce_range=True,
                                 op_types_to_quantize=OPS)
        except Exception as e:  # the quantizer raises many kinds
            raise ExportError(f"--quantize int8 failed: {str(e).splitlines()[0][:300]}") from None
        finally:
            logging.disable(logging.NOTSET)
        with open(target, "rb") as f:
            return f.read()


def greedy_ids(data: bytes, model: CharRNN, length: int) -> list[int]:
    """`length` greedy ids from the zero state after id 0, one session call per step."""
    session = session_for(data, threads=1)
    shape = (model.num_layers, 1, model.hidden_size)
    state = {name: np.zeros(shape, np.float32) for name in state_names(model.cell)}
    ids, out = np.zeros((1, 1), np.int64), []
    for _ in range(length):
        logits, *new = session.run(None, {"ids": ids, **state})
        state = dict(zip(state, new))
        ids[0, 0] = int(np.argmax(logits[0, -1]))
        out.append(int(ids[0, 0]))
    return out
