"""Prepared datasets and the stream layout of truncated backpropagation through time.

    data = open_corpus("corpus.txt")         # prepares into data/corpus/ unless up to date
    streams = Streams(data.split("train"), batch_size=32, seq_len=64, device="cpu")
    idx, targets = streams.batch(0)          # (B, T) each; targets are idx shifted by one

The training split is cut into B contiguous streams, one per batch row, each L = (N-1)//B
characters long; stream b starts at offset b*L. Chunk i of the epoch is columns
[i*T, (i+1)*T) of every stream, so row b of chunk i+1 continues row b of chunk i and the
hidden state can be carried across them:

    text:    a b c d e f g h i j k l m n o p q r s t u v w x (y)
    B = 3:   stream 0: a b c d e f g h      chunk 0 = columns 0-3, chunk 1 = columns 4-7
             stream 1: i j k l m n o p
             stream 2: q r s t u v w x      the target of x is y, the next character

With several processes (DDP), rank r owns rows [r*B/W, (r+1)*B/W) of the same layout, so
W processes see exactly what one process with B rows sees.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from ..core.device import available_memory
from ..core.errors import DataError
from .prepare import FORMAT_VERSION, SPLITS, prepare
from .text import TextOptions
from .vocab import Vocab


DTYPES = ("uint8", "uint16", "uint32")


class PreparedData:
    """A directory written by `prepare`: meta.json, vocab.json and one .bin per split.

    meta.json and vocab.json are checked against each other when opened, and each split
    when read: a file we cannot trust is refused with its name and what is wrong.
    """

    def __init__(self, root: str | Path, mapped: bool | None = None):
        """`mapped`: how `split` opens the splits by default (see there)."""
        self.root, self.mapped = Path(root), mapped
        meta_path = self.root / "meta.json"
        try:
            with open(meta_path, encoding="utf-8") as f:
                self.meta = json.load(f)
        except FileNotFoundError:
            raise DataError(f"{self.root} is not a prepared data directory (no meta.json); "
                            f"run: charrnn prepare CORPUS -o {self.root}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{meta_path} is not valid JSON ({e}); prepare the corpus again") from None
        except OSError as e:
            raise DataError(f"cannot read {meta_path}: {e.strerror or e}") from None
        if not isinstance(self.meta, dict):
            raise DataError(f"{meta_path} is not a JSON object; prepare the corpus again")
        version = self.meta.get("format_version")
        if version != FORMAT_VERSION:
            raise DataError(f"{self.root} was prepared in format {version!r}, this charrnn reads "
                            f"format {FORMAT_VERSION}; prepare the corpus again")
        self.vocab = Vocab.load(self.root / "vocab.json")
        self._check_meta(meta_path)

    def _check_meta(self, meta_path: Path) -> None:
        meta = self.meta

        def bad(part: str):
            return DataError(f"{meta_path}: {part}; prepare the corpus again")

        if meta.get("dtype") not in DTYPES or meta.get("byteorder", "little") != "little":
            raise bad(f"dtype {meta.get('dtype')!r} is not one of {', '.join(DTYPES)}")
        if meta.get("vocab_size") != len(self.vocab):
            raise bad(f"vocab_size {meta.get('vocab_size')!r} differs from vocab.json's "
                      f"{len(self.vocab)} characters")
        if np.dtype(meta["dtype"]) != self.vocab.dtype:
            raise bad(f"dtype {meta['dtype']} does not fit a vocabulary of {len(self.vocab)}")
        splits = meta.get("splits")
        if not isinstance(splits, dict) or not all(
                k in SPLITS and type(v) is int and v >= 0 for k, v in splits.items()):
            raise bad("'splits' must map train/val/test to character counts")
        try:
            self.options = TextOptions.from_dict(meta.get("options"))
        except TypeError:
            raise bad("'options' are not the text options charrnn writes") from None

    @property
    def name(self) -> str:
        return self.root.name

    def split(self, name: str, mapped: bool | None = None) -> np.ndarray:
        """The encoded split, read into memory; memory-mapped when `mapped`, which by
        default it is only when it would take over a quarter of the available memory.

        A split read into memory cannot change under a running job. A mapped one may be
        replaced (a new preparation writes new files), but one truncated in place would
        take pages from under the job (SIGBUS): its size is checked when opened, and a
        split that is modified elsewhere is a split to read, not to map.
        """
        size = self.meta["splits"].get(name, 0)
        if size == 0:
            raise DataError(f"{self.root} has no {name} split")
        path = self.root / f"{name}.bin"
        dtype = np.dtype(self.meta["dtype"]).newbyteorder("<")
        expected = size * dtype.itemsize
        mapped = self.mapped if mapped is None else mapped
        if mapped is None:
            free = available_memory(torch.device("cpu"))
            mapped = free is not None and expected > free // 4
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size != expected:
                    raise DataError(f"{path} has {os.fstat(f.fileno()).st_size:,} bytes, "
                                    f"meta.json says {expected:,}; prepare the corpus again")
                if mapped:
                    # Copy-on-write: torch can wrap it without a copy, nothing reaches the file.
                    return np.memmap(f, dtype=dtype, mode="c", shape=(size,))
                array = np.empty(size, dtype=dtype)
                got = f.readinto(memoryview(array).cast("B"))
        except FileNotFoundError:
            raise DataError(f"{path} is missing; prepare the corpus again") from None
        except OSError as e:
            raise DataError(f"cannot read {path}: {e.strerror or e}") from None
        if got != expected:
            raise DataError(f"{path} was cut short while being read; prepare the corpus again")
        if len(array) and int(array.max()) >= len(self.vocab):
            raise DataError(f"{path} holds ids beyond its vocabulary of {len(self.vocab)}; "
                            f"prepare the corpus again")
        return array


def open_corpus(path: str | Path, data_root: str | Path = "data",
                options: TextOptions | None = None, val_frac: float = 0.1,
                progress: bool = False, echo=None, vocab: Vocab | None = None,
                unk: str | None = None) -> PreparedData:
    """A prepared directory as is, or a text file prepared into data_root/<stem>/ on the fly
    (with `vocab`: encoded with that vocabulary, as `prepare --vocab` does).

    A previous preparation is reused when it came from the same file (path, size and
    modification time) with the same options and vocabulary. Several processes opening
    the same new corpus at once prepare it once: the others wait and reuse it.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "meta.json").exists():
            return PreparedData(path)
        raise DataError(f"{path} is a directory but not a prepared dataset (no meta.json); "
                        f"pass a text file, or run: charrnn prepare {path} first")
    if not path.exists():
        raise DataError(f"corpus not found: {path}")
    if not path.is_file():
        raise DataError(f"not a regular file: {path}")
    options = options or TextOptions()
    out = Path(data_root) / path.stem

    def up_to_date():
        return _up_to_date(out, path, options, val_frac, vocab, unk)

    if not up_to_date():
        if echo:
            echo(f"preparing {path} -> {out}/")
        prepare([str(path)], out, val_frac=val_frac, options=options, vocab=vocab, unk=unk,
                progress=progress, reuse=lambda: {} if up_to_date() else None)
    return PreparedData(out)


