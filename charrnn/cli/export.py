"""`charrnn export`: a trained model as one ONNX file, checked against PyTorch."""

from __future__ import annotations

from pathlib import Path

import click

from ..core.model import describe_model
from ..core.runs import find_checkpoint
from ..export import check_output, export_onnx, require_extra
from ..export.web import check_target, export_web
from ..inference.trained import load_model
from .common import runs_option, user_errors


@click.command()
@click.argument("target", required=False)
@click.option("-o", "--output", default="model.onnx", show_default=True,
              type=click.Path(), help="The ONNX file to write.")
@runs_option
@click.option("-q", "--quiet", is_flag=True, help="No line on stderr naming the model used.")
@click.option("--web", "web_dir", type=click.Path(), default=None,
              help="Instead of one file, write a static web page to this folder that samples "
                   "and scores in the browser (new, empty, or a page written before).")
@click.option("--runtime", type=click.Path(), default=None,
              help="With --web: copy onnxruntime-web from this dist/ folder or npm tarball "
                   "into the page, so that it works offline  [default: a pinned CDN URL]")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="With --web: int8 weights (onnxruntime's dynamic quantization), kept only "
                   "where greedy text over 1,000 characters is unchanged.")
@user_errors
def export(target, output, runs_dir, quiet, web_dir, runtime, quantize):
    """Write a model as one ONNX file that samples without PyTorch.

    TARGET is a checkpoint file or a run directory (its best.pt, else last.pt); by default
    the latest run under ./runs. The file takes `ids` (batch x time) and the recurrent
    state and gives `logits` and the new state; its metadata holds the vocabulary and
    text options. Before the file is put in place, onnxruntime runs it beside PyTorch
    on 1,000 characters; over 1e-4 apart, nothing is written. With --web DIR, a static
    web page that runs the model in the browser instead (README, "In the browser").

    \b
      charrnn export -o model.onnx
      charrnn export runs/shakespeare -o shakespeare.onnx
      python examples/onnx_sample.py model.onnx -p "ROMEO:" -t 0.7
      charrnn export --web site && python -m http.server -d site
    """
    if web_dir is not None or runtime is not None or quantize is not None:
        if click.get_current_context().get_parameter_source("output").name != "DEFAULT":
            raise click.UsageError("-o writes one ONNX file and --web a folder: give one")
        return export_web_page(target, runs_dir, quiet, web_dir, runtime, quantize)
    # Before any work: what to install, then where the file cannot go.
    require_extra()
    path = find_checkpoint(target, runs_dir)
    check_output(output, reads=[path])  # never over the checkpoint itself, nor a run's files
    trained = load_model(path)
    model, vocab = trained.model, trained.vocab
    exported = export_onnx(model, vocab, trained.options, output, state=trained.state)
    if not quiet:  # once it has worked, so that a failure stays one line
        click.echo(trained.line, err=True)
    click.echo(f"wrote {exported.path} ({exported.size / 1e6:.2f} MB): {describe_model(model)} "
               f"over {len(vocab):,} characters; onnxruntime matches PyTorch to "
               f"{exported.max_diff:.1e} over {exported.checked_streams} streams of "
               f"{exported.checked_chars:,} characters")


def export_web_page(target, runs_dir, quiet, web_dir, runtime, quantize):
    """--web DIR: the static page (charrnn/export/web.py)."""
    if web_dir is None:
        raise click.UsageError("--runtime and --quantize go with --web DIR")
    require_extra()
    check_target(Path(web_dir))
    trained = load_model(target, runs_dir)
    site = export_web(trained.model, trained.vocab, trained.options, web_dir,
                      state=trained.state, runtime=runtime, quantize=quantize)
    if not quiet:
        click.echo(trained.line, err=True)
    where = ("with onnxruntime-web " + site.runtime["version"] if site.runtime["local"]
             else "onnxruntime-web " + site.runtime["version"] + " from its CDN")
    click.echo(f"wrote {site.path}/ ({len(site.files)} files, {site.size / 1e6:.2f} MB, "
               f"{where}): {describe_model(trained.model)} over {len(trained.vocab):,} "
               f"characters; onnxruntime matches PyTorch to {site.max_diff:.1e}")
    if site.quantized:
        click.echo(f"int8: {site.quantized['summary']}")
    click.echo(f"try it: python -m http.server -d {site.path} 8000, then open "
               f"http://127.0.0.1:8000/")
