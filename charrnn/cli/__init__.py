"""The `charrnn` command: one module per command. Each command parses its options, calls one
library function and reports; errors the user can fix exit with one line, no traceback."""

import sys

from ..core.cpu import quiet_openmp

quiet_openmp()  # before torch loads (the commands below import it): OpenMP reads it once

try:
    # torch and the rest take a second or more to import: a Ctrl-C in that time is a
    # normal way to change one's mind, and gets one line, not a traceback.
    import click

    from .eval import eval_command
    from .export import export
    from .neurons import neurons
    from .novelty import novelty
    from .plot import plot
    from .prepare import prepare
    from .runs import runs
    from .sample import sample
    from .serve import serve
    from .train import train
except KeyboardInterrupt:
    sys.stderr.write("interrupted\n")
    raise SystemExit(130) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="charrnn")
def main():
    """Train character-level RNN language models on any text and sample from them.

    \b
      charrnn prepare corpus.txt
      charrnn train corpus.txt
      charrnn sample --temperature 0.5
    """


for command in (prepare, train, sample, eval_command, plot, runs, export, serve, novelty,
                neurons):
    main.add_command(command)