def _up_to_date(out: Path, source: Path, options: TextOptions, val_frac: float,
                vocab: Vocab | None, unk: str | None) -> bool:
    """Whether `out` holds `source` prepared exactly as this call would prepare it: same
    file, options and split, and a vocabulary built from the text or the given one."""
    try:
        meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
        [recorded] = meta["sources"]
        stat = source.stat()
        same = (meta.get("format_version") == FORMAT_VERSION
                and recorded["path"] == str(source.resolve())
                and recorded["bytes"] == stat.st_size
                and recorded["mtime_ns"] == stat.st_mtime_ns
                and meta["options"] == options.to_dict()
                and meta["val_frac"] == val_frac and meta["test_frac"] == 0
                and meta["vocab_given"] is (vocab is not None) and meta["unk"] == unk)
        return same and (vocab is None or Vocab.load(out / "vocab.json").chars == vocab.chars)
    except (OSError, ValueError, KeyError, TypeError, DataError):
        return False


# ----------------------------------------------------------------------------------------
# streams


def stream_length(n: int, batch_size: int) -> int:
    """Characters per stream when n characters are cut into batch_size streams."""
    return (n - 1) // batch_size


def as_index(ids: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host ids as a tensor, without a copy where the device can use them as they are.

    uint8 ids stay uint8 (4x less memory than int32). uint32 ids are below 2^31, so their
    bytes already are valid int32. uint16 ids stay uint16 on the host (the model widens each
    batch); for a GPU they become int32, which embedding lookups there accept directly.
    """
    if ids.dtype == np.uint32:
        ids = ids.view(np.int32)
    elif ids.dtype == np.uint16 and device.type != "cpu":
        ids = ids.astype(np.int32)
    return torch.from_numpy(ids)


class Streams:
    """The (B, T) chunks of one epoch over `array`, for rows [row_start, row_stop).

    When `resident` (the default whenever the rows fit), this process's part of the split is
    one tensor on the device and every batch is a strided view of it: no copy per step.
    Otherwise batches are gathered from the memory map into pinned memory and copied
    asynchronously, one step ahead of use.
    """

    def __init__(self, array: np.ndarray, batch_size: int, seq_len: int,
                 device: torch.device | str = "cpu", row_start: int = 0,
                 row_stop: int | None = None, resident: bool | None = None):
        self.device = torch.device(device)
        self.batch_size, self.seq_len = batch_size, seq_len
        n = len(array)
        self.stream_len = stream_length(n, batch_size)
        if self.stream_len < seq_len:
            smallest = (n - 1) // seq_len
            raise DataError(
                f"corpus too short: {n:,} characters cannot fill batch_size {batch_size} x "
                f"seq_len {seq_len}; use --batch-size {max(1, smallest)} or less, or a "
                f"shorter --seq-len")
        self.steps_per_epoch = self.stream_len // seq_len
        row_stop = batch_size if row_stop is None else row_stop
        self.rows = row_stop - row_start
        L = self.stream_len
        # The rows plus one character: the target of each row's last character.
        part = array[row_start * L: row_stop * L + 1]
        if resident is None:
            resident = _fits(part.nbytes, self.device)
        self.resident = resident
        if resident:
            self.data = as_index(np.ascontiguousarray(part), self.device).to(self.device)
        else:
            self.part = part
            self._offsets = (np.arange(self.rows) * L)[:, None] + np.arange(seq_len + 1)
            self._next: tuple[int, torch.Tensor] | None = None

    def batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(idx, targets) for chunk i of the epoch, each (rows, T)."""
        T, L = self.seq_len, self.stream_len
        if self.resident:
            idx = self.data.as_strided((self.rows, T), (L, 1), i * T)
            targets = self.data.as_strided((self.rows, T), (L, 1), i * T + 1)
            return idx, targets
        if self._next is not None and self._next[0] == i:
            chunk = self._next[1]
        else:
            chunk = self._gather(i)
        # Start the copy of the next chunk now, while the caller computes on this one.
        nxt = (i + 1) % self.steps_per_epoch
        self._next = (nxt, self._gather(nxt))
        return chunk[:, :-1], chunk[:, 1:]

    def _gather(self, i: int) -> torch.Tensor:
        host = as_index(self.part[self._offsets + i * self.seq_len], self.device)
        if self.device.type == "cuda":
            return host.pin_memory().to(self.device, non_blocking=True)
        return host.to(self.device)


def _fits(nbytes: int, device: torch.device) -> bool:
    if device.type != "cuda":
        return True  # on the host the memory map itself is the storage
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes * 4 < free  # ids are widened to int32 at most; leave room for the model
