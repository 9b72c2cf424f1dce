"""Prepared datasets: a directory that `prepare` wrote, checked when opened.

    data = open_corpus("corpus.txt")         # prepares into data/corpus/ unless up to date
    train_ids = data.split("train")          # the encoded split, a numpy array

How the training split is cut into streams for truncated backpropagation: streams.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from ..core.device import available_memory
from ..core.errors import DataError
from .documents import Documents
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

    def documents(self) -> Documents:
        """The documents (documents.py): one for a corpus of one file or from before."""
        if getattr(self, "_documents", None) is None:
            self._documents = Documents.load(self.root, self.meta)
        return self._documents

    @property
    def n_documents(self) -> int:
        return int(self.meta.get("documents", 1))

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
