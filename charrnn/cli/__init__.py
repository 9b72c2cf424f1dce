"""The `charrnn` command: one module per command. Each command parses its options, calls one
library function and reports; errors the user can fix exit with one line, no traceback."""

import click

from ..core.cpu import quiet_openmp

quiet_openmp()  # before torch loads (the commands below import it): OpenMP reads it once

from .eval import eval_command  # noqa: E402
from .export import export  # noqa: E402
from .novelty import novelty  # noqa: E402
from .plot import plot  # noqa: E402
from .prepare import prepare  # noqa: E402
from .runs import runs  # noqa: E402
from .sample import sample  # noqa: E402
from .serve import serve  # noqa: E402
from .train import train  # noqa: E402


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="charrnn")
def main():
    """Train character-level RNN language models on any text and sample from them.

    \b
      charrnn prepare corpus.txt
      charrnn train corpus.txt
      charrnn sample --temperature 0.5
    """


for command in (prepare, train, sample, eval_command, plot, runs, export, serve, novelty):
    main.add_command(command)
