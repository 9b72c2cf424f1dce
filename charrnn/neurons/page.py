"""Pictures of a scan: a self-contained HTML page and a PNG of its top panels.

The text coloured is the start of the held-out half (which did not choose the cells),
read after the 512 characters before it so that the cells start from a warm state. Each
character is coloured by the cell's value there, from blue at the cell's lowest value in
the excerpt through white to red at its highest, as in Karpathy, Johnson and Fei-Fei's
figures (theirs span tanh's -1 to 1; an LSTM's c has no fixed range, and a cell that moves
between 0.2 and 0.6 would look flat on a fixed scale).
"""

from __future__ import annotations

import html
import io
import json
import math
from importlib import resources
from pathlib import Path

import numpy as np

from ..core.extras import install_hint
from ..core.files import atomic_write, atomic_write_text
from .record import Cells
from .scan import Scan

PNG_PANELS, PNG_ROWS, PNG_COLUMNS = 6, 7, 84
PNG_MIN_R = 0.1  # a panel of a cell that tracks nothing (|r| below this) is left out of the PNG


def page_cells(scan: Scan) -> list[dict]:
    """Every cell the scan ranked, once, best held-out |r| first, each feature's top cell
    before the rest (a cell that is one feature's top and another's runner-up is listed
    as the top): {cell, name, feature, r, top}."""
    seen, ranked = set(), []
    for rank in (0, 1):
        for f in scan.features:
            for c in (f.best[:1] if rank == 0 else f.best[1:]):
                if c.cell not in seen and not math.isnan(c.r_heldout):
                    seen.add(c.cell)
                    ranked.append({"cell": c.cell, "name": c.name, "feature": f.name,
                                   "r": round(c.r_heldout, 3), "top": rank == 0})
    ranked.sort(key=lambda c: (not c["top"], -abs(c["r"])))
    return ranked


def excerpt_values(model, ids, scan: Scan, cells: list[int], show: int, device) -> tuple:
    """(start, values (show, len(cells))) over the start of the held-out half."""
    start = scan.half
    length = min(show, scan.chars - start)
    return start, Cells(model).excerpt(ids, start, length, cells, device=device)


def write_page(path: Path, model, text: str, ids, scan: Scan, show: int, device, name: str,
               model_line: str) -> list[dict]:
    """Write the page; return its panels (the top cell of each feature) for the PNG."""
    ranked = page_cells(scan)
    start, values = excerpt_values(model, ids, scan, [c["cell"] for c in ranked], show, device)
    low, high = values.min(axis=0), values.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    for j, c in enumerate(ranked):  # 8 bits per value: the colour has no more to show
        c["values"] = np.round((2 * (values[:, j] - low[j]) / span[j] - 1) * 127).astype(int).tolist()
        c["range"] = [round(float(low[j]), 3), round(float(high[j]), 3)]
    data = {"title": f"cells of {Path(name).name}", "model": model_line,
            "text": text[start:start + len(values)], "start": start, "chars": scan.chars,
            "cells": ranked}
    template = resources.files("charrnn.neurons").joinpath("page.html").read_text("utf-8")
    payload = json.dumps(data, ensure_ascii=True).replace("</", "<\\/")
    page = (template.replace("{{title}}", html.escape(data["title"]))
            .replace("{{data}}", payload))
    atomic_write_text(path, page)
    return [dict(c, text=data["text"]) for c in ranked if c["top"]]


def write_png(path: Path, panels: list[dict]) -> str | None:
    """The top panels as a PNG; a line saying what to install when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return "no PNG written: it needs matplotlib, " + install_hint("plot")
    matplotlib.use("Agg")
    from matplotlib.colors import LinearSegmentedColormap
    from matplotlib.figure import Figure

    panels = sorted(panels, key=lambda p: -abs(p["r"]))[:PNG_PANELS]
    panels = [p for p in panels if abs(p["r"]) >= PNG_MIN_R] or panels[:1]
    cmap = LinearSegmentedColormap.from_list("cell", ["#2c5fd6", "#ffffff", "#d62c2c"])
    fig = Figure(figsize=(PNG_COLUMNS * 0.105, len(panels) * (PNG_ROWS * 0.2 + 0.45) + 0.1),
                 layout="constrained")
    for ax, panel in zip(fig.subplots(len(panels), 1, squeeze=False)[:, 0], panels):
        grid, chars = _grid(panel["text"], np.asarray(panel["values"]) / 127)
        ax.imshow(grid, cmap=cmap, vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
        for (row, col), ch in chars.items():
            ax.text(col, row, ch.replace("$", r"\$"), ha="center", va="center",
                    family="monospace", fontsize=7.5)
        ax.set_title(f"{panel['feature']}: cell {panel['name']}, held-out r = {panel['r']:+.2f}",
                     fontsize=9, loc="left")
        ax.set_xticks([])
        ax.set_yticks([])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return None


def _grid(text: str, values: np.ndarray) -> tuple[np.ndarray, dict]:
    """The text laid out as PNG_ROWS lines of PNG_COLUMNS: values (rows, columns) with NaN
    where no character is, and {(row, column): character}. A newline is drawn as ↵."""
    grid = np.full((PNG_ROWS, PNG_COLUMNS), np.nan)
    chars, row, col = {}, 0, 0
    for ch, v in zip(text, values):
        if row >= PNG_ROWS:
            break
        grid[row, col] = v
        chars[(row, col)] = "↵" if ch == "\n" else ("·" if ch == "\t" else ch)
        col += 1
        if ch == "\n" or col == PNG_COLUMNS:
            row, col = row + 1, 0
    return grid, chars
