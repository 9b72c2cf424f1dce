"""Correlations of every cell with every feature, from running sums: the activations are
seen one chunk at a time and never kept, so memory does not grow with the text.

    sums = Correlations(cells=1024, features=7)
    for x, y in chunks:           # x (n, C) activations, y (n, F) feature values
        sums.update(x, y)
    r = sums.r()                  # (C, F), NaN where a cell or feature never varied

Each chunk's means and centred co-moments are merged into the totals (Chan, Golub and
LeVeque's pairwise update), which keeps float64 accurate where raw sums of squares of
cell states (unbounded for an LSTM's c) would cancel.
"""

from __future__ import annotations

import numpy as np
import torch


class Correlations:
    def __init__(self, cells: int, features: int):
        self.n = 0
        self.mean_x, self.mean_y = np.zeros(cells), np.zeros(features)
        self.m2_x, self.m2_y = np.zeros(cells), np.zeros(features)
        self.co = np.zeros((cells, features))  # sum of (x - mean_x)(y - mean_y)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add n rows: x (n, C), y (n, F), tensors of any float dtype."""
        n = x.size(0)
        if n == 0:
            return
        x, y = x.double(), y.double()
        mx, my = x.mean(0), y.mean(0)
        xc, yc = x - mx, y - my
        m2x, m2y = (xc * xc).sum(0).numpy(), (yc * yc).sum(0).numpy()
        co = (xc.t() @ yc).numpy()
        mx, my = mx.numpy(), my.numpy()
        total = self.n + n
        dx, dy = mx - self.mean_x, my - self.mean_y
        weight = self.n * n / total
        self.m2_x += m2x + dx * dx * weight
        self.m2_y += m2y + dy * dy * weight
        self.co += co + np.outer(dx, dy) * weight
        self.mean_x += dx * n / total
        self.mean_y += dy * n / total
        self.n = total

    def r(self) -> np.ndarray:
        """(C, F) Pearson correlations; NaN where either side was constant."""
        with np.errstate(invalid="ignore", divide="ignore"):
            r = self.co / np.sqrt(np.outer(self.m2_x, self.m2_y))
        # A state or feature that never moved has no correlation, not a huge one from
        # rounding: below 1e-9 of the variance per row, call it constant.
        flat = np.outer(self.m2_x <= 1e-12 * max(self.n, 1), self.m2_y <= 1e-12 * max(self.n, 1))
        r[flat] = np.nan
        return np.clip(r, -1.0, 1.0)


class Saturation:
    """Per layer and gate, how often a gate is below 0.1 (left) or above 0.9 (right): the
    saturation statistic of Karpathy, Johnson and Fei-Fei (2015)."""

    LOW, HIGH = 0.1, 0.9

    def __init__(self):
        self.counts: dict[tuple[int, str], list[int]] = {}  # [left, right, seen]

    def update(self, gates: dict[tuple[int, str], torch.Tensor], valid: torch.Tensor) -> None:
        """gates {(layer, name): (B, T, H)}, valid (B, T) bool: the real characters."""
        for key, g in gates.items():
            g = g[valid]  # (n, H)
            count = self.counts.setdefault(key, [0, 0, 0])
            count[0] += int((g < self.LOW).sum())
            count[1] += int((g > self.HIGH).sum())
            count[2] += g.numel()

    def table(self) -> list[dict]:
        """[{layer, gates: {name: {left, right}}, saturated}] in layer order."""
        layers: dict[int, dict] = {}
        for (layer, name), (left, right, seen) in self.counts.items():
            row = layers.setdefault(layer, {"layer": layer, "gates": {}, "_n": [0, 0]})
            row["gates"][name] = {"left": left / max(seen, 1), "right": right / max(seen, 1)}
            row["_n"][0] += left + right
            row["_n"][1] += seen
        for row in layers.values():
            done, seen = row.pop("_n")
            row["saturated"] = done / max(seen, 1)
        return [layers[k] for k in sorted(layers)]
