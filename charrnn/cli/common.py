"""What the commands share: the error decorator, text-option flags, and how a path is
told to be a model or a text."""

from __future__ import annotations

import functools
import os
import re
import sys
from pathlib import Path

import click

from ..core.checkpoint import load_checkpoint
from ..core.errors import CharRNNError
from ..core.escape import shown
from ..core.runs import find_checkpoint
from ..corpus.text import TextOptions
from ..corpus.vocab import Vocab
from ..inference.trained import vocab_of


def user_errors(func):
    """Turn library errors into click errors (one line, exit status 1)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except CharRNNError as e:  # names from disk in it are shown escaped (core/escape.py)
            raise click.ClickException(shown(e)) from None
        except BrokenPipeError:
            # The reader went away (| head): a normal end. Point stdout at /dev/null so the
            # interpreter's final flush does not fail on the closed pipe too.
            to_devnull(sys.stdout)
            sys.exit(0)
        except OSError as e:
            # A file-system failure the library did not foresee still gets one line.
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(shown(f"{where}{e.strerror or e}")) from None
        except MemoryError:
            raise click.ClickException("out of memory; use a smaller model, --batch-size or "
                                       "--num-samples") from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def to_devnull(stream) -> None:
    """Send what is still written to `stream` (a closed pipe) nowhere, so that it cannot
    fail again, not even in the interpreter's flush at exit."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    except (OSError, ValueError):
        pass


# Options several commands share, with the same help everywhere.
device_option = click.option("--device", default="auto", show_default=True,
                             help="auto, cpu, cuda, cuda:N or mps.")
runs_option = click.option("--runs", "runs_dir", default="runs", show_default=True,
                           type=click.Path(), help="The runs directory: its latest run is "
                                                   "taken when TARGET is not given.")


def _set_threads(ctx, param, value):
    from ..core.cpu import apply_threads
    return apply_threads(value or 0)


# Set as the options are parsed, before any kernel runs; the command gets the count set.
threads_option = click.option(
    "--threads", type=click.IntRange(min=0), default=0, callback=_set_threads,
    help="CPU threads for the kernels  [default: OMP_NUM_THREADS if set, else 1 on up to 2 "
         "cores (a busy neighbour stalls more), one less than the cores above that]")


def text_options(encoding, lower, unidecode, keep_crlf):
    return TextOptions(encoding=encoding, lower=lower, unidecode=unidecode, keep_crlf=keep_crlf)


def vocab_from(path: str):
    """A vocab.json, or the vocabulary a checkpoint (or a run directory's) carries."""
    p = Path(path)
    if p.is_dir() or p.suffix == ".pt":
        return vocab_of(load_checkpoint(find_checkpoint(p)))
    return Vocab.load(p)


def text_option_flags(func):
    for decorator in reversed([
        click.option("--encoding", default="utf-8", show_default=True,
                     help="Encoding of the input files."),
        click.option("--lower", is_flag=True, help="Lowercase the text."),
        click.option("--unidecode", is_flag=True,
                     help="Transliterate to ASCII first (e.g. é -> e, « -> <<)."),
        click.option("--keep-crlf", is_flag=True,
                     help="Keep Windows line endings (by default \\r\\n becomes \\n)."),
    ]):
        func = decorator(func)
    return func



_ESCAPE = re.compile(r"\\(?:[\\'\"abfnrtv]|[0-7]{1,3}|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}"
                     r"|U[0-9a-fA-F]{8}|N\{[^}]+\})")


def unescape(text: str, flag: str) -> str:
    """Backslash escapes (\\n, \\t, \\u00e9) in a command-line string; other text as is. A
    backslash that starts no escape is an error: \\\\ for a backslash itself."""
    at = text.find("\\")
    while at >= 0:
        escape = _ESCAPE.match(text, at)
        if escape is None:  # shown as typed: repr() would double every backslash
            raise CharRNNError(f"{flag} '{text}': bad escape at '{text[at:at + 2]}'; "
                               f"write \\\\ for a backslash")
        at = text.find("\\", escape.end())
    try:
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError as e:
        raise CharRNNError(f"{flag} {text!r}: bad escape ({e.reason})") from None


class AliasedOption(click.Option):
    """An option whose old spellings (`aliases`) still work but are not shown in --help:
    scripts written against them keep running."""

    def __init__(self, *args, aliases: tuple[str, ...] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.aliases = list(aliases)
        self.opts += self.aliases  # the parser is built from opts on every call

    def get_help_record(self, ctx):
        shown, self.opts = self.opts, [o for o in self.opts if o not in self.aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown
