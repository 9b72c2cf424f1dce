"""Features of a text that a cell may track, one value per character.

    labels = feature_table(text, user_regexes={"tag": "<[^>]*>"})
    labels["quote"]  # float32 (N,): 1 where character t is inside double quotes

Every value describes the state *after reading* character t, as the model's cell does at
step t: the opening quote is inside the quotes, the closing one outside; a newline has
column 0. The built-in features:

    quote       inside double quotes, straight or typographic (“ ”); a backslash-escaped
                quote does not count, and a blank line ends an open quote, as prose opens
                each quoted paragraph anew
    bracket     inside parentheses, brackets or braces
    depth       how deep: ( [ { open, ) ] } close, never below 0
    comment     inside a C (/* */, //) or Python (# ) comment: from the character that
                makes it one (the "*" of "/*", the second "/", the "#") to the one before
                "*/"'s "/" or the newline; "# define" and "#include" are C, not comments
    column      characters since the last newline
    word_start  a letter or digit after a character that is neither
    capital     an upper-case letter

Brackets and quotes are not counted inside comments, nor brackets inside quotes, as a C or
Python reader would not count them.
"""

from __future__ import annotations

import re

import numpy as np

from ..core.errors import CharRNNError

BUILT_IN = ("quote", "bracket", "depth", "comment", "column", "word_start", "capital")
OPEN, CLOSE = "([{", ")]}"
# A "#" that starts a comment: followed by a space or "!" (as Python's style has it), and
# not a C preprocessor line written with a space ("# define", "#  if"); "#define", "#x"
# and "##" in C macros are code. The one lookahead the features take.
_PYTHON_COMMENT = re.compile(r"(?<!#)#(?:!|[ \t]+(?![ \t]|(?:define|include|include_next|if|"
                             r"ifdef|ifndef|else|elif|endif|undef|pragma|error|warning|line)\b"
                             r"|#)|[ \t]*$)", re.MULTILINE)
OPEN_QUOTE, CLOSE_QUOTE = '"\u201c', '"\u201d'  # straight, and typographic “ ”


def feature_table(text: str, user_regexes: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """{feature name: float32 (N,) values} for the built-in features, then the user's."""
    table = _scanned(text)
    table["word_start"] = _word_starts(text)
    table["capital"] = np.fromiter((c.isupper() for c in text), np.float32, len(text))
    for name, pattern in (user_regexes or {}).items():
        table[name] = regex_feature(text, compile_feature(name, pattern))
    return table


def _scanned(text: str) -> dict[str, np.ndarray]:
    """The features that need a reader's state: quotes, brackets, comments, column. One
    pass in Python, about a second per MB: small next to the model's pass."""
    n = len(text)
    quote, depth, comment, column = (np.zeros(n, np.float32) for _ in range(4))
    in_quote = escaped = False
    in_comment = ""  # "", "line" or "block"
    level = col = 0
    prev, opened = "", -2  # the character before; where the open block comment's "*" is
    for t, ch in enumerate(text):
        col = 0 if ch == "\n" else col + 1
        if in_comment == "line":
            in_comment = "" if ch == "\n" else "line"
        elif in_comment == "block":
            if ch == "/" and prev == "*" and t - 1 > opened:  # "/*/" does not close
                in_comment = ""
        elif in_quote:
            if (ch in CLOSE_QUOTE and not escaped) or (ch == "\n" and prev == "\n"):
                in_quote = False
            escaped = ch == "\\" and not escaped
        elif ch in OPEN_QUOTE:
            in_quote, escaped = True, False
        elif (ch == "/" and prev == "/") or (ch == "#" and _PYTHON_COMMENT.match(text, t)):
            in_comment = "line"
        elif ch == "*" and prev == "/":
            in_comment, opened = "block", t
        elif ch in OPEN:
            level += 1
        elif ch in CLOSE:
            level = max(level - 1, 0)
        quote[t], comment[t] = in_quote, bool(in_comment)
        depth[t], column[t] = level, col
        prev = ch
    return {"quote": quote, "bracket": (depth > 0).astype(np.float32), "depth": depth,
            "comment": comment, "column": column}


def _word_starts(text: str) -> np.ndarray:
    starts = np.zeros(len(text), np.float32)
    for match in re.finditer(r"(?<![^\W_])[^\W_]", text):
        starts[match.start()] = 1.0
    return starts


def compile_feature(name: str, pattern: str) -> re.Pattern:
    """A user feature's regex, or one line saying what is wrong with it."""
    if not name.isidentifier():
        raise CharRNNError(f"--feature {name}={pattern}: the name must be a word, e.g. "
                           f"tag=<[^>]*>")
    if name in BUILT_IN:
        raise CharRNNError(f"--feature {name}: a built-in feature has that name")
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise CharRNNError(f"--feature {name}: bad regular expression {pattern!r}: {e}") from None
    if compiled.match(""):
        raise CharRNNError(f"--feature {name}: {pattern!r} matches the empty string, so it "
                           f"would mark no character; make it match at least one")
    return compiled


def parse_feature(spec: str) -> tuple[str, str]:
    """'tag=<[^>]*>' -> ('tag', '<[^>]*>')."""
    name, eq, pattern = spec.partition("=")
    if not eq or not name or not pattern:
        raise CharRNNError(f"--feature {spec!r}: write NAME=REGEX, e.g. tag=<[^>]*>")
    return name, pattern


def regex_feature(text: str, pattern: re.Pattern) -> np.ndarray:
    """1 on every character of every match, 0 elsewhere."""
    values = np.zeros(len(text), np.float32)
    for match in pattern.finditer(text):
        values[match.start():match.end()] = 1.0
    return values
