"""The HTTP side: routes under /v1, server-sent events, the playground, errors as JSON.

    app = build_app(service, api_key="...", cors=["https://example.org"])

    POST /v1/generate   {"prime", "length", "temperature", "top_k", "stop", "seed",
                         "num_samples", "session", "stream", "novelty"}: one JSON object, or
                        with "stream": true, events `text` {"index", "text"} then one `done`;
                        with "novelty": true each sample in it has its novelty report
    POST /v1/score      {"text"}: bits per character, and each character's surprisal and
                        the model's top 5 guesses
    POST /v1/cells      {"text", "cell"}: the cells that track features of the text (chosen
                        on its first half, r on its second) and one cell's value at every
                        character (the best-ranked one unless "cell" gives its index)
    POST /v1/sessions   {"session"}: create (or reset) a session; GET/DELETE /v1/sessions/NAME
    GET  /v1/model      the model, its vocabulary and the limits
    GET  /healthz       status and counts (no key needed)
    GET  /              the playground page

Every refusal is a 4xx with {"error": "..."} saying what is wrong. Handlers never wait on
the model: they hand a job to the worker and await its events (/v1/cells runs the model
step by step on a thread of its own, one request at a time, beside the worker).

What a browser page on another site could make a visitor's browser do is refused: a Host
that is not the server's own gets 403 (DNS rebinding, hosts.py), and a POST whose body is
not `Content-Type: application/json` gets 415, since only such a body makes the browser ask
first (a CORS preflight, which the server answers only for --cors origins). A body is
refused before it is parsed: 413 from its Content-Length, or as soon as the bytes read pass
--max-body, and 503 when the bodies being read together would pass --max-buffered.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
from importlib import resources

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..core.errors import CharRNNError, SettingError
from ..inference.settings import DEFAULT_LENGTH
from .bodies import read_body
from .hosts import HostCheck, Hosts
from .jobs import InternalError
from .service import Service
from .validation import (
    SESSION_FIELDS,
    BadRequest,
    cells_request,
    check_session_name,
    field_error,
    fields,
    generate_settings,
    parse_json,
    score_text,
    shown,
)

STATIC = {"app.js": "text/javascript", "surprisal.js": "text/javascript",
          "escapes.js": "text/javascript",
          "cells.js": "text/javascript", "style.css": "text/css"}
# The page and its files come from this server only; nothing is fetched from elsewhere.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                           "frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def build_app(service: Service, api_key: str | None = None, cors=(), lifespan=None,
              hosts: Hosts | None = None) -> Starlette:
    handlers = {CharRNNError: _refusal, InternalError: _refusal, ClientGone: _gone,
                ClientDisconnect: _gone, HTTPException: _http_error, 500: _server_error}
    return Starlette(routes=Api(service).routes(), exception_handlers=handlers,
                     middleware=_middleware(api_key, cors, hosts), lifespan=lifespan)


def _middleware(api_key: str | None, cors, hosts: Hosts | None) -> list:
    middleware = []
    if hosts is not None:  # outermost: a rebinding page gets nothing, not even a preflight
        middleware.append(Middleware(HostCheck, hosts=hosts, refuse=_error))
    if cors:  # outermost, so that a preflight request is answered before the key check
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(cors),
                                     allow_methods=["GET", "POST", "DELETE"],
                                     allow_headers=["Authorization", "Content-Type"]))
    if api_key:
        middleware.append(Middleware(KeyCheck, key=api_key))
    return middleware


class Api:
    """The routes' handlers, over one Service."""

    def __init__(self, service: Service):
        self.service = service
        self.files = {name: (resources.files(__package__) / "static" / name).read_bytes()
                      for name in ("index.html", *STATIC)}
        self.cells_turn = asyncio.Lock()

    def routes(self) -> list[Route]:
        return [
            Route("/", self.page), Route("/static/{name}", self.static),
            Route("/healthz", self.health), Route("/v1/model", self.model),
            Route("/v1/generate", self.generate, methods=["POST"]),
            Route("/v1/score", self.score, methods=["POST"]),
            Route("/v1/cells", self.cells, methods=["POST"]),
            Route("/v1/sessions", self.create_session, methods=["POST"]),
            Route("/v1/sessions/{name:path}", self.session, methods=["GET", "DELETE"]),
        ]

    async def page(self, request: Request) -> Response:
        return Response(self.files["index.html"], media_type="text/html",
                        headers=PAGE_HEADERS)

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            raise BadRequest(404, f"no such file: /static/{name}")
        return Response(self.files[name], media_type=STATIC[name], headers=PAGE_HEADERS)

    async def health(self, request: Request) -> Response:
        return JSONResponse(self.service.health())

    async def model(self, request: Request) -> Response:
        service = self.service
        return JSONResponse({**service.loaded.info(), "limits": service.limits.to_dict(),
                             "defaults": {"length": DEFAULT_LENGTH},
                             "novelty": service.novelty_info()})

    async def generate(self, request: Request) -> Response:
        service = self.service
        settings = generate_settings(parse_json(await read_body(request, service)),
                                     service.limits)
        job = service.generate(settings)
        if settings.stream:
            return StreamingResponse(_events(job, service), media_type="text/event-stream",
                                     headers=SSE_HEADERS,
                                     background=BackgroundTask(service.release, job))
        try:
            payload = await _final(job, request)
        finally:
            service.release(job)
        return JSONResponse({**payload, "prime": job.prime[len(job.prime) - job.prime_read:]})

    async def score(self, request: Request) -> Response:
        text = score_text(parse_json(await read_body(request, self.service)))
        job = self.service.score(text)
        try:
            return JSONResponse(await _final(job, request))
        finally:
            self.service.release(job)

    async def cells(self, request: Request) -> Response:
        text, cell = cells_request(parse_json(await read_body(request, self.service)))
        async with self.cells_turn:  # one at a time, off the event loop: it runs the model
            return JSONResponse(await run_in_threadpool(self.service.cells, text, cell))

    async def create_session(self, request: Request) -> Response:
        body = await read_body(request, self.service)
        data = fields(parse_json(body), SESSION_FIELDS) if body.strip() else {}
        name = check_session_name(data.get("session", secrets.token_urlsafe(12)))
        session = self.service.create_session(name)
        return JSONResponse(session.info(), status_code=201)

    async def session(self, request: Request) -> Response:
        name = request.path_params["name"]
        if request.method == "DELETE":
            self.service.delete_session(name)
            return JSONResponse({"deleted": name})
        return JSONResponse(self.service.session_info(name))


