"""Writing files so that a failure loses nothing, and one writer per directory.

    atomic_write(path, lambda f: f.write(data))   # path is the old file or the new one
    with DirectoryLock(run_dir, "run directory"):  # one trainer per run at a time
        ...

Every file charrnn writes goes through `atomic_write`: a private temporary file beside the
target, fsync, then a rename over the target. A rename replaces a symbolic link instead of
writing through it, so nothing outside the directory is touched, and a failed write (a full
disk, a file-size limit, a signal) leaves the previous file as it was and no temporary file
behind. The temporary names start with `.` and end in `.tmp`; `remove_stale` cleans those a
killed process left, under the directory's lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from .errors import CharRNNError
from .escape import shown


def atomic_write(path: str | Path, write: Callable, binary: bool = True,
                 what: str | None = None, error: type[CharRNNError] = CharRNNError,
                 replace_link: bool = True) -> None:
    """Call `write(file)` on a temporary file and rename it to `path` once complete.

    Only a regular file is ever replaced: a device, FIFO, socket or directory at `path` is
    refused with one line, and so is a symbolic link unless `replace_link` (a link planted
    among a run's own files is replaced rather than written through)."""
    path = Path(path)
    check_replaceable(path, what, error, replace_link)
    try:
        with _signals_deferred():
            _write_and_rename(path, write, binary)
    except BaseException as e:
        reason = write_failure(e)
        if reason is None:
            raise
        kept = " (the previous one is kept)" if path.exists() else ""
        raise error(f"could not write {what or path}: {reason}{kept}") from None


def check_replaceable(path: Path, what: str | None = None,
                      error: type[CharRNNError] = CharRNNError, replace_link: bool = False) -> None:
    """Refuse a path that holds anything but a regular file (or nothing)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise error(f"cannot write {what or path}: {e.strerror}") from None
    kind = (None if stat.S_ISREG(mode) or (replace_link and stat.S_ISLNK(mode))
            else "a directory" if stat.S_ISDIR(mode)
            else "a symbolic link" if stat.S_ISLNK(mode)
            else "a device, FIFO or socket")
    if kind:
        raise error(f"will not replace {what or path}: it is {kind}, not a regular file; "
                    f"choose another file name")


def _write_and_rename(path: Path, write: Callable, binary: bool) -> None:
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; our files are not
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def _signals_deferred():
    """SIGINT and SIGTERM wait until the block ends: a Ctrl-C (or a second one) during a
    write is handled once the file is complete, never halfway through torch.save.

    A signal mask would not do: it holds only for the calling thread, and the kernel hands
    a process's signal to any thread that does not block it (torch has a pool of them), so
    Python would run the handler at once. Instead the handlers are swapped for one that
    notes the signal, and each noted signal is sent again once the file is in place."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; its own write is deferred there
        return
    noted: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: noted.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        for sig in dict.fromkeys(noted):  # each kind once, as pending signals coalesce
            os.kill(os.getpid(), sig)


@contextlib.contextmanager
def terminate_as_exit():
    """SIGTERM ends the process as an exception would (SystemExit, status 143), so that
    `finally` blocks run: temporary files outside the output (a spooled standard input in
    $TMPDIR) are removed, as they are on Ctrl-C. By default SIGTERM ends the process at
    once, leaving them behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum, frame):
        raise SystemExit(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def write_failure(e: BaseException) -> str | None:
    """Why a write failed, in words, for the errors a full or broken disk raises; None for
    anything else. torch.save reports the writer's errors as RuntimeError."""
    if isinstance(e, OSError):
        if e.errno == errno.ENOSPC:
            return "no space left on the device; free some and resume"
        if e.errno == errno.EFBIG:
            return "file too large for the file system or the process's limit"
        return e.strerror or str(e)
    if isinstance(e, RuntimeError) and ("inline_container" in str(e) or "write" in str(e).lower()):
        return "the write failed (a full disk or a file-size limit?); free some space and resume"
    return None


def atomic_write_text(path: str | Path, text: str, what: str | None = None) -> None:
    atomic_write(path, lambda f: f.write(text), binary=False, what=what)


def remove_stale(directory: Path) -> None:
    """Delete the temporary files a killed writer left in `directory` (hold its lock)."""
    for p in directory.glob(".*.tmp"):
        try:
            if p.is_file() and not p.is_symlink():
                p.unlink()
        except OSError:
            pass


def open_regular(path: Path, what: str = "file"):
    """`path` opened for binary reading if it is a regular file; a FIFO, socket or device
    (which could block a reader for ever, or never end) is refused with one line."""
    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise CharRNNError(f"cannot read {shown(path)}: {e.strerror or e}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CharRNNError(f"{shown(path)} is not a regular file (a directory, FIFO, socket or device); "
                           f"{what} must be a plain file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


class DirectoryLock:
    """An exclusive lock on a directory for this process's life in the `with` block: a
    `.lock` file inside it, held with flock (released by the kernel if the process dies).

    `wait=False` refuses at once, naming the PID that holds it; `wait=True` waits for it,
    silently and for ever unless `timeout` (seconds) bounds the wait: then `on_wait` is told
    once, in words, who holds the lock, and past the bound the lock is refused in one line.
    """

    def __init__(self, directory: str | Path, what: str, wait: bool = False,
                 timeout: float | None = None, on_wait=None):
        self.directory, self.what, self.wait = Path(directory), what, wait
        self.timeout, self.on_wait = timeout, on_wait
        self.fd: int | None = None

    def __enter__(self):
        path = self.directory / ".lock"
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise CharRNNError(f"cannot lock {self.what} {shown(self.directory)}: "
                               f"{e.strerror or e}") from None
        try:
            self._take()
        except BaseException:
            os.close(self.fd)
            self.fd = None
            raise
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        return self

    def _take(self) -> None:
        if self.wait and self.timeout is None:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            return
        deadline = time.monotonic() + (self.timeout or 0)
        told = False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            holder = self.holder()
            if not self.wait or time.monotonic() >= deadline:
                waited = f" after waiting {self.timeout:g} s" if self.wait else ""
                raise CharRNNError(f"{self.what} {shown(self.directory)} is in use by process "
                                   f"{holder}{waited}; wait for it to finish (or stop it) and "
                                   f"try again")
            if not told and self.on_wait is not None:
                self.on_wait(f"waiting for process {holder}, which holds the lock on "
                             f"{self.what} {shown(self.directory)} (giving up after "
                             f"{self.timeout:g} s)")
                told = True
            time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))

    def holder(self) -> str:
        """The PID written in the lock file, or "?" (not yet written, or not a number)."""
        text = os.pread(self.fd, 32, 0).decode("ascii", "replace").strip()
        return text if text.isdigit() else "?"

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock
            self.fd = None


def is_locked(directory: str | Path) -> bool:
    """Whether a live process holds `directory`'s DirectoryLock (a lock dies with its
    process, so a run directory that is not locked has no training running in it)."""
    try:
        fd = os.open(Path(directory) / ".lock", os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        if os.fstat(fd).st_size == 0:
            return True  # created, its holder not yet written: a run starting this instant
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the shared lock taken to test it


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(directory: Path) -> None:
    # Make the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
