"""What an exported ONNX file says about itself: one JSON document in its metadata_props.

    meta = model_metadata(model, vocab, options, header)  # a dict, stored as JSON
    meta = read_metadata("model.onnx")                     # with onnxruntime, no torch

The file alone is enough to sample: the vocabulary (id i is `vocab[i]`), the text options a
prime goes through, the model's shape (which sizes the zero state), the names of the state
inputs and outputs, and where the model came from (step, best validation loss). Everything
sits under one key, `charrnn`, so a reader in any language parses one string:

    {"format": "charrnn-onnx", "version": 1, "vocab": ["\\n", " ", "a", ...],
     "text_options": {"encoding": "utf-8", "lower": false, "unidecode": false, "keep_crlf": false},
     "model": {"cell": "lstm", "vocab_size": 65, "hidden_size": 256, "num_layers": 2,
               "embed_dim": 0, "parameters": 1237313},
     "state": ["h", "c"], "inputs": ["ids", "h", "c"], "outputs": ["logits", "h_out", "c_out"],
     "step": 2282, "best_val_loss": 1.4612}
"""

from __future__ import annotations

import json

from ..core.checkpoint import CheckpointHeader, read_header
from ..core.model import CharRNN
from ..corpus.text import TextOptions
from ..corpus.vocab import Vocab

KEY = "charrnn"
FORMAT = "charrnn-onnx"
VERSION = 1


def state_names(cell: str) -> list[str]:
    """The recurrent state an exported model takes and gives back: h, and c for an LSTM."""
    return ["h", "c"] if cell == "lstm" else ["h"]


def input_names(cell: str) -> list[str]:
    return ["ids", *state_names(cell)]


def output_names(cell: str) -> list[str]:
    # ONNX wants every value name unique: the new state cannot reuse the inputs' names.
    return ["logits", *(f"{name}_out" for name in state_names(cell))]


def model_metadata(model: CharRNN, vocab: Vocab, options: TextOptions,
                   source: CheckpointHeader | dict | None = None) -> dict:
    """The document stored in the file; `source` is the checkpoint it came from (loaded,
    or its header), if any."""
    header = read_header(source) if isinstance(source, dict) else source
    return {
        "format": FORMAT,
        "version": VERSION,
        # A model of documents: its end-of-document mark shows as a line break (id in
        # "end_of_document"), as in `charrnn sample`; JSON cannot carry the mark itself.
        "vocab": list(vocab.shown_chars),
        "end_of_document": vocab.end,
        "text_options": options.to_dict(),
        "model": {
            "cell": model.cell,
            "vocab_size": model.vocab_size,
            "hidden_size": model.hidden_size,
            "num_layers": model.num_layers,
            "embed_dim": model.embed_dim,
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "state": state_names(model.cell),
        "inputs": input_names(model.cell),
        "outputs": output_names(model.cell),
        # JSON has no inf or nan: a model never validated has no loss to report (None).
        "step": header.step if header else None,
        "best_val_loss": header.best_val_loss if header else None,
    }


def to_json(meta: dict) -> str:
    # Characters stay as themselves (not \\uXXXX) so the vocabulary reads as text.
    return json.dumps(meta, ensure_ascii=False, allow_nan=False)


def read_metadata(path) -> dict:
    """The document of an exported file, read through onnxruntime (which loads it anyway)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return json.loads(session.get_modelmeta().custom_metadata_map[KEY])