# -------------------------------------------------------------------------------------
# answering requests


async def _events(job, service: Service):
    """Server-sent events: `text` per piece of a stream, then `done` (or `error`)."""
    try:
        async for event in job.events():
            if event[0] == "text":
                data = {"index": event[1], "text": event[2]}
            elif event[0] == "done":
                data = event[1]
            else:
                data = {"error": str(event[1])}
            yield f"event: {event[0]}\ndata: {json.dumps(data)}\n\n".encode()
    finally:
        service.release(job)  # the client may have gone: the worker drops the job


async def _final(job, request: Request) -> dict:
    """The final event's payload; a client that goes away first cancels the job."""
    final = asyncio.ensure_future(_last(job))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({final, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not final.done():
            final.cancel()
    if not final.done() or final.cancelled():
        raise ClientGone()
    event = final.result()
    if event[0] == "error":
        raise event[1]  # it carries its status
    return event[1]


async def _last(job):
    event = None
    async for event in job.events():
        pass
    return event


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


class ClientGone(Exception):
    """The client went away before its answer was ready: there is no one to answer."""


class KeyCheck:
    """Every /v1 route wants `Authorization: Bearer KEY`, compared in constant time."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            value = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, token = value.partition(b" ")
            if not (scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)):
                response = _error(401, "missing or wrong API key: send the header "
                                       "'Authorization: Bearer KEY'",
                                  {"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _refusal(request: Request, exc: Exception) -> Response:
    """A refusal or failure that carries its status; the engine's errors under the API's
    names of their settings."""
    if isinstance(exc, SettingError):
        exc = field_error(exc)
    return _error(exc.status, str(exc), getattr(exc, "headers", None))


async def _gone(request: Request, exc: Exception) -> Response:
    return Response(status_code=499)  # nobody reads it; closes the exchange


async def _http_error(request: Request, exc: HTTPException) -> Response:
    path = shown(request.url.path)  # a 16 KiB path is not echoed whole
    message = {404: f"no such route: {request.method} {path}",
               405: f"{request.method} is not allowed on {path}"}.get(
        exc.status_code, exc.detail)
    return _error(exc.status_code, message, exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    return _error(500, "internal error; see the server's log")

