"""`charrnn sample`: text from a trained model."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click
from unidecode import unidecode as to_ascii

from ..core.bars import bar_terminal, progress_bar
from ..core.device import resolve_device
from ..core.errors import CharRNNError, SettingError
from ..inference.sample import Sampler, check_prime, check_settings
from ..inference.settings import DEFAULT_LENGTH
from ..inference.trained import load_model
from ..novelty.redraw import check_redraw, redraw
from ..novelty.report import novelty_report
from ..novelty.source import training_index
from .common import (
    device_option,
    runs_option,
    threads_option,
    unescape,
    user_errors,
)


@click.command()
@click.argument("target", required=False)
@click.option("-t", "--temperature", default=1.0, show_default=True, type=float,
              help="Lower is more conservative; 0 always takes the likeliest character.")
@click.option("-n", "--length", default=DEFAULT_LENGTH, show_default=True, type=int,
              help="Characters to generate.")
@click.option("-p", "--prime", default="", help="Text to start from (printed first).")
@click.option("--prime-file", type=click.Path(dir_okay=False),
              help="Read the prime from a file.")
@click.option("--top-k", default=0, show_default=True, type=int,
              help="Draw only from the k likeliest characters (0 = all).")
@click.option("--seed", type=int, help="Random seed, for the same text every time.")
@click.option("--num-samples", default=1, show_default=True, type=int,
              help="Independent samples, generated together as one batch.")
@device_option
@threads_option
@click.option("--unidecode", is_flag=True,
              help="Transliterate the prime to ASCII (automatic if the model was trained so).")
@click.option("--stop", "stops", multiple=True, metavar="STR",
              help="End each sample right after the first STR it generates (repeatable; "
                   "escapes such as \\n understood). --length stays the cap.")
@click.option("--stop-at-end", is_flag=True,
              help="End each sample where the model ends its document (models trained on "
                   "a directory or with --split-on; without it a document's end shows as a "
                   "line break).")
@runs_option
@click.option("--novelty", is_flag=True,
              help="After each sample, report on stderr how much of it is copied from the "
                   "training text (its longest copied span, where from, the share in long spans).")
@click.option("--max-copy", type=int, metavar="N",
              help="Redraw any sample whose longest span copied from the training text is "
                   "longer than N characters (the prime is not counted).")
@click.option("--tries", default=10, show_default=True, type=int,
              help="With --max-copy: draws per sample at most; then the least-copying is kept.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False),
              help="With --novelty or --max-copy: the prepared directory of the training text  "
                   "[default: the one the model was trained on]")
@click.option("-q", "--quiet", is_flag=True,
              help="Nothing on stderr but errors: no line naming the model, no progress bar.")
@user_errors
def sample(target, temperature, length, prime, prime_file, top_k, seed, num_samples, device,
           threads,
           unidecode, stops, stop_at_end, runs_dir, novelty, max_copy, tries, data_dir, quiet):
    """Generate text from a trained model, streamed as it comes.

    TARGET is a checkpoint file or a run directory (its best.pt, else last.pt); by default
    the latest run under ./runs.

    \b
      charrnn sample --temperature 0.5
      charrnn sample runs/latest -p "ROMEO:" -n 2000 --seed 1
      charrnn sample model.pt --num-samples 8 --top-k 10 --stop '\\n\\n'
      charrnn sample -t 0.5 --novelty --max-copy 40
      charrnn sample runs/headers --stop-at-end     # one whole document
    """
    with flag_names():
        check_settings(length, temperature, top_k, num_samples, seed)
        check_redraw(max_copy, tries)
        stops = _unescaped(stops)
        prime = _read_prime(prime_file) if prime_file else prime
        trained = load_model(target, runs_dir)
        prime, stops = _model_texts(trained, prime, stops, unidecode)
        index = None
        if novelty or max_copy is not None:  # before sampling: a missing index is one line
            index = training_index(data_dir, trained.state, progress=not quiet, echo=None if quiet
                                   else lambda line: click.echo(line, err=True))
        sampler = Sampler(trained.model, trained.vocab, temperature, top_k, seed,
                          resolve_device(device), stop_at_end=stop_at_end)
        announce = (lambda: None) if quiet else (lambda: click.echo(trained.line, err=True))
        if max_copy is not None:
            _redrawn(sampler, length, prime, stops, index, num_samples, max_copy, tries,
                     announce, novelty)
            return
        texts = _write(sampler, length, prime, num_samples, stops, announce, not quiet,
                       show_each=not novelty)
        if novelty:
            _print(prime, texts, [novelty_report(index, text) for text in texts],
                   printed=num_samples == 1)


FLAGS = {"prime": "the prime", "length": "--length"}  # else --name-of-the-setting


@contextlib.contextmanager
def flag_names():
    """The engine's errors under the flags of this command: top_k as --top-k."""
    try:
        yield
    except SettingError as e:
        raise e.named(FLAGS.get(e.field, "--" + e.field.replace("_", "-"))) from None


