"""User-facing errors.

Anything the user can fix (a bad path, a bad value, a broken checkpoint) is raised as a
CharRNNError with a one-line message that says what is wrong and what to do. The CLI turns
it into a clean exit; library callers can catch it.
"""


class CharRNNError(Exception):
    """A problem with the user's input, reported as one clear line."""


class ConfigError(CharRNNError):
    """A bad configuration key or value."""


class DataError(CharRNNError):
    """A corpus or prepared data directory that cannot be used."""


class CheckpointError(CharRNNError):
    """A checkpoint that cannot be read, or does not match what is asked of it."""
