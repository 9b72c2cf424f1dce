"""Text from disk made safe to print: control characters shown as escapes.

    click.echo(f"{shown(run_dir.name)}: ...")   # a run named "\x1b]52;c;..." cannot set
                                                 # the clipboard or rewrite the screen

Names of runs, corpora and files, and fields of metrics.jsonl, are written by whoever can
write to the disk. Printed raw, a terminal obeys the escape sequences in them (cursor moves,
colours, OSC 52 clipboard writes) and a carriage return overwrites what was printed before.
Everything charrnn prints that came from disk goes through `shown`, and nothing else escapes.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls (0x9b is a one-byte CSI), and the bidirectional overrides
# and isolates that reorder what follows them on screen (the "Trojan Source" characters).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\x1b"}


def _escape(match: re.Match) -> str:
    c = match.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def shown(text) -> str:
    """`text` (any object: str() of it) with every control character written as an escape
    (\\x1b, \\r, \\u202e); printable text, accents and other scripts included, as it is."""
    text = text if isinstance(text, str) else str(text)
    # Surrogates (from os.fsdecode of bytes that are not UTF-8) cannot be printed either.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return _CONTROL.sub(_escape, text)
