"""A request's JSON, checked field by field into settings, every problem a one-sentence error.

    data = parse_json(body)                          # BadRequest(400) for malformed JSON
    settings = generate_settings(data, limits)       # BadRequest(422) naming the field
    prime = model_text(loaded, settings.prime, "prime", limits.max_prime)

A bad request never reaches the model: types and the server's limits are checked here,
the ranges of the sampling settings and the characters of a prime, a stop string or a text
by the engine's own checks (inference/settings.py, after the model's own text options, as
`charrnn sample` and `charrnn eval` apply them). The engine names a setting as the API does
(`top_k`); its SettingError is answered as `'top_k' ...` with its status (app.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from ..core.errors import CharRNNError, SettingError
from ..corpus.text import TextOptions
from ..corpus.vocab import Vocab
from ..inference.settings import DEFAULT_LENGTH, check_known, check_settings
from .limits import Limits

MAX_STOPS = 16  # stop strings per request: each is searched for in every new piece
MAX_STOP_CHARS = 200
MAX_SESSION_NAME = 200
MAX_SHOWN = 60  # characters of a client's string that an error message quotes back


class BadRequest(CharRNNError):
    """A request the server refuses: the HTTP status and what is wrong, in one sentence."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def field_error(error: SettingError) -> SettingError:
    """The engine's error under the API's name of its setting: 'top_k'."""
    return error.named(repr(error.field))


@dataclass(frozen=True)
class GenerateSettings:
    prime: str = ""
    length: int = DEFAULT_LENGTH
    temperature: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    num_samples: int = 1
    session: str | None = None
    stream: bool = False
    novelty: bool = False  # add each sample's novelty report (a server started with --novelty)
    stop_at_end: bool = False  # end where the model ends its document (a model of documents)


GENERATE_FIELDS = {"prime": "string", "length": "integer", "temperature": "number",
                   "top_k": "integer", "stop": "list of strings", "seed": "integer",
                   "num_samples": "integer", "session": "string", "stream": "boolean",
                   "novelty": "boolean", "stop_at_end": "boolean"}
SCORE_FIELDS = {"text": "string"}
SESSION_FIELDS = {"session": "string"}
CELLS_FIELDS = {"text": "string", "cell": "integer"}
MAX_CELLS_TEXT = 5_000  # characters of a Cells request: two passes, one step at a time


def parse_json(body: bytes) -> dict:
    """The JSON object of a body; NaN and Infinity, which JSON does not have, are refused."""
    if not body.strip():
        raise BadRequest(400, "the request body is empty; send a JSON object")
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadRequest(400, "malformed JSON: nested too deeply") from None
    except UnicodeDecodeError:
        raise BadRequest(400, "malformed JSON: the body is not UTF-8 text") from None
    except ValueError as e:
        raise BadRequest(400, f"malformed JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest(400, f"the body must be a JSON object, got {_kind(data)}")
    return data


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def fields(data: dict, known: dict[str, str]) -> dict:
    """The fields of `data`, each checked against its kind; an unknown one is an error that
    lists the known ones (a misspelt field silently ignored would be worse)."""
    for name in data:
        if name not in known:
            raise BadRequest(422, f"unknown field {shown(name)}; the fields are: "
                                  f"{', '.join(known)}")
    for name, value in data.items():
        if value is None:
            continue  # null means the default
        kind = known[name]
        ok = {"string": isinstance(value, str),
              "integer": type(value) is int,  # bool is an int in Python, not in JSON
              "number": type(value) in (int, float),
              "boolean": isinstance(value, bool),
              "list of strings": isinstance(value, list)
              and all(isinstance(v, str) for v in value)}[kind]
        if not ok:
            raise BadRequest(422, f"{name!r} must be {_article(kind)}, got {_kind(value)}")
    return {k: v for k, v in data.items() if v is not None}


def generate_settings(data: dict, limits: Limits) -> GenerateSettings:
    """The settings of a /v1/generate request, with every range and limit checked."""
    s = GenerateSettings(**{k: tuple(v) if k == "stop" else v
                            for k, v in fields(data, GENERATE_FIELDS).items()})
    if s.length < 1:
        raise BadRequest(422, f"'length' must be at least 1, got {s.length}")
    if s.length > limits.max_length:
        raise BadRequest(422, f"'length' {s.length:,} is over this server's limit of "
                              f"{limits.max_length:,} characters (--max-length)")
    check_settings(s.length, s.temperature, s.top_k, s.num_samples, s.seed)
    if s.num_samples > limits.max_samples:
        raise BadRequest(422, f"'num_samples' {s.num_samples:,} is over this server's limit "
                              f"of {limits.max_samples:,} (--max-samples)")
    if s.session is not None:
        check_session_name(s.session)
        if s.num_samples > 1:
            raise BadRequest(422, "a session continues one stream: 'num_samples' must be 1 "
                                  "with 'session'")
    if len(s.stop) > MAX_STOPS:
        raise BadRequest(422, f"'stop' has {len(s.stop)} strings; {MAX_STOPS} at most")
    for stop in s.stop:
        if not stop or len(stop) > MAX_STOP_CHARS:
            raise BadRequest(422, f"each 'stop' string must have 1 to {MAX_STOP_CHARS} "
                                  f"characters, got {shown(stop)}")
    return s


def score_text(data: dict) -> str:
    text = fields(data, SCORE_FIELDS).get("text")
    if text is None:
        raise BadRequest(422, "'text' is missing: send the text to score")
    return text


def cells_request(data: dict) -> tuple[str, int | None]:
    """(text, cell) of a Cells request; the cell's range is checked against the model."""
    data = fields(data, CELLS_FIELDS)
    if data.get("text") is None:
        raise BadRequest(422, "'text' is missing: send the text to read")
    return data["text"], data.get("cell")


def check_session_name(name: str) -> str:
    if not 0 < len(name) <= MAX_SESSION_NAME or not name.isprintable():
        raise BadRequest(422, f"'session' must be 1 to {MAX_SESSION_NAME} printable "
                              f"characters")
    return name


def model_text(vocab: Vocab, options: TextOptions, text: str, field: str, cap: int) -> str:
    """`text` as the model reads it (its text options applied), within `cap` characters and
    with every character in the vocabulary; else 422 listing the strangers."""
    text = options.apply(text)
    if len(text) > cap:
        flag = "--max-prime" if field == "prime" else "--max-text"
        raise BadRequest(422, f"{field!r} has {len(text):,} characters, over this server's "
                              f"limit of {cap:,} ({flag})")
    check_known(vocab, text, field)
    return text


def shown(text: str, limit: int = MAX_SHOWN) -> str:
    """`text` quoted for an error message, cut to `limit` characters: a client's string
    is echoed, never a megabyte of it."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


def _article(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _kind(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value})" if math.isfinite(value) else "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), "null")