def _unescaped(stops) -> list[str]:
    if "" in stops:
        raise CharRNNError("--stop '' is empty: give the text to stop after, e.g. --stop '\\n'")
    return [unescape(s, "--stop") for s in stops]


def _model_texts(trained, prime: str, stops: list[str], unidecode: bool):
    """The prime and the stop strings as the model reads them (its text options), checked
    against its vocabulary."""
    options, vocab = trained.options, trained.vocab
    prime = to_ascii(options.apply(prime)) if unidecode else options.apply(prime)
    check_prime(vocab, prime, transliterated=unidecode)
    stops = [options.apply(s) for s in stops]
    for s in stops:
        if vocab.missing(s):
            raise CharRNNError(f"--stop {s!r} can never be generated: the model does not know "
                               + ", ".join(repr(c) for c in vocab.missing(s)))
    return prime, stops


def _redrawn(sampler: Sampler, length: int, prime: str, stops, index, num_samples: int,
             max_copy: int, tries: int, announce, novelty: bool) -> None:
    """--max-copy: the samples redrawn until each copies at most max_copy, then printed."""
    result = redraw(sampler, length, prime, stops, lambda text: novelty_report(index, text),
                    num_samples, max_copy, tries)
    announce()
    for note in result.notes(many=num_samples > 1):
        click.echo(note, err=True)
    _print(prime, result.texts, result.reports if novelty else None)


def _print(prime: str, texts: list[str], reports=None, printed: bool = False):
    """The samples (unless `printed`) on stdout, each followed by its report on stderr."""
    for i, text in enumerate(texts):
        if not printed:
            sys.stdout.write(f"{prime}{text}\n" if len(texts) == 1
                             else f"--- sample {i + 1} ---\n{prime}{text}\n")
            sys.stdout.flush()
        if reports:
            label = "novelty" if len(texts) == 1 else f"novelty of sample {i + 1}"
            for line in reports[i].lines(label):
                click.echo(line, err=True)


def _write(sampler: Sampler, length: int, prime: str, num_samples: int, stops, announce,
           progress: bool = True, show_each: bool = True) -> list[str]:
    """The samples to stdout (one is streamed); `announce` (the model's line) once
    generation has passed its own checks (memory), so that an error stays one line. Returns
    the samples, prime excluded; several are left to the caller to print unless `show_each`."""
    out = sys.stdout
    if num_samples == 1:
        parts = []
        for i, pieces in enumerate(sampler.generate(length, prime, stop=stops)):
            if i == 0:
                announce()
                out.write(prime)
            out.write(pieces[0])
            out.flush()
            parts.append(pieces[0])
        out.write("\n")
        out.flush()
        return ["".join(parts)]
    # Several samples are printed only when all are done: meanwhile, a bar on a terminal.
    bar = progress_bar(length, enabled=progress and bar_terminal(sys.stderr),
                       desc=f"{num_samples} samples", unit="char")
    try:
        texts = sampler.texts(length, prime, num_samples, stops, bar=bar)
    finally:
        bar.close()
    announce()
    if show_each:
        _print(prime, texts)
    return texts


def _read_prime(path: str) -> str:
    if Path(path).exists() and not Path(path).is_file():  # a FIFO would block for ever
        raise CharRNNError(f"--prime-file {path} is not a regular file")
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CharRNNError(f"cannot read --prime-file {path}: {e}") from None
