"""The `charrnn` command: prepare, train, sample. Each command parses its options, calls one
library function and reports; errors the user can fix exit with one line, no traceback."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from .errors import CharRNNError


def _user_errors(func):
    """Turn library errors into click errors (one line, exit status 1)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except CharRNNError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            # A file-system failure the library did not foresee still gets one line.
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(f"{where}{e.strerror or e}") from None
        except MemoryError:
            raise click.ClickException("out of memory; use a smaller model, --batch-size or "
                                       "--num-samples") from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def _text_options(encoding, lower, unidecode, keep_crlf):
    from .text import TextOptions
    return TextOptions(encoding=encoding, lower=lower, unidecode=unidecode, keep_crlf=keep_crlf)


def _vocab_from(path: str):
    """A vocab.json, or the vocabulary a checkpoint (or a run directory's) carries."""
    from .checkpoint import find_checkpoint, load_checkpoint, vocab_of
    from .vocab import Vocab

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="charrnn")
def main():
    """Train character-level RNN language models on any text and sample from them.

    \b
      charrnn prepare corpus.txt
      charrnn train corpus.txt
      charrnn sample --temperature 0.5
    """


# ----------------------------------------------------------------------------------------


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", type=click.Path(file_okay=False),
              help="Output directory  [default: data/<corpus stem>]")
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
@text_option_flags
@_user_errors
def prepare(inputs, out, val_frac, test_frac, glob, vocab_file, unk, encoding, lower,
            unidecode, keep_crlf):
    """Build the vocabulary and encoded train/val splits from text files.

    INPUTS are files, directories (searched recursively, see --glob) or - for standard input.

    \b
      charrnn prepare corpus.txt              # -> data/corpus/
      charrnn prepare books/ --glob '*.txt' -o data/books
      cat *.txt | charrnn prepare - -o data/all
    """
    from .prepare import prepare as run_prepare
    from .prepare import summary
    from .vocab import Vocab

    if unk is not None and vocab_file is None:
        raise CharRNNError("--unk only applies with --vocab FILE")
    if unk is not None and len(unk) != 1:
        raise CharRNNError(f"--unk must be a single character, got {unk!r}")
    if out is None:
        out = Path("data") / ("stdin" if inputs[0] == "-" else Path(inputs[0]).stem or "corpus")
    vocab = _vocab_from(vocab_file) if vocab_file else None
    options = _text_options(encoding, lower, unidecode, keep_crlf)
    meta = run_prepare(list(inputs), out, val_frac=val_frac, test_frac=test_frac,
                       options=options, glob=glob, vocab=vocab, unk=unk,
                       progress=sys.stderr.isatty())
    mb = sum(s["bytes"] for s in meta["sources"]) / 1e6
    click.echo(f"prepared {len(meta['sources'])} file(s), {mb:,.1f} MB in {meta['seconds']:.1f}s "
               f"-> {out}/")
    for line in summary(meta, Vocab.load(Path(out) / "vocab.json")):
        click.echo(line)


# ----------------------------------------------------------------------------------------

def config_flags(func):
    """One option per config key that has a flag (config.flags(): help, choices and names
    live with the fields), passed to the command as `flags` {param name: value}."""
    from .config import flags

    kinds = {"int": int, "float": float, "str": str}
    for flag in reversed(flags()):
        name = flag.flag[2:].replace("-", "_")
        if flag.type == "bool":
            option = click.option(f"{flag.flag}/--no-{flag.flag[2:]}", name, default=None,
                                  help=flag.help)
        else:
            option = click.option(flag.flag, name, help=flag.help,
                                  type=click.Choice(flag.choices) if flag.choices
                                  else kinds[flag.type])
        func = option(func)
    return func


def _flag_overrides(values: dict) -> dict:
    """{param name: value} of the config flags given -> {config key: value}."""
    from .config import flags

    keys = {f.flag[2:].replace("-", "_"): f.key for f in flags()}
    return {keys[name]: value for name, value in values.items() if value is not None}


@main.command()
@click.argument("corpus", required=False)
@click.option("-c", "--config", "config_file",
              help="A TOML config file, or a shipped preset by name: tiny, cpu, gpu.")
