"""`charrnn train`: a new run, or one continued with --resume."""

from __future__ import annotations

import sys

import click

from ..core.bars import bar_terminal
from ..core.checkpoint import config_of
from ..core.config import flags
from ..core.config_files import load_config, nest, parse_set
from ..core.device import resolve_device
from ..core.errors import CharRNNError
from ..core.presets import choose_preset
from ..core.runs import check_run_name
from ..corpus.prepared import open_corpus
from ..inference.trained import text_options_of, vocab_of
from ..training.finetune import fine_tuning
from ..training.run import last_checkpoint, resume
from ..training.run import train as run_train
from .common import (
    AliasedOption,
    text_option_flags,
    text_options,
    to_devnull,
    user_errors,
)


def config_flags(func):
    """One option per config key that has a flag (config.flags(): help, choices and names
    live with the fields), passed to the command as `flags` {param name: value}. The
    default shown is the config's own (before any -c file): the flag's value is None when
    not given, so that only given flags override the file."""
    kinds = {"int": int, "float": float, "str": str, "int | str": str}
    for flag in reversed(flags()):
        name = flag.flag[2:].replace("-", "_")
        default = flag.default if flag.default != "" else "none"
        help = f"{flag.help}  [default: {str(default).lower() if flag.type == 'bool' else default}]"
        if flag.type == "bool":
            option = click.option(f"{flag.flag}/--no-{flag.flag[2:]}", name, default=None,
                                  help=help)
        else:
            option = click.option(flag.flag, name, help=help,
                                  type=click.Choice(flag.choices) if flag.choices
                                  else kinds[flag.type])
        func = option(func)
    return func


def _flag_overrides(values: dict) -> dict:
    """{param name: value} of the config flags given -> {config key: value}."""
    keys = {f.flag[2:].replace("-", "_"): f.key for f in flags()}
    return {keys[name]: value for name, value in values.items() if value is not None}


@click.command()
@click.argument("corpus", required=False)
@click.option("-c", "--config", "config_file",
              help="A TOML config file, or a shipped preset by name: tiny, cpu, gpu.")
