"""`charrnn prepare`: text files -> vocabulary and encoded splits."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..core.bars import bar_terminal
from ..core.errors import CharRNNError
from ..core.escape import shown
from ..core.files import terminate_as_exit
from ..corpus.prepare import prepare as run_prepare
from ..corpus.prepare import summary
from ..corpus.vocab import Vocab
from .common import (
    AliasedOption,
    text_option_flags,
    text_options,
    user_errors,
    vocab_from,
)


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", "out", type=click.Path(file_okay=False), cls=AliasedOption,
              aliases=("--out",), help="Output directory  [default: data/<corpus stem>]")
@click.option("--val-frac", default=0.1, show_default=True, type=float,
              help="Fraction of the text, from the end, held out for validation.")
@click.option("--test-frac", default=0.0, show_default=True, type=float,
              help="Fraction held out for testing, after the validation split.")
@click.option("--glob", default="*", show_default=True,
              help="Which files to take from directories given as input (recursively).")
@click.option("--vocab", "vocab_file", type=click.Path(),
              help="Reuse a vocabulary instead of building one (for fine-tuning): a "
                   "vocab.json, a checkpoint or a run directory.")
@click.option("--unk", help="With --vocab: map characters outside it to this character.")
@click.option("--split-on", type=click.Choice(["file", "line", "blankline"]), default="file",
              show_default=True,
              help="What a document is: each file, each line, or each paragraph (lines "
                   "up to a blank line). The model learns where documents start and end.")
@click.option("--strict", is_flag=True,
              help="Refuse a directory's files that are binary or not text in the encoding "
                   "(by default they are skipped and counted).")
@text_option_flags
@user_errors
def prepare(inputs, out, val_frac, test_frac, glob, vocab_file, unk, split_on, strict,
            encoding, lower, unidecode, keep_crlf):
    """Build the vocabulary and encoded train/val splits from text files.

    INPUTS are files, directories (searched recursively, see --glob) or - for standard input.

    \b
      charrnn prepare corpus.txt              # -> data/corpus/
      charrnn prepare books/ --glob '*.txt' -o data/books   # each file a document
      charrnn prepare tweets.txt --split-on line          # each line a document
      cat *.txt | charrnn prepare - -o data/all
    """
    if unk is not None and vocab_file is None:
        raise CharRNNError("--unk only applies with --vocab FILE")
    if unk is not None and len(unk) != 1:
        raise CharRNNError(f"--unk must be a single character, got {unk!r}")
    if out is None:
        out = Path("data") / ("stdin" if inputs[0] == "-" else Path(inputs[0]).stem or "corpus")
    vocab = vocab_from(vocab_file) if vocab_file else None
    options = text_options(encoding, lower, unidecode, keep_crlf)
    with terminate_as_exit():  # a SIGTERM still removes the spool of standard input
        meta = run_prepare(list(inputs), out, val_frac=val_frac, test_frac=test_frac,
                           options=options, glob=glob, vocab=vocab, unk=unk,
                           progress=bar_terminal(sys.stderr), replace_vocab=False,
                           split_on=split_on, strict=strict)
    for line in report_lines(meta, out):
        click.echo(line)


def report_lines(meta: dict, out) -> list[str]:
    """What was read: files, megabytes, seconds, documents, and the files skipped."""
    files = meta.get("files", len(meta["sources"]))
    mb = meta.get("bytes", sum(s.get("bytes", 0) for s in meta["sources"])) / 1e6
    lines = [f"prepared {files:,} file(s), {mb:,.1f} MB in {meta['seconds']:.1f}s "
             f"-> {shown(out)}/"]
    if "documents" in meta:
        cut = ("whole documents" if meta["split_by"] == "documents"
               else "cut by characters (too few documents to split whole)")
        lines.append(f"documents: {meta['documents']:,} (each {meta['split_on']}); "
                     f"validation: {cut}")
    if meta.get("skipped"):
        names = ", ".join(shown(n) for n in meta["skipped_shown"])
        more = ", ..." if meta["skipped"] > len(meta["skipped_shown"]) else ""
        lines.append(f"skipped {meta['skipped']:,} file(s) that are binary or not "
                     f"{meta['options']['encoding']} text: {names}{more} (--strict refuses them)")
    return lines + summary(meta, Vocab.load(Path(out) / "vocab.json"))
