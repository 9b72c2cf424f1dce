"""`charrnn serve`: a trained model behind an HTTP API and a playground page."""

from __future__ import annotations

import click

from ..core.config import parse_duration
from ..core.device import resolve_device
from ..core.errors import CharRNNError
from ..core.precision import native_bf16
from ..core.extras import install_hint
from ..core.runs import find_checkpoint
from ..novelty.source import training_index
from ..serve.limits import Limits, exposure_warning
from .common import device_option, runs_option, threads_option, user_errors

SERVE_MODULES = {"starlette", "uvicorn", "fastapi", "anyio", "h11"}


def _limit(flag: str, default: int, what: str, metavar: str = "N"):
    return click.option(flag, default=default, show_default=True, type=click.IntRange(min=1),
                        metavar=metavar, help=what)


@click.command()
@click.argument("target", required=False)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. The default lets only this machine in; any other "
                   "(0.0.0.0: every interface) lets the network in: set an API key then.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              metavar="PORT",
              help="Port to listen on (0 picks a free one).")
@click.option("--api-key", envvar="CHARRNN_API_KEY", metavar="KEY",
              help="Require 'Authorization: Bearer KEY' on every /v1 route (better given as "
                   "the CHARRNN_API_KEY environment variable: command lines are visible to "
                   "other users).")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="A name a request's Host header may carry besides the address listened "
                   "on (repeatable; .example.org allows its subdomains): the public name of "
                   "a reverse proxy in front. Other names get 403, so that a web page "
                   "cannot reach the server through DNS rebinding.")
@click.option("--cors", multiple=True, metavar="ORIGIN",
              help="Let pages from ORIGIN (e.g. https://example.org) call the API from a "
                   "browser (repeatable; off by default).")
@click.option("--watch", is_flag=True,
              help="Load the new checkpoint when training replaces best.pt; requests in "
                   "flight finish on the model they started with.")