@config_flags
@click.option("--set", "assignments", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Set any config value, e.g. --set train.eval_every=200 (repeatable).")
@click.option("--runs", "runs_dir", cls=AliasedOption, aliases=("--out",), default="runs", show_default=True,
              type=click.Path(), help="The runs directory: where run directories go.")
@click.option("--name", help="Run directory name  [default: <time>-<corpus>]")
@click.option("--resume", "resume_dir", type=click.Path(),
              help="Continue the run in this directory from its last.pt.")
@click.option("--unk", help="With --init-from and a text CORPUS: map characters outside the "
                            "checkpoint's vocabulary to this one.")
@click.option("--data-dir", default="data", show_default=True, type=click.Path(),
              help="Where a raw text CORPUS is prepared.")
@click.option("--val-frac", default=0.1, show_default=True, type=float,
              help="Validation fraction when preparing a raw text CORPUS.")
@text_option_flags
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@user_errors
def train(corpus, config_file, assignments, runs_dir, name, resume_dir, unk, data_dir,
          val_frac, encoding, lower, unidecode, keep_crlf, quiet, **flags):
    """Train a model on CORPUS: a text file (prepared on the fly) or a prepared directory.

    Without -c, the shipped preset for this machine (cpu; cpu-bf16 on a CPU with bf16 units;
    gpu on a GPU) trains until the validation loss stops improving (--patience 5) or Ctrl-C; with a limit of your own
    (--max-time, --max-steps, ...) it stops there instead. The [default: ...] values below
    are charrnn's own: a preset sets its own on top (-c cpu: a 2x256 GRU, lr 0.003), then
    the flags; the run's first lines say what it took.

    Each run writes runs/<name>/ with config.toml, metrics.jsonl, best.pt and last.pt, and
    points runs/latest at it. Ctrl-C saves last.pt; --resume continues from it, and accepts
    the same config file and flags again (only limits, logging, evaluation, device and
    learning-rate settings may differ; --max-time is the run's total training time).

    \b
      charrnn train corpus.txt
      charrnn train corpus.txt -c cpu --max-time 10m
      charrnn train data/corpus --hidden-size 512 --set train.eval_every=200
      charrnn train --resume runs/latest --max-steps 20000
    """
    overrides = _overrides(flags, assignments)
    echo = (lambda *a, **k: None) if quiet else _echo_while_open()
    options = text_options(encoding, lower, unidecode, keep_crlf)
    corpus_args = dict(data_dir=data_dir, val_frac=val_frac, unk=unk, echo=echo,
                       progress=not quiet)
    if resume_dir is not None:
        result = _continue(resume_dir, corpus, config_file, overrides, **corpus_args)
    elif corpus is None:
        raise CharRNNError("give a CORPUS (text file or prepared directory), or --resume RUN_DIR")
    else:
        result = _start(corpus, config_file, overrides, options, runs_dir, name, **corpus_args)
    if result.run_dir is None:  # not the main process under torchrun
        return
    echo(result.summary())
    if result.reason == "interrupted":
        sys.exit(128 + (result.signal or 2))
    if result.reason == "diverged":
        sys.exit(1)


def _overrides(flags: dict, assignments) -> dict:
    """The config keys the flags set, then each --set KEY=VALUE (a key set by both is the
    --set's, as it comes later)."""
    overrides = _flag_overrides(flags)
    for assignment in assignments:
        key, value = parse_set(assignment)
        overrides[key] = value
    return overrides


def _start(corpus, config_file, overrides, options, runs_dir, name, *, data_dir, val_frac,
           unk, echo, progress):
    """A new run (fine-tuning with train.init_from)."""
    if name is not None:
        check_run_name(name)  # before a corpus is prepared
    data = None
    if config_file is None:
        flags_only = load_config(None, overrides)  # the flags valid on their own first
        if unk is not None and not flags_only.train.init_from:
            raise CharRNNError("--unk only applies with --init-from")
        if not flags_only.train.init_from:  # the preset depends on the text's size
            data = _open(corpus, data_dir, options, val_frac, progress, echo, None, unk)
        config_file, overrides = _default_run(overrides, echo, data)
    cfg = load_config(config_file, overrides)
    vocab = init = None
    if cfg.train.init_from:
        cfg, vocab, options, init = fine_tuning(cfg, set(overrides))
    elif unk is not None:
        raise CharRNNError("--unk only applies with --init-from")
    if data is None:
        data = _open(corpus, data_dir, options, val_frac, progress, echo, vocab, unk)
    return run_train(cfg, data, runs_dir=runs_dir, name=name, echo=echo, progress=progress,
                     init=init)


def _open(corpus, data_dir, options, val_frac, progress, echo, vocab, unk):
    return open_corpus(corpus, data_dir, options, val_frac,
                       progress=bar_terminal(sys.stderr) and progress, echo=echo, vocab=vocab,
                       unk=unk)


def _echo_while_open():
    """click.echo, until the stream it writes to is closed (`charrnn train ... | head`):
    then the run goes on without progress lines, as with -q, rather than dying before it
    has saved anything, and says so once on stderr if stderr is still open."""
    closed = False

    def echo(*args, **kwargs):
        nonlocal closed
        if closed:
            return
        try:
            click.echo(*args, **kwargs)
        except BrokenPipeError:
            closed = True
            # Later writes, and the flush at exit, go nowhere instead of failing again.
            to_devnull(sys.stderr if kwargs.get("err") else sys.stdout)
            try:
                click.echo("charrnn train: an output was closed; training goes on without "
                           "progress lines (Ctrl-C or kill saves last.pt and stops it)",
                           err=True)
            except OSError:  # stderr is the same closed pipe (2>&1)
                to_devnull(sys.stderr)
    return echo


DEFAULT_PATIENCE = 5  # evaluations without a better validation loss before a default run stops


def _default_run(overrides: dict, echo, data) -> tuple[str, dict]:
    """No -c: the shipped preset for this machine and text (core/presets.py: the device,
    the CPU's features and the text's size; never a timing), without its 5-minute budget:
    it runs until the validation loss stops improving (patience) or Ctrl-C, unless the
    flags set limits of their own."""
    device = resolve_device(overrides.get("train.device", "auto"))
    train_chars = None if data is None else data.meta["splits"]["train"]
    name, why = choose_preset(device, train_chars)
    limits = {"train.max_steps", "train.max_epochs", "train.max_time", "train.patience"}
    given = limits & set(overrides)
    overrides = {"train.max_time": "", **overrides}
    if not given:
        overrides["train.patience"] = DEFAULT_PATIENCE
        stop = (f"it stops after {DEFAULT_PATIENCE} evaluations without a better validation "
                f"loss, or on Ctrl-C")
    else:
        stop = "it stops at the limits given (--patience N adds early stopping)"
    echo(f"config: the {name} preset ({why}; -c tiny|cpu|cpu-bf16|gpu|FILE chooses "
         f"another); {stop}")
    return name, overrides


def _continue(resume_dir, corpus, config_file, overrides, *, data_dir, val_frac, unk, echo,
              progress):
    """--resume: the run's own data, or CORPUS encoded the way the run's text was (its
    text options, and a fine-tuned run's vocabulary)."""
    load_config(config_file, overrides)  # the file and flags valid on their own first
    state = last_checkpoint(resume_dir)
    data = None
    if corpus:
        tuned = bool(config_of(state).train.init_from)
        data = open_corpus(corpus, data_dir, text_options_of(state), val_frac, echo=echo,
                           vocab=vocab_of(state) if tuned else None, unk=unk)
    return resume(resume_dir, nest(overrides) if overrides else {}, state=state,
                  config_file=config_file, data=data, echo=echo, progress=progress)
