"""charrnn's per-user cache: measurements worth keeping between runs on one machine, as
FFTW's wisdom and cuDNN's benchmark cache keep theirs.

    cache = UserCache("precision")                 # ~/.cache/charrnn/precision.json
    ratio = cache.get(key)                         # None when absent or unreadable
    cache.put(key, 1.62)

Where: $CHARRNN_CACHE_DIR, else the platform's convention: $XDG_CACHE_HOME/charrnn
(~/.cache/charrnn) on Linux, ~/Library/Caches/charrnn on macOS, %LOCALAPPDATA%\\charrnn on
Windows. A cache is a hint, never an input that can break a run: an unreadable, damaged or
hostile file reads as empty (and is replaced on the next write), and a cache that cannot be
written is left alone.
"""

from __future__ import annotations

import json
import math
import os
import stat
import sys
from pathlib import Path

from .errors import CharRNNError
from .files import atomic_write_text

MAX_BYTES = 1 << 20  # a cache of measurements is small; a larger file is not one of ours
MAX_ENTRIES = 256  # the oldest entries go first past this


def cache_dir() -> Path:
    """The directory of charrnn's per-user cache (not created here)."""
    if os.environ.get("CHARRNN_CACHE_DIR"):
        return Path(os.environ["CHARRNN_CACHE_DIR"])
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "charrnn"
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "charrnn"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "charrnn"


class UserCache:
    """One JSON file of {key: number} in the cache directory."""

    def __init__(self, name: str, directory: Path | None = None):
        self.path = (directory or cache_dir()) / f"{name}.json"

    def _read(self) -> dict[str, float]:
        try:
            # Opened without blocking, so that a FIFO in its place cannot hang the run; only
            # a regular file of a sensible size is read.
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            with open(fd, "rb") as f:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_BYTES:
                    return {}
                data = json.loads(f.read(MAX_BYTES).decode("utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: float(v) for k, v in data.items()
                if isinstance(k, str) and isinstance(v, (int, float))
                and not isinstance(v, bool) and math.isfinite(v)}

    def get(self, key: str) -> float | None:
        return self._read().get(key)

    def put(self, key: str, value: float) -> bool:
        """Record `value` under `key`; False when the cache cannot be written."""
        data = self._read()
        data.pop(key, None)
        data[key] = float(value)
        while len(data) > MAX_ENTRIES:
            data.pop(next(iter(data)))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and not self.path.is_file():
                return False
            atomic_write_text(self.path, json.dumps(data, indent=1) + "\n")
            return True
        except (OSError, CharRNNError):
            return False
