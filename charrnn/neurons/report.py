"""A scan as lines for a terminal: the best cells per feature, then each layer's gates."""

from __future__ import annotations

import math

from ..core.escape import shown
from .scan import Scan




def report_lines(scan: Scan, name: str) -> list[str]:
    lines = [f"{shown(name)}: {scan.chars:,} characters, {scan.cells:,} cells "
             f"({'c and h' if scan.cell == 'lstm' else 'h'} of every layer); cells chosen on "
             f"the first {scan.half:,}, r measured on the other {scan.chars - scan.half:,}",
             f"{'feature':<12} {'share':>7}  best cells: held-out r (r on the choosing half)"]
    for f in scan.features:
        share = f"{f.share:7.3f}" if f.name not in ("depth", "column") else f"{f.share:7.1f}"
        if not f.best:
            cells = "none: the feature is constant on the choosing half"
        else:
            cells = "   ".join(f"{c.name} {_r(c.r_heldout)} ({_r(c.r_select)})" for c in f.best)
        label = f.name if f.pattern is None else f"{f.name}*"
        lines.append(f"{label:<12} {share}  {cells}")
    if any(f.pattern is not None for f in scan.features):
        lines.append("* your --feature; share: its mean over the text (mean depth and column "
                     "for those two)")
    else:
        lines.append("share: the feature's mean over the text (mean depth and column for "
                     "those two)")
    lines.extend(saturation_lines(scan.saturation))
    return lines


def saturation_lines(table: list[dict]) -> list[str]:
    if not table:
        return ["saturation: none to measure (a plain RNN has no gates)"]
    lines = ["gate saturation: share of gate values below 0.1 | above 0.9"]
    for row in table:
        gates = ", ".join(f"{g} {v['left']:.2f} | {v['right']:.2f}"
                          for g, v in row["gates"].items())
        lines.append(f"layer {row['layer']}: {row['saturated']:.2f} saturated ({gates})")
    return lines


def _r(r: float) -> str:
    return "  n/a" if math.isnan(r) else f"{r:+.2f}"
