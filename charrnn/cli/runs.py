"""`charrnn runs`: the runs in a runs directory, to choose one from."""

from __future__ import annotations

import json
import time

import click

from ..training.catalog import SORTS, RunSummary, list_runs
from ..training.progress import format_seconds
from ..core.escape import shown
from .common import user_errors


@click.command("runs")
@click.option("--runs", "runs_dir", default="runs", show_default=True, type=click.Path(),
              help="The runs directory to list.")
@click.option("--sort", type=click.Choice(SORTS), default="time", show_default=True,
              help="time: last written, newest at the bottom; loss: best first; steps: most "
                   "first; name.")
@click.option("--corpus", metavar="TEXT",
              help="Only runs whose corpus (prepared directory) name contains TEXT.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list.")
@user_errors
def runs(runs_dir, sort, corpus, as_json):
    """List training runs: corpus, model, steps, training time, best validation loss.

    The run that `sample`, `eval` and `plot` use by default (runs/latest) is marked *.

    \b
      charrnn runs
      charrnn runs --sort loss --corpus input
      charrnn runs --json | jq '.[0].path'
    """
    found = list_runs(runs_dir, sort, corpus)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in found], indent=2))
        return
    if not found:
        click.echo(f"no runs in {shown(runs_dir)}" + (
            f" on a corpus matching {shown(repr(corpus))}" if corpus else ""))
        return
    rows = [("", "run", "corpus", "model", "steps", "time", "best val nats (bpc)",
             "last written")] + [_row(r) for r in found]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {4, 5}  # numbers line up on the right
    for row in rows:
        click.echo("  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    if any(r.latest for r in found):
        click.echo(f"* is {shown(runs_dir)}/latest: what sample, eval and plot use by default")
    for r in found:
        for note in r.notes:
            click.echo(f"{shown(r.name)}: {shown(note)}", err=True)


def _row(r: RunSummary) -> tuple[str, ...]:
    model = r.model or "?"
    if r.model and r.vocab_size:
        model += f", V={r.vocab_size}"
    if r.damaged:
        model = f"damaged: {r.damaged}"
    best = ("-" if r.best_val_loss is None
            else f"{r.best_val_loss:.4f} ({r.best_val_bpc:.3f})"
            + (f" @{_count(r.best_step)}" if r.best_step is not None else ""))
    corpus = shown(r.corpus or "?")
    if r.documents and r.documents > 1:
        corpus += f" ({_count(r.documents)} docs)"
    return ("*" if r.latest else "", shown(r.name), corpus, shown(model),
            _count(r.steps), format_seconds(r.training_seconds), best,
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.modified)))


def _count(n: int) -> str:
    """A count with thousands separators; one too long for a column in short form."""
    return f"{n:,}" if n < 10**12 else f"{n:.3g}"
