"""`charrnn plot`: training curves of one or several runs."""

from __future__ import annotations

import click

from ..core.errors import CharRNNError
from ..core.escape import shown
from ..training.plot import INSTALL, have_matplotlib, plot_runs, run_dirs
from .common import AliasedOption, user_errors


@click.command()
@click.argument("runs", nargs=-1, metavar="[RUN]...")
@click.option("-o", "--output", "out", default="curves.png", show_default=True,
              type=click.Path(), cls=AliasedOption, aliases=("--out",),
              help="The PNG file to write.")
@click.option("--runs", "runs_dir", default="runs", show_default=True, type=click.Path(),
              help="The runs directory: its latest run is drawn when no RUN is given.")
@user_errors
def plot(runs, out, runs_dir):
    """Draw training and validation loss (bits/char) against step and against training
    time, for one or several runs overlaid.

    RUN is a run directory, or a runs directory (its latest run); by default the latest
    run under ./runs. Needs matplotlib:
    the plot extra (pip install -e '.[plot]'). Training keeps RUN/curves.png up to date by itself when
    matplotlib is installed.

    \b
      charrnn plot runs/latest
      charrnn plot runs/* -o all.png
    """
    if not have_matplotlib():
        raise CharRNNError(INSTALL)
    dirs = run_dirs(list(runs) or [runs_dir])
    for line in plot_runs(dirs, out):
        click.echo(line, err=True)
    if out != "-":
        click.echo(f"{shown(out)}: {len(dirs)} run(s)")
