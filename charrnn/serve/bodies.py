"""A request's body, read within the limits: JSON only, at most --max-body bytes, and the
bodies being read together at most --max-buffered.

    body = await read_body(request, service)     # bytes, or BadRequest 413 / 415 / 503
"""

from __future__ import annotations

from starlette.requests import Request

from .service import Service
from .validation import BadRequest, shown

CLOSE = {"Connection": "close"}  # a refused body is not read to its end: the connection ends


async def read_body(request: Request, service: Service) -> bytes:
    """The body of a POST: JSON only, refused with 413 as soon as it is known to pass
    --max-body, and with 503 while the bodies being read together would pass
    --max-buffered."""
    kind = request.headers.get("content-type", "")
    if kind.split(";")[0].strip().lower() != "application/json":
        raise BadRequest(415, f"the body must be JSON, sent with 'Content-Type: "
                              f"application/json' (got {shown(kind) if kind else 'none'})",
                         CLOSE)
    cap = service.limits.max_body
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise BadRequest(413, f"the body has {int(declared):,} bytes, over this server's "
                              f"limit of {cap:,} (--max-body)", CLOSE)
    body = bytearray()
    try:
        async for chunk in request.stream():
            service.hold_body(len(chunk))  # 503 when the bodies being read are at their cap
            body += chunk
            if len(body) > cap:
                raise BadRequest(413, f"the body is over this server's limit of {cap:,} "
                                      f"bytes (--max-body)", CLOSE)
    finally:
        service.free_body(len(body))
    return bytes(body)
