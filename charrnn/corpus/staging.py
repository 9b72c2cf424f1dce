"""Where a preparation is written: a private staging directory inside the output, under
the output's lock, published whole (meta.json last). A preparation touches only its own
files: an output directory that holds anything else is refused before anything is written.

    with staging(out_dir) as (stage, publish):
        ...write the files into stage...
        publish()
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..core.errors import CharRNNError, DataError
from ..core.files import DirectoryLock, fsync_dir, write_failure

SPLITS = ("train", "val", "test")

OUTPUTS = ("meta.json", "vocab.json", "documents.npz") + tuple(f"{s}.bin" for s in SPLITS)


STAGING_MARKER = ".charrnn-staging"  # in each staging directory: what may be cleaned up


def _check_ours(out_dir: Path) -> None:
    """Refuse an output directory that holds anything but a preparation of ours (a
    meta.json that charrnn wrote) and our own lock and staging files: a preparation never
    replaces or deletes files it did not write."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise DataError(f"output {out_dir} exists and is not a directory; choose another -o")
    ours = {".lock"}
    foreign = [p.name for p in out_dir.iterdir() if p.name not in ours
               and not (p.name.startswith(".staging-") and (p / STAGING_MARKER).is_file())]
    if foreign and not _is_preparation(out_dir / "meta.json"):
        shown = ", ".join(sorted(foreign)[:5])
        raise DataError(f"output directory {out_dir} is not empty ({shown}) and holds no "
                        f"charrnn preparation; choose another -o (nothing was changed)")


def _is_preparation(meta_path: Path) -> bool:
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "format_version" in meta and "splits" in meta


@contextlib.contextmanager
def staging(out_dir: Path):
    """(a private directory inside out_dir, publish()) under out_dir's lock. `publish` moves
    the staged files into place, meta.json last, so a directory with a meta.json always has
    the files it describes; the staging directory goes in any case."""
    _check_ours(out_dir)  # before anything is written there, the lock file included
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = DirectoryLock(out_dir, "output directory", wait=True)
        lock.__enter__()
    except (OSError, CharRNNError) as e:
        reason = e.strerror if isinstance(e, OSError) else str(e)
        raise DataError(f"cannot write to output directory {out_dir}: {reason}") from None
    try:
        _check_ours(out_dir)  # again under the lock
        for old in out_dir.glob(".staging-*"):  # left by a killed preparer: ours only
            if (old / STAGING_MARKER).is_file():
                shutil.rmtree(old, ignore_errors=True)
        try:
            stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
            (stage / STAGING_MARKER).touch()
        except OSError as e:
            raise DataError(f"cannot write to output directory {out_dir}: {e.strerror}") from None

        publish = functools.partial(_publish, stage, out_dir)

        try:
            yield stage, publish
        except OSError as e:
            raise DataError(f"could not write the prepared corpus in {out_dir}: "
                            f"{write_failure(e)}; the previous preparation is kept") from None
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    finally:
        lock.__exit__(None, None, None)


def _publish(stage: Path, out_dir: Path) -> None:
    """The staged files into place, meta.json last: a directory with a meta.json always
    has the files it describes."""
    (out_dir / "meta.json").unlink(missing_ok=True)
    for name in OUTPUTS:
        if name != "meta.json":
            (out_dir / name).unlink(missing_ok=True)
            if (stage / name).exists():
                os.replace(stage / name, out_dir / name)
    os.replace(stage / "meta.json", out_dir / "meta.json")
    fsync_dir(out_dir)