@click.option("--novelty", is_flag=True,
              help="Open the training text's novelty index at start-up (building it first if "
                   "needed), so that requests with \"novelty\": true get each sample's "
                   "copied spans. Off: such requests get 422.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="With --novelty: the prepared directory of the training text  [default: "
                   "the one the model was trained on]")
@device_option
@threads_option
@click.option("--step-precision", type=click.Choice(["fp32", "bf16"]), default="fp32",
              show_default=True,
              help="The products of the batched step. bf16 keeps the weights in bf16: for "
                   "CPUs with bf16 units (avx512_bf16, AMX), where many streams then run "
                   "faster; a seeded request's text then depends on the requests it shares "
                   "a step with, and no longer equals `charrnn sample`'s.")
@runs_option
@click.option("--max-body", type=click.IntRange(min=1), metavar="BYTES",
              help="Largest request body, in bytes (413 beyond, before parsing).  [default: "
                   "what the longest prime or text needs as JSON]")
@_limit("--max-prime", Limits.max_prime, "Longest prime, in characters (422 beyond).")
@_limit("--max-text", Limits.max_text, "Longest text to score, in characters (422 beyond).")
@_limit("--max-length", Limits.max_length,
        "Most characters generated per sample (422 beyond).")
@_limit("--max-samples", Limits.max_samples, "Most num_samples per request (422 beyond).")
@_limit("--max-streams", Limits.max_streams,
        "Most streams running at once, every sample counted (503 with Retry-After beyond).")
@_limit("--max-sessions", Limits.max_sessions,
        "Most sessions kept; the least recently used goes first.")
@click.option("--session-ttl", default="1h", show_default=True, metavar="DURATION",
              help="How long a session may sit idle before it is dropped (90s, 10m, 1h).")
@_limit("--max-connections", Limits.max_connections,
        "Most connections open at once (fewer where the open-file limit is lower); past it, "
        "the one waiting longest for its request is closed.")
@click.option("--header-timeout", default="10s", show_default=True, metavar="DURATION",
              help="Time for a request's headers to arrive; a connection still without "
                   "them is closed.")
@click.option("--body-timeout", default="30s", show_default=True, metavar="DURATION",
              help="Time for a request's body to arrive after its headers.")
@_limit("--max-buffered", Limits.max_buffered,
        "Bytes of all the request bodies being received at once (503 beyond).", "BYTES")
@user_errors
def serve(target, host, port, api_key, allowed_hosts, cors, watch, novelty, data_dir, device,
          threads, step_precision, runs_dir, max_body, max_prime, max_text, max_length, max_samples,
          max_streams, max_sessions, session_ttl, max_connections, header_timeout,
          body_timeout, max_buffered):
    """Serve a trained model over HTTP: a JSON API with streaming, and a playground page.

    TARGET is as for `sample`: a checkpoint file or a run directory; by default the latest
    run under ./runs. The model is loaded once; with --watch it is reloaded when training
    writes a new best.pt. Open the address it prints for the playground.

    \b
      charrnn serve                                   # http://127.0.0.1:8000/
      charrnn serve runs/shakespeare --port 9000 --watch
      curl -N localhost:8000/v1/generate --json '{"prime": "ROMEO:", "stream": true}'
      CHARRNN_API_KEY=secret charrnn serve --host 0.0.0.0
      charrnn serve --novelty       # then '{"novelty": true}' marks text copied from training
    """
    LoadedModel, run = _server_modules()
    if data_dir is not None and not novelty:
        raise CharRNNError("--data names the training text for the novelty check: add "
                           "--novelty, or leave --data out")
    api_key = _checked_key(api_key)
    limits = Limits(max_body, max_prime, max_text, max_length, max_samples, max_streams,
                    max_sessions, parse_duration(session_ttl, "--session-ttl"),
                    max_connections, parse_duration(header_timeout, "--header-timeout"),
                    parse_duration(body_timeout, "--body-timeout"), max_buffered)
    warning = exposure_warning(host, api_key)
    if warning:
        click.echo(warning, err=True)
    dev = resolve_device(device)
    _warn_step_precision(step_precision, dev)
    loaded = LoadedModel.load(find_checkpoint(target, runs_dir), dev,
                              step_precision=step_precision)
    index = None
    if novelty:  # before binding: a missing index or library is one line, as for `sample`
        index = training_index(data_dir, recorded=loaded.data_root, progress=True,
                               echo=lambda line: click.echo(line, err=True))
    run(loaded, host, port, limits, api_key, cors, (target, runs_dir) if watch else None,
        echo=lambda line: click.echo(line),
        warn=lambda line: click.echo(line, err=True), novelty=index, hosts=allowed_hosts)


def _warn_step_precision(step_precision: str, device) -> None:
    """One line where --step-precision bf16 will not be the faster step."""
    if step_precision == "bf16" and not native_bf16(device):
        click.echo("warning: --step-precision bf16: this device has no bf16 units "
                   "(avx512_bf16 or AMX): bf16 is emulated and slower than fp32 here", err=True)


def _server_modules():
    """(LoadedModel, run), or one line naming the install command without the extra."""
    try:
        from ..serve.loaded import LoadedModel
        from ..serve.server import run
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] in SERVE_MODULES:
            raise CharRNNError("charrnn serve needs starlette and uvicorn: "
                               + install_hint("serve")) from None
        raise
    return LoadedModel, run


def _checked_key(api_key: str | None) -> str | None:
    """The key, stripped; one line when no client could send it in a header."""
    if api_key is None:
        return None
    api_key = api_key.strip()
    if not api_key:
        raise CharRNNError("--api-key (or CHARRNN_API_KEY) is empty; give a key, or leave it "
                           "unset")
    if not (api_key.isascii() and api_key.isprintable()):
        raise CharRNNError("--api-key (or CHARRNN_API_KEY) must be printable ASCII: HTTP "
                           "clients send the Authorization header in ASCII, so no client "
                           "could send this key")
    return api_key
