"""Running the server: the address bound first, uvicorn on it, a shutdown that ends streams.

    run(loaded, host="127.0.0.1", port=8000, limits=Limits(), watch=("runs/latest", "runs"))

The limits on connections (connections.py), the Host check (hosts.py) and the log's rate
limit (logs.py) are put in place here, around uvicorn. The socket is bound before anything
is printed, so a port in use is one line, and port 0
picks a free port that the address line names. On Ctrl-C or SIGTERM every open stream gets
its final event (finish reason "shutdown") and the process ends within a few seconds: the
worker is told at the first signal, uvicorn then waits for responses to end, at most
GRACE seconds, and a second Ctrl-C ends at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import socket
import sys
import threading

import uvicorn

from ..core.errors import CharRNNError
from . import logs
from .app import build_app
from .connections import Gate
from .hosts import allowed_hosts
from .limits import KEEP_ALIVE_SECONDS, MAX_HEADER_BYTES, Limits, connection_cap
from .loaded import LoadedModel, Watcher
from .service import Service

GRACE = 2.0  # seconds uvicorn waits for open responses after the streams were ended
SWEEP_SECONDS = 30.0  # how often idle sessions are dropped when no request does it
# Connections accepted per wake-up of the event loop, and the kernel's queue of them: each
# accepted one takes a file before it can be turned away, so a burst stays this small.
BACKLOG = 128


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (port 0: a free one), or one line saying why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise CharRNNError(f"--host {host}: cannot resolve it ({e.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        sock.close()
        hint = {errno.EADDRINUSE: "; choose another --port (0 picks a free one)",
                errno.EACCES: "; ports below 1024 need privileges: choose another --port",
                errno.EADDRNOTAVAIL: "; this machine has no such address"}.get(e.errno, "")
        raise CharRNNError(f"cannot listen on {host}:{port}: {e.strerror or e}{hint}") from None
    sock.set_inheritable(True)
    return sock


def address_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


class Server(uvicorn.Server):
    """uvicorn's server, with our signal handling: the first signal ends the open streams
    with their final event before uvicorn waits for them; the signal is not raised again
    afterwards, so that both Ctrl-C and SIGTERM end with a plain exit."""

    def __init__(self, config, service: Service):
        super().__init__(config)
        self.service = service

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig, frame) -> None:
        if not self.should_exit and self.service.loop is not None:
            self.service.loop.call_soon_threadsafe(self.service.close)
        super().handle_exit(sig, frame)


def run(loaded: LoadedModel, host: str = "127.0.0.1", port: int = 8000,
        limits: Limits | None = None, api_key: str | None = None, cors=(),
        watch: tuple | None = None, echo=print, warn=None, novelty=None,
        hosts=()) -> None:
    """Serve `loaded` until Ctrl-C or SIGTERM. `watch`: (TARGET, runs_dir) to reload from;
    `novelty`: the training text's suffix index, for requests with "novelty": true;
    `hosts`: names besides the bound address that a request's Host may carry."""
    warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))
    limits = limits or Limits()
    sock = bind(host, port)
    service = Service(loaded, limits, echo=echo, novelty=novelty)
    service.gate = gate = Gate(limits, connection_cap(limits.max_connections))
    app = build_app(service, api_key=api_key, cors=cors,
                    lifespan=_lifespan(service, loaded, watch, warn),
                    hosts=allowed_hosts(host, sock.getsockname()[0], hosts))
    # uvicorn's own limits where it has them: the idle time between requests and the size
    # of a request's headers. Its limit_concurrency is not used: it answers 503 to every
    # request once stalled connections fill it; the Gate closes the stalled ones instead.
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=GRACE, server_header=False,
                            http=gate.protocol(), timeout_keep_alive=KEEP_ALIVE_SECONDS,
                            h11_max_incomplete_event_size=MAX_HEADER_BYTES, backlog=BACKLOG)
    logs.install()
    _announce(echo, sock, loaded, limits, gate, novelty, watch)
    try:
        Server(config, service).run(sockets=[sock])
    finally:
        sock.close()
    echo("stopped")


def _lifespan(service: Service, loaded: LoadedModel, watch: tuple | None, warn):
    """The app's life: the worker, the watcher (--watch) and the session sweeper started,
    and stopped at the end."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        loop = asyncio.get_running_loop()
        service.start(loop)
        watcher = None
        if watch is not None:
            watcher = Watcher(*watch, loaded,
                              on_new=lambda new: loop.call_soon_threadsafe(
                                  service.replace_model, new),
                              on_error=warn)
            watcher.start()
        sweeper = loop.create_task(_sweep(service))
        try:
            yield
        finally:
            sweeper.cancel()
            if watcher is not None:
                watcher.stop()
            service.close()
            service.stop()

    return lifespan


def _announce(echo, sock: socket.socket, loaded: LoadedModel, limits: Limits, gate: Gate,
              novelty, watch: tuple | None) -> None:
    """The start-up lines: the address, the model, the limits, what is watched."""
    echo(f"serving on {address_of(sock)} (the playground; the API is under /v1)")
    for line in loaded.lines():
        echo(line)
    echo(limits.line())
    echo(limits.connections_line(gate.cap))
    if novelty is not None:
        echo(f"novelty: requests with \"novelty\": true are checked against the training "
             f"split of {novelty.root} ({novelty.n:,} characters)")
    if watch is not None:
        where = watch[0] or f"{watch[1]}/latest"
        echo(f"watching {where} for a new checkpoint (--watch): requests in flight finish on "
             f"the model they started with")


async def _sweep(service: Service) -> None:
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        service.sessions.sweep()
