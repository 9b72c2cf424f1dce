"""One text, one cell: what the playground's Cells view shows.

    view = cell_view(model, vocab, text, cell=None)   # cell None: the best-ranked one
    view["ranked"]   # [{cell, name, feature, r}]: the top cells for this text's features
    view["values"]   # the chosen cell's value at every character, as the model reads

A pasted text is short: the ranking is made on its first half and r measured on its
second, as `charrnn neurons` does, so it is rough, and said to be.
"""

from __future__ import annotations

import numpy as np

from ..core.model import CharRNN
from ..corpus.vocab import Vocab
from .page import page_cells
from .record import Cells
from .scan import scan_cells


def cell_view(model: CharRNN, vocab: Vocab, text: str, cell: int | None = None,
              top: int = 3) -> dict:
    """The ranked cells of `text` and the values of one cell over it. `text` holds only
    characters of the vocabulary; `cell` is an index below the model's cell count."""
    ids = np.array(vocab.encode(text), dtype=np.int64)
    device = model.head.weight.device  # where the server keeps it: never moved from there
    cells = Cells(model)
    ranked = []
    if len(ids) >= 4:
        ranked = [{k: c[k] for k in ("cell", "name", "feature", "r")}
                  for c in page_cells(scan_cells(model, text, ids, top=top, seq_len=256,
                                            device=device))]
    if cell is None:
        cell = ranked[0]["cell"] if ranked else 0
    values = cells.excerpt(ids, 0, len(ids), [cell], burn_in=0, device=device)[:, 0]
    layer, state, unit = cells.name(cell)
    return {"count": cells.count, "cell": cell, "name": f"L{layer} {state} {unit}",
            "ranked": ranked, "values": np.round(values, 4).tolist()}
