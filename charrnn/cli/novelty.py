"""`charrnn novelty`: how much of a text is copied from a model's training text."""

from __future__ import annotations

import json
import sys

import click

from ..core.checkpoint import load_checkpoint
from ..core.errors import CharRNNError
from ..core.escape import shown
from ..core.runs import find_checkpoint, names_model
from ..novelty.report import check_spans, novelty_report
from ..novelty.source import training_index
from .common import runs_option, user_errors


@click.command()
@click.argument("paths", nargs=-1, required=True, metavar="[TARGET] FILE...")
@click.option("--data", "data_dir", type=click.Path(file_okay=False),
              help="The prepared directory whose training split to compare with  [default: "
                   "the one the model (TARGET, else the latest run) was trained on]")
@click.option("--span", "spans", multiple=True, type=int, metavar="N",
              help="Give the share of characters inside copied spans of N+ characters "
                   "(repeatable)  [default: 20 and 50]")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@runs_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or notes on stderr.")
@user_errors
def novelty(paths, data_dir, spans, as_json, runs_dir, quiet):
    """Report how much of each FILE is copied verbatim from the training text: the longest
    copied span and where it comes from, the share of characters inside long copied spans,
    and a verdict.

    The training text is the training split of the prepared directory the model was
    trained on (TARGET: a checkpoint or run directory; default: the latest run), or of
    --data DIR. Its suffix index is built on first use and kept in DIR/novelty/. FILE - is
    standard input.

    \b
      charrnn novelty samples.txt
      charrnn novelty runs/latest a.txt b.txt --json
      charrnn novelty poem.txt --data data/shakespeare --span 30
    """
    spans = check_spans(spans)
    paths = list(paths)
    target = paths.pop(0) if len(paths) > 1 and names_model(paths[0]) else None
    if len(paths) == 1 and names_model(paths[0]):
        raise CharRNNError(f"{shown(paths[0])} is a model: give the text to check after it, "
                           f"e.g. charrnn novelty {shown(paths[0])} FILE")
    texts = [(path, _read(path)) for path in paths]  # every file readable before the index
    state = None if data_dir else load_checkpoint(find_checkpoint(target, runs_dir))
    echo = None if quiet else (lambda line: click.echo(line, err=True))
    index = training_index(data_dir, state, progress=not quiet, echo=echo)
    # The text through the training text's own options (line endings, lowercasing).
    reports = [(path, novelty_report(index, index.options.apply(text), spans))
               for path, text in texts]
    if as_json:
        click.echo(json.dumps({"files": [{"file": path, **report.to_dict()}
                                         for path, report in reports]}, ensure_ascii=False))
        return
    for path, report in reports:
        for line in report.lines(path):
            click.echo(line)


def _read(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise CharRNNError(f"file not found: {shown(path)}") from None
    except IsADirectoryError:
        raise CharRNNError(f"{shown(path)} is a directory: give text files to check") from None
    except UnicodeDecodeError as e:
        raise CharRNNError(f"{shown(path)} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise CharRNNError(f"cannot read {shown(path)}: {e.strerror or e}") from None