@config_flags
@click.option("--set", "assignments", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Set any config value, e.g. --set train.eval_every=200 (repeatable).")
@click.option("--runs", "--out", "runs_dir", default="runs", show_default=True,
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
@_user_errors
def train(corpus, config_file, assignments, runs_dir, name, resume_dir, unk, data_dir,
          val_frac, encoding, lower, unidecode, keep_crlf, quiet, **flags):
    """Train a model on CORPUS: a text file (prepared on the fly) or a prepared directory.

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
    from .config import parse_set

    overrides = _flag_overrides(flags)
    for assignment in assignments:
        key, value = parse_set(assignment)
        overrides[key] = value
    echo = (lambda *a, **k: None) if quiet else click.echo
    options = _text_options(encoding, lower, unidecode, keep_crlf)
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


def _start(corpus, config_file, overrides, options, runs_dir, name, *, data_dir, val_frac,
           unk, echo, progress):
    """A new run (fine-tuning with train.init_from)."""
    from .config import load_config
    from .data import open_corpus
    from .train import train as run_train

    cfg = load_config(config_file, overrides)
    vocab = init = None
    if cfg.train.init_from:
        from .resume import fine_tuning
        cfg, vocab, options, init = fine_tuning(cfg, set(overrides))
    elif unk is not None:
        raise CharRNNError("--unk only applies with --init-from")
    data = open_corpus(corpus, data_dir, options, val_frac,
                       progress=sys.stderr.isatty() and progress, echo=echo, vocab=vocab,
                       unk=unk)
    return run_train(cfg, data, runs_dir=runs_dir, name=name, echo=echo, progress=progress,
                     init=init)


def _continue(resume_dir, corpus, config_file, overrides, *, data_dir, val_frac, unk, echo,
              progress):
    """--resume: the run's own data, or CORPUS encoded the way the run's text was (its
    text options, and a fine-tuned run's vocabulary)."""
    from .checkpoint import config_of, text_options_of, vocab_of
    from .config import load_config, nest
    from .data import open_corpus
    from .resume import last_checkpoint, resume

    load_config(config_file, overrides)  # the file and flags valid on their own first
    state = last_checkpoint(resume_dir)
    data = None
    if corpus:
        tuned = bool(config_of(state).train.init_from)
        data = open_corpus(corpus, data_dir, text_options_of(state), val_frac, echo=echo,
                           vocab=vocab_of(state) if tuned else None, unk=unk)
    return resume(resume_dir, nest(overrides) if overrides else {}, state=state,
                  config_file=config_file, data=data, echo=echo, progress=progress)


# ----------------------------------------------------------------------------------------


@main.command()
@click.argument("target", required=False)
@click.option("-t", "--temperature", default=1.0, show_default=True, type=float,
              help="Lower is more conservative; 0 always takes the likeliest character.")
@click.option("-n", "--length", default=500, show_default=True, type=int,
              help="Characters to generate.")
@click.option("-p", "--prime", default="", help="Text to start from (printed first).")
@click.option("--prime-file", type=click.Path(dir_okay=False),
              help="Read the prime from a file.")
@click.option("--top-k", default=0, show_default=True, type=int,
              help="Draw only from the k likeliest characters (0 = all).")
@click.option("--seed", type=int, help="Random seed, for the same text every time.")
@click.option("--num-samples", default=1, show_default=True, type=int,
              help="Independent samples, generated together as one batch.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--unidecode", is_flag=True,
              help="Transliterate the prime to ASCII (automatic if the model was trained so).")
@click.option("--stop", "stops", multiple=True, metavar="STR",
              help="End each sample right after the first STR it generates (repeatable; "
                   "escapes such as \\n understood). --length stays the cap.")
@click.option("--runs", "runs_dir", default="runs", show_default=True, type=click.Path(),
              help="The runs directory: its latest run is taken when TARGET is not given.")
@_user_errors
def sample(target, temperature, length, prime, prime_file, top_k, seed, num_samples, device,
           unidecode, stops, runs_dir):
    """Generate text from a trained model, streamed as it comes.

    TARGET is a checkpoint file or a run directory (its best.pt, else last.pt); by default
    the latest run under ./runs.

    \b
      charrnn sample --temperature 0.5
      charrnn sample runs/latest -p "ROMEO:" -n 2000 --seed 1
      charrnn sample model.pt --num-samples 8 --top-k 10 --stop '\n\n'
    """
    from .checkpoint import find_checkpoint, load_checkpoint, model_from_checkpoint
    from .device import resolve_device
    from .sample import Sampler, check_prime, check_settings

    check_settings(length, temperature, top_k, num_samples, seed)
    stops = [_unescape(s, "--stop") for s in stops]
    if prime_file:
        try:
            prime = Path(prime_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CharRNNError(f"cannot read --prime-file {prime_file}: {e}") from None
    path = find_checkpoint(target, runs_dir)
    model, vocab, options = model_from_checkpoint(load_checkpoint(path))
    prime = options.apply(prime)
    stops = [options.apply(s) for s in stops]
    if unidecode:
        from unidecode import unidecode as to_ascii
        prime = to_ascii(prime)
    check_prime(vocab, prime, transliterated=unidecode)
    for s in stops:
        if vocab.missing(s):
            raise CharRNNError(f"--stop {s!r} can never be generated: the model does not know "
                               + ", ".join(repr(c) for c in vocab.missing(s)))
    sampler = Sampler(model, vocab, temperature, top_k, seed, resolve_device(device))
    out = sys.stdout
    if num_samples == 1:
        out.write(prime)
        for pieces in sampler.generate(length, prime, stop=stops):
            out.write(pieces[0])
            out.flush()
        out.write("\n")
        return
    for i, text in enumerate(sampler.texts(length, prime, num_samples, stops)):
        out.write(f"--- sample {i + 1} ---\n{prime}{text}\n")


def _unescape(text: str, flag: str) -> str:
    """Backslash escapes (\\n, \\t, \\u00e9) in a command-line string; other text as is."""
    try:
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError as e:
        raise CharRNNError(f"{flag} {text!r}: bad escape ({e.reason})") from None


# ----------------------------------------------------------------------------------------


def _is_target(path: str) -> bool:
    """Whether a path names a model (checkpoint, run, runs directory) rather than a text."""
    p = Path(path)
    if p.is_file():
        return p.suffix == ".pt"
    return p.is_dir() and not (p / "meta.json").exists() and any(
        (p / name).exists() for name in ("best.pt", "last.pt", "latest"))


@main.command("eval")
@click.argument("paths", nargs=-1, required=True, metavar="[TARGET] FILE...")
@click.option("--split", type=click.Choice(["test", "val", "train"]),
              help="For a prepared directory as FILE: the split to score  [default: test "
                   "when it has one, else val]")
@click.option("--unk", type=click.Choice(["error", "skip"]), default="error", show_default=True,
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
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--runs", "runs_dir", default="runs", show_default=True, type=click.Path(),
              help="The runs directory: its latest run is taken when TARGET is not given.")
@_user_errors
def eval_command(paths, split, unk, batch_size, context, dynamic, dynamic_lr, device, as_json,
                 runs_dir):
    """Score text files with a trained model: nats/char, bits/char, perplexity.

    TARGET is a checkpoint, a run directory or a runs directory, as for `sample` (default:
    the latest run). Each FILE is a text file, - for standard input, or a prepared
    directory (one of its splits). The text goes through the model's own text options.

    \b
      charrnn eval data.txt
      charrnn eval runs/latest a.txt b.txt --json
      charrnn eval data/corpus --split val      # the validation loss training reports
      charrnn eval notes.txt --dynamic
    """
    import json as json_module

    from .checkpoint import config_of, find_checkpoint, load_checkpoint, model_from_checkpoint
    from .device import resolve_device
    from .evaluate import eval_streams
    from .score import DYNAMIC_LR, dynamic_score, score_ids, total

    paths = list(paths)
    target = paths.pop(0) if len(paths) > 1 and _is_target(paths[0]) else None
    if target is None and len(paths) == 1 and _is_target(paths[0]):
        raise CharRNNError(f"{paths[0]} is a model: give the text to score after it, e.g. "
                           f"charrnn eval {paths[0]} FILE")
    if batch_size is not None and batch_size < 1:
        raise CharRNNError(f"--batch-size must be >= 1, got {batch_size}")
    if context is not None and context < 0:
        raise CharRNNError(f"--context must be >= 0, got {context}")
    lr = DYNAMIC_LR if dynamic_lr is None else dynamic_lr
    if not (lr > 0 and lr < float("inf")):
        raise CharRNNError(f"--dynamic-lr must be a positive number, got {dynamic_lr}")
    path = find_checkpoint(target, runs_dir)
    state = load_checkpoint(path)
    model, vocab, options = model_from_checkpoint(state)
    t = config_of(state).train
    dev = resolve_device(device)
    texts = [_eval_text(p, options, vocab, split, unk == "skip") for p in paths]
    static, dynamic_scores = [], []
    asked, batch_size = batch_size, batch_size or t.eval_batch_size
    context = t.eval_context if context is None else context
    for name, ids, skipped in texts:
        streams = eval_streams(len(ids), batch_size, context)
        if asked and streams < batch_size and not as_json:
            click.echo(f"{name}: {streams} stream(s), not {batch_size}: each stream is at "
                       f"least {context} characters (--context)", err=True)
        static.append(score_ids(model, ids, batch_size, t.seq_len, dev, name, skipped,
                                context))
        if dynamic:
            dynamic_scores.append(dynamic_score(model, ids, t.seq_len, dev, lr, name, skipped))
    if as_json:
        out = {"checkpoint": str(path), "files": [s.to_dict() for s in static]}
        if len(static) > 1:
            out["total"] = total("total", static).to_dict()
        if dynamic:
            out["dynamic_lr"] = lr
            out["dynamic"] = [s.to_dict() for s in dynamic_scores]
            if len(static) > 1:
                out["dynamic_total"] = total("total", dynamic_scores).to_dict()
        click.echo(json_module.dumps(out, indent=2))
        return
    click.echo(f"model: {path}")
    rows = [(static, "")] + ([(dynamic_scores, f"dynamic (lr {lr:g}) ")] if dynamic else [])
    for scores, label in rows:
        for s in scores:
            click.echo(f"{label}{s.name}: {s.line()}")
        if len(scores) > 1:
            click.echo(f"{label}total: {total('total', scores).line()}")


def _eval_text(path: str, options, vocab, split: str | None, skip_unknown: bool):
    """(name, ids, skipped) of one FILE argument of `eval`."""
    from .data import PreparedData
    from .score import read_ids

    p = Path(path)
    if path != "-" and p.is_dir():
        data = PreparedData(p)
        if data.vocab.chars != vocab.chars:
            raise CharRNNError(f"{p} is not encoded with the model's vocabulary; score its "
                               f"text file instead")
        name = split or ("test" if data.meta["splits"].get("test") else "val")
        return f"{p}:{name}", data.split(name), 0
    if path == "-":
        return "<stdin>", *read_ids(sys.stdin.buffer, "<stdin>", options, vocab, skip_unknown)
    if not p.is_file():
        raise CharRNNError(f"not found: {p}" if not p.exists() else f"not a text file: {p}")
    try:
        with open(p, "rb") as raw:
            return str(p), *read_ids(raw, str(p), options, vocab, skip_unknown)
    except OSError as e:
        raise CharRNNError(f"cannot read {p}: {e.strerror}") from None


# ----------------------------------------------------------------------------------------


@main.command()
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.option("-o", "--out", default="curves.png", show_default=True, type=click.Path(),
              help="The PNG file to write.")
@_user_errors
def plot(runs, out):
    """Draw training and validation loss (bits/char) against step and against training
    time, for one or several runs overlaid.

    RUN is a run directory, or a runs directory (its latest run). Needs matplotlib:
    pip install 'charrnn[plot]'. Training keeps RUN/curves.png up to date by itself when
    matplotlib is installed.

    \b
      charrnn plot runs/latest
      charrnn plot runs/* -o all.png
    """
    from .plot import INSTALL, have_matplotlib, plot_runs, run_dirs

    if not have_matplotlib():
        raise CharRNNError(INSTALL)
    dirs = run_dirs(list(runs))
    plot_runs(dirs, Path(out))
    click.echo(f"{out}: {len(dirs)} run(s)")
