"""`charrnn neurons`: which cells of a trained model track quotes, brackets, comments, the
position in the line, and features of the user's own; pictures of them over the text."""

from __future__ import annotations

import json
import sys
from contextlib import closing
from pathlib import Path

import click

from ..core.bars import bar_terminal, progress_bar
from ..core.device import resolve_device
from ..core.errors import CharRNNError
from ..core.escape import shown
from ..core.outputs import guard_output
from ..core.runs import names_model
from ..inference.score import read_ids
from ..inference.trained import load_model
from ..neurons.features import compile_feature, parse_feature
from ..neurons.report import report_lines
from ..neurons.scan import scan_cells
from .common import device_option, runs_option, threads_option, user_errors


@click.command("neurons")
@click.argument("paths", nargs=-1, required=True, metavar="[TARGET] FILE")
@click.option("--feature", "features", multiple=True, metavar="NAME=REGEX",
              help="A feature of your own: the cell should be on inside each match, e.g. "
                   "--feature 'tag=<[^>]*>' (repeatable).")
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True,
              help="Cells shown per feature.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False),
              help="Write a page of the top cells coloured over the text, and beside it a "
                   "PNG of the top panels (the PNG needs the [plot] extra).")
@click.option("--show", type=click.IntRange(min=100), default=2000, show_default=True,
              help="Characters of the held-out half the page colours.")
@click.option("--unknown", "unk", type=click.Choice(["error", "skip"]), default="error",
              show_default=True, help="Characters outside the model's vocabulary: an error, "
                                      "or left out.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Streams the text is cut into for speed.")
@device_option
@threads_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@runs_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@user_errors
def neurons(paths, features, top, html_path, show, unk, batch_size, device, threads, as_json,
            runs_dir, quiet):
    """Find the cells that track features of a text, with held-out correlations.

    Runs the model over FILE and records every cell of every layer (LSTM: c and h; GRU
    and RNN: h). Cells are chosen on the first half of the text; r is reported on the
    second, which did not choose them. Also prints each layer's gate saturation. TARGET
    is a checkpoint, a run directory or a runs directory (default: the latest run).

    \b
      charrnn neurons war_and_peace.txt
      charrnn neurons runs/latest page.html --feature 'tag=<[^>]*>' --json
      charrnn neurons code.c --html cells.html
    """
    target, path = _split_target(list(paths))
    regexes = _feature_regexes(features)
    if html_path:  # refused before the pass, not after minutes of it
        _check_html_path(html_path, path)
    trained = load_model(target, runs_dir)
    model, vocab = trained.model, trained.vocab
    name, ids, skipped = _read(path, trained.options, vocab, unk == "skip")
    text = "".join(vocab.chars[i] for i in ids.tolist())  # what the model reads
    dev = resolve_device(device)
    show_bar = not quiet and bar_terminal(sys.stderr)
    with closing(progress_bar(len(ids), show_bar, f"neurons {shown(Path(name).name)}")) as bar:
        scan = scan_cells(model, text, ids, regexes, top, batch_size, device=dev, bar=bar)
    if as_json:
        out = {"checkpoint": str(trained.path), "file": name, "skipped": skipped,
               **scan.to_dict()}
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(trained.line)
        for line in report_lines(scan, name):
            click.echo(line)
    if html_path:
        _pictures(Path(html_path), model, text, ids, scan, show, dev, name, trained.line,
                  quiet or as_json)


def _split_target(paths: list[str]) -> tuple[str | None, str]:
    """(the model named first, or None for the latest run; the one text FILE)."""
    target = paths.pop(0) if len(paths) == 2 and names_model(paths[0]) else None
    if len(paths) != 1:
        raise CharRNNError("give one text file, after the model if any: charrnn neurons "
                           "[TARGET] FILE")
    return target, paths[0]


def _feature_regexes(features: tuple[str, ...]) -> dict[str, str]:
    """{name: pattern} of the --feature NAME=REGEX options, each compiled once to check it."""
    regexes = {}
    for spec in features:
        name, pattern = parse_feature(spec)
        compile_feature(name, pattern)
        if name in regexes:
            raise CharRNNError(f"--feature {name} is given twice")
        regexes[name] = pattern
    return regexes


def _check_html_path(html_path: str, text_path: str) -> None:
    """Refuse an --html page (or the PNG beside it) that would replace the text read or a
    run's file, or that is not a .html file name."""
    for out in (html_path, Path(html_path).with_suffix(".png")):
        guard_output(out, reads=[text_path], what="--html")
    if html_path == "-" or not html_path.endswith((".html", ".htm")):
        raise CharRNNError(f"--html {html_path}: give a file name ending in .html (the PNG "
                           f"goes beside it, .png)")


def _pictures(path: Path, model, text, ids, scan, show, dev, name, model_line, quiet) -> None:
    """Write the page of the top cells over the text, and the PNG of its panels beside it."""
    from ..neurons.page import write_page, write_png
    panels = write_page(path, model, text, ids, scan, show, dev, name, model_line)
    png = path.with_suffix(".png")
    note = write_png(png, panels)
    if not quiet:
        click.echo(f"wrote {shown(path)}" + (f" and {shown(png)}" if note is None else ""),
                   err=True)
    if note is not None:
        click.echo(note, err=True)


def _read(path: str, options, vocab, skip_unknown: bool):
    """(name, ids, skipped) of the text FILE."""
    if path == "-":
        return "<stdin>", *read_ids(sys.stdin.buffer, "<stdin>", options, vocab, skip_unknown)
    p = Path(path)
    if names_model(p):
        raise CharRNNError(f"{p} is a model: give the text after it, e.g. charrnn neurons "
                           f"{p} FILE")
    if not p.is_file():
        raise CharRNNError(f"not found: {p}" if not p.exists() else f"not a text file: {p}")
    try:
        with open(p, "rb") as raw:
            return str(p), *read_ids(raw, str(p), options, vocab, skip_unknown)
    except OSError as e:
        raise CharRNNError(f"cannot read {p}: {e.strerror}") from None
