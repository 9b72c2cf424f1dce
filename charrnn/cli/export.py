"""`charrnn export`: a trained model as one ONNX file, checked against PyTorch."""

from __future__ import annotations

import click

from ..core.checkpoint import find_checkpoint, load_model
from ..core.model import describe_model
from ..export import check_output, export_onnx, require_extra
from .common import runs_option, user_errors


@click.command()
@click.argument("target", required=False)
@click.option("-o", "--output", default="model.onnx", show_default=True,
              type=click.Path(), help="The ONNX file to write.")
@runs_option
@click.option("-q", "--quiet", is_flag=True, help="No line on stderr naming the model used.")
@user_errors
def export(target, output, runs_dir, quiet):
    """Write a model as one ONNX file that samples without PyTorch.

    TARGET is a checkpoint file or a run directory (its best.pt, else last.pt); by default
    the latest run under ./runs. The file takes `ids` (batch x time) and the recurrent
    state and gives `logits` and the new state; its metadata holds the vocabulary and
    text options. Before the file is put in place, onnxruntime runs it beside PyTorch
    on 1,000 characters; over 1e-4 apart, nothing is written.

    \b
      charrnn export -o model.onnx
      charrnn export runs/shakespeare -o shakespeare.onnx
      python examples/onnx_sample.py model.onnx -p "ROMEO:" -t 0.7
    """
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
