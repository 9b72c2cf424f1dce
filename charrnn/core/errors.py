"""User-facing errors.

Anything the user can fix (a bad path, a bad value, a broken checkpoint) is raised as a
CharRNNError with a one-line message that says what is wrong and what to do. The CLI turns
it into a clean exit; library callers can catch it. Each kind carries the HTTP status a
server answers it with (`status`), so that no one chooses a status from a message's words.
"""

from __future__ import annotations


class CharRNNError(Exception):
    """A problem with the user's input, reported as one clear line."""

    status = 400  # the HTTP status of this error when a server reports it


class ConfigError(CharRNNError):
    """A bad configuration key or value."""


class DataError(CharRNNError):
    """A corpus or prepared data directory that cannot be used."""


class CheckpointError(CharRNNError):
    """A checkpoint that cannot be read, or does not match what is asked of it."""


class SettingError(CharRNNError):
    """One setting out of range, or not possible with this model: `field` names it as the
    library does (`top_k`), and `named(name)` gives the same message under another name
    (the CLI's `--top-k`, the HTTP API's `'top_k'`)."""

    status = 422

    def __init__(self, field: str, detail: str):
        super().__init__(f"{field} {detail}")
        self.field, self.detail = field, detail

    def named(self, name: str) -> SettingError:
        error = type(self)(self.field, self.detail)
        error.args = (f"{name} {self.detail}",)
        return error


class Unavailable(CharRNNError):
    """The request is fine, but the server cannot take or finish it now."""

    status = 503
