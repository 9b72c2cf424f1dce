"""`charrnn eval`: score text with a trained model."""

from __future__ import annotations

import json
import sys
from contextlib import closing
from pathlib import Path

import click
import numpy as np

from ..core.bars import bar_terminal, progress_bar
from ..core.device import resolve_device
from ..core.errors import CharRNNError, DataError
from ..core.escape import shown
from ..core.precision import resolve_precision
from ..core.runs import names_model
from ..corpus.inputs import SNIFF_BYTES, looks_binary, walk
from ..corpus.prepared import PreparedData
from ..corpus.text import DecodeError
from ..inference.score import (
    DYNAMIC_LR,
    Score,
    dynamic_score,
    read_ids,
    score_ids,
    total,
)
from ..inference.trained import load_model
from .common import (
    AliasedOption,
    device_option,
    runs_option,
    threads_option,
    user_errors,
)


@click.command("eval")
@click.argument("paths", nargs=-1, required=True, metavar="[TARGET] FILE...")
@click.option("--split", type=click.Choice(["test", "val", "train"]),
              help="For a prepared directory as FILE: the split to score  [default: test "
                   "when it has one, else val]")
@click.option("--unknown", "unk", type=click.Choice(["error", "skip"]), default="error",
              show_default=True, cls=AliasedOption, aliases=("--unk",),
              help="Characters outside the model's vocabulary: an error, or left out of "
                   "the score (and counted).")
@click.option("--batch-size", type=int,
              help="Streams the text is cut into for speed  [default: the run's "
                   "train.eval_batch_size, so a validation split scores as in training]")
@click.option("--context", type=int,
              help="Characters each stream reads, unscored, before its first scored one  "
                   "[default: the run's train.eval_context, 512]")
@click.option("--dynamic", is_flag=True,
              help="Also dynamic evaluation: after scoring each chunk, one gradient step on "
                   "it, so the model adapts as it reads (the checkpoint is not modified).")
@click.option("--dynamic-lr", type=float, default=None,
              help="Learning rate of dynamic evaluation's SGD steps  [default: 0.1]")
@device_option
@threads_option
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32",
              show_default=True,
              help="What the recurrent layers compute in: fp32 gives the figure training "
                   "reports; bf16 is faster on hardware with bf16 units (within 0.01 "
                   "nats/char).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@runs_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no notes on stderr.")
@user_errors
def eval_command(paths, split, unk, batch_size, context, dynamic, dynamic_lr, device, threads,
                 precision, as_json, runs_dir, quiet):
    """Score text files with a trained model: nats/char, bits/char, perplexity.

    TARGET is a checkpoint, a run directory or a runs directory, as for `sample` (default:
    the latest run). Each FILE is a text file, - for standard input, a prepared
    directory (one of its splits), or a directory of text files (a figure per file, and the
    total). The text goes through the model's own text options.

    \b
      charrnn eval data.txt
      charrnn eval runs/latest a.txt b.txt --json
      charrnn eval data/corpus --split val      # the validation loss training reports
      charrnn eval notes.txt --dynamic
      charrnn eval runs/headers include/ --json # each file, then the total
    """
    target, paths = _split_target(list(paths))
    lr = _check_numbers(batch_size, context, dynamic_lr)
    trained = load_model(target, runs_dir)
    dev = resolve_device(device)
    _set_precision(trained.model, precision, dev, quiet)
    texts = _gather_texts(paths, trained.options, trained.vocab, split, unk == "skip",
                          as_json or quiet)
    t = trained.header.config.train
    context = t.eval_context if context is None else context
    static, dynamic_scores = _score_texts(
        trained.model, texts, t, dev, batch_size=batch_size, context=context,
        lr=lr if dynamic else None, show=not quiet and bar_terminal(sys.stderr),
        notes=not (as_json or quiet))
    _report(trained.path, trained.line, static, dynamic_scores, lr, as_json)


def _score_texts(model, texts: list, t, dev, *, batch_size: int | None, context: int,
                 lr: float | None, show: bool, notes: bool) -> tuple[list, list | None]:
    """(static scores, dynamic scores or None) of each text; dynamic evaluation runs when
    `lr` is given. `t` is the run's train config (sequence length, default batch size)."""
    static, dynamic = [], [] if lr is not None else None
    for name, ids, skipped in texts:
        with closing(progress_bar(len(ids) - 1, show, f"eval {shown(Path(name).name)}")) as bar:
            score = score_ids(model, ids, batch_size or t.eval_batch_size, t.seq_len, dev, name,
                              skipped, context, bar)
        if batch_size and score.streams < batch_size and notes:
            click.echo(f"{shown(name)}: {score.streams} stream(s), not {batch_size}: each stream is "
                       f"at least {context} characters (--context)", err=True)
        static.append(score)
        if dynamic is not None:
            with closing(progress_bar(len(ids) - 1, show, f"dynamic {Path(name).name}")) as bar:
                dynamic.append(dynamic_score(model, ids, t.seq_len, dev, lr, name, skipped, bar))
    return static, dynamic


def _split_target(paths: list[str]) -> tuple[str | None, list[str]]:
    """(the model named first, or None for the latest run; the texts to score)."""
    target = paths.pop(0) if len(paths) > 1 and names_model(paths[0]) else None
    if target is None and len(paths) == 1 and names_model(paths[0]):
        raise CharRNNError(f"{paths[0]} is a model: give the text to score after it, e.g. "
                           f"charrnn eval {paths[0]} FILE")
    return target, paths


