"""Which cells track which features of a text: the library behind `charrnn neurons`.

    scan = scan_cells(model, text, ids, user_regexes={"tag": "<[^>]*>"}, top=3)
    for f in scan.features:
        print(f.name, [(c.name, c.r_heldout) for c in f.best])

The cells are chosen on the first half of the text and their r is reported on the second:
a correlation measured on the text that chose the cell is biased upward (the best of a
thousand cells is partly the luckiest), the held-out one is not. Both are kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..core.errors import CharRNNError
from ..core.model import CharRNN
from .features import BUILT_IN, feature_table
from .record import Cells
from .stats import Correlations, Saturation


@dataclass
class CellScore:
    cell: int  # index over all cells: layer-major, then state (c before h), then unit
    layer: int  # from 1
    state: str  # "c" or "h"
    unit: int
    r_select: float  # on the first half, which chose it
    r_heldout: float  # on the second half

    @property
    def name(self) -> str:
        return f"L{self.layer} {self.state} {self.unit}"


@dataclass
class FeatureScore:
    name: str
    pattern: str | None  # the user's regex; None for a built-in feature
    share: float  # mean value over the text: for a 0/1 feature, how much of it is inside
    best: list[CellScore] = field(default_factory=list)


@dataclass
class Scan:
    chars: int
    half: int  # cells chosen on [0, half), r reported on [half, chars)
    cell: str  # lstm, gru or rnn
    cells: int
    features: list[FeatureScore]
    saturation: list[dict]

    def to_dict(self) -> dict:
        out = asdict(self)
        for f in out["features"]:
            for c in f["best"]:
                for key in ("r_select", "r_heldout"):
                    c[key] = None if np.isnan(c[key]) else round(c[key], 4)
        return out


def scan_cells(model: CharRNN, text: str, ids: np.ndarray, user_regexes: dict | None = None,
               top: int = 3, batch_size: int = 32, seq_len: int = 64, device="cpu",
               bar=None) -> Scan:
    """Every cell against every feature, in one streaming pass over the text."""
    if len(ids) < 4:
        raise CharRNNError(f"the text has {len(ids)} characters: at least 4 are needed, "
                           f"2 to choose cells on and 2 to test them")
    table = feature_table(text, user_regexes)
    names = list(table)
    labels = torch.from_numpy(np.stack([table[n] for n in names], axis=1))  # (N, F)
    cells = Cells(model)
    half = len(ids) // 2
    sums = [Correlations(cells.count, len(names)) for _ in range(2)]
    saturation = Saturation()
    for chunk in cells.stream(ids, batch_size, seq_len, device):
        position = chunk.position.reshape(-1)
        values = chunk.values.reshape(-1, cells.count).cpu()
        select = (position >= 0) & (position < half)
        for acc, rows in zip(sums, (select, position >= half)):
            acc.update(values[rows], labels[position[rows]])
        saturation.update({k: g.cpu() for k, g in chunk.gates.items()},
                          (chunk.position >= 0))
        if bar is not None:
            bar.update(int((chunk.position >= 0).sum()))
    chosen, held = sums[0].r(), sums[1].r()
    features = []
    for j, name in enumerate(names):
        features.append(FeatureScore(name, None if name in BUILT_IN else user_regexes[name],
                                     float(table[name].mean()),
                                     _best(cells, chosen[:, j], held[:, j], top)))
    return Scan(len(ids), half, cells.cell, cells.count, features, saturation.table())


def _best(cells: Cells, chosen: np.ndarray, held: np.ndarray, top: int) -> list[CellScore]:
    """The `top` cells by |r| on the choosing half (none if the feature never varied)."""
    strength = np.nan_to_num(np.abs(chosen), nan=-1.0)
    order = np.argsort(-strength, kind="stable")[:top]
    return [CellScore(int(i), *cells.name(int(i)), float(chosen[i]), float(held[i]))
            for i in order if strength[i] >= 0]