def _set_precision(model, precision: str, dev, quiet: bool) -> None:
    """Make the recurrent layers compute in `precision` where the device allows it, and say
    on stderr when it does not."""
    plan = resolve_precision(precision, dev, model.cell)
    model.recurrent_dtype = plan.cast
    if plan.why and not quiet:
        click.echo(f"--precision {precision}: {plan.why}", err=True)


def _gather_texts(paths: list[str], options, vocab, split: str | None, skip_unknown: bool,
                  quiet: bool) -> list:
    """(name, ids, skipped) of each text to score: a directory of text files gives one per
    file, any other argument (a file, -, a prepared directory) one."""
    texts = []
    for p in paths:
        if (p != "-" and Path(p).is_dir() and not (Path(p) / "meta.json").exists()
                and not names_model(Path(p))):
            texts += _directory_texts(p, options, vocab, skip_unknown, quiet)
        else:
            texts.append(_eval_text(p, options, vocab, split, skip_unknown))
    return texts


def _check_numbers(batch_size, context, dynamic_lr) -> float:
    """Refuse values out of range; the dynamic evaluation rate to use."""
    if batch_size is not None and batch_size < 1:
        raise CharRNNError(f"--batch-size must be >= 1, got {batch_size}")
    if context is not None and context < 0:
        raise CharRNNError(f"--context must be >= 0, got {context}")
    lr = DYNAMIC_LR if dynamic_lr is None else dynamic_lr
    if not (lr > 0 and lr < float("inf")):
        raise CharRNNError(f"--dynamic-lr must be a positive number, got {dynamic_lr}")
    return lr


def _report(path: Path, which: str, static: list[Score], dynamic: list[Score] | None,
            lr: float, as_json: bool) -> None:
    """The scores as lines, or as one JSON object."""
    if as_json:
        out = {"checkpoint": str(path), "files": [s.to_dict() for s in static]}
        if len(static) > 1:
            out["total"] = total("total", static).to_dict()
        if dynamic is not None:
            out["dynamic_lr"] = lr
            out["dynamic"] = [s.to_dict() for s in dynamic]
            if len(static) > 1:
                out["dynamic_total"] = total("total", dynamic).to_dict()
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(which)  # the same line as sample's: the run resolved, its step and loss
    rows = [(static, "")] + ([(dynamic, f"dynamic (lr {lr:g}) ")] if dynamic is not None else [])
    for scores, label in rows:
        for s in scores:
            click.echo(f"{label}{shown(s.name)}: {s.line()}")
        if len(scores) > 1:
            click.echo(f"{label}total: {total('total', scores).line()}")


def _eval_text(path: str, options, vocab, split: str | None, skip_unknown: bool):
    """(name, ids, skipped) of one FILE argument of `eval`."""
    p = Path(path)
    if path != "-" and names_model(p):
        raise CharRNNError(f"{p} is a model, not a text to score: give one model, then the "
                           f"texts, e.g. charrnn eval {p} FILE")
    if path != "-" and p.is_dir():
        data = PreparedData(p)
        if data.vocab.chars != vocab.chars:
            raise CharRNNError(f"{p} is not encoded with the model's vocabulary; score its "
                               f"text file instead")
        name = split or ("test" if data.meta["splits"].get("test") else "val")
        return f"{p}:{name}", data.split(name), 0
    if path == "-":
        ids, skipped = read_ids(sys.stdin.buffer, "<stdin>", options, vocab, skip_unknown)
        return "<stdin>", _as_document(ids, vocab), skipped
    if not p.is_file():
        raise CharRNNError(f"not found: {p}" if not p.exists() else f"not a text file: {p}")
    try:
        with open(p, "rb") as raw:
            ids, skipped = read_ids(raw, str(p), options, vocab, skip_unknown)
    except OSError as e:
        raise CharRNNError(f"cannot read {p}: {e.strerror}") from None
    return str(p), _as_document(ids, vocab), skipped


def _as_document(ids: np.ndarray, vocab) -> np.ndarray:
    """A text as a model of documents reads one: after the end-of-document mark, as in
    training (the mark is context, not scored)."""
    if vocab.end is None:
        return ids
    return np.concatenate([np.array([vocab.end], dtype=ids.dtype), ids])


def _directory_texts(root: str, options, vocab, skip_unknown: bool, quiet: bool) -> list:
    """(name, ids, skipped) of each text file under `root`, as `prepare` would take them:
    binary files, files that do not decode and files of fewer than 2 characters are left
    out, and counted on stderr."""
    texts, left_out = [], []
    for entry, rel in walk(Path(root), "*"):
        name = str(Path(root) / rel)
        try:
            with open(entry.path, "rb") as raw:
                if looks_binary(raw.read(SNIFF_BYTES), options.encoding):
                    left_out.append(name)
                    continue
                raw.seek(0)
                ids, skipped = read_ids(raw, name, options, vocab, skip_unknown)
        except (DecodeError, OSError):
            left_out.append(name)
            continue
        except DataError as e:
            if "nothing to score" not in str(e):
                raise
            left_out.append(name)
            continue
        texts.append((name, _as_document(ids, vocab), skipped))
    if left_out and not quiet:
        click.echo(f"{shown(root)}: {len(left_out):,} file(s) left out (binary, not "
                   f"{options.encoding} text, or too short): "
                   + ", ".join(shown(n) for n in left_out[:3])
                   + (", ..." if len(left_out) > 3 else ""), err=True)
    if not texts:
        raise CharRNNError(f"{root} holds no text file to score")
    return texts
