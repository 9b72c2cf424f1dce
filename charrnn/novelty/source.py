"""Which training text a novelty check compares with: the prepared directory given, or the
one the model's checkpoint records (core/checkpoint.py: data_root_of).

    index = training_index(data_dir=None, state=load_checkpoint(path), progress=True)
    index = training_index(recorded=loaded.data_root)    # the directory already read from it
"""

from __future__ import annotations

from pathlib import Path

from ..core.checkpoint import data_root_of
from ..core.errors import DataError
from ..corpus.prepared import PreparedData
from .build import require_pydivsufsort
from .index import SuffixIndex, open_index


def training_data(data_dir: str | Path | None = None, state: dict | None = None,
                  recorded: Path | None = None) -> PreparedData:
    """The prepared directory `data_dir`, else the one the checkpoint `state` was trained
    on (or `recorded`, that directory as read from it earlier); one line saying how to point
    at it when it is not there."""
    if data_dir is not None:
        root = Path(data_dir)
        if not (root / "meta.json").is_file():
            raise DataError(f"--data {root} is not a prepared directory (no meta.json); give "
                            f"the directory `charrnn prepare` wrote, e.g. data/corpus")
        return PreparedData(root)
    root = recorded if recorded is not None else data_root_of(state or {})
    if root is None:
        raise DataError("the model does not record its training data; point at it with "
                        "--data DIR (the prepared directory, e.g. data/corpus)")
    if not (root / "meta.json").is_file():
        raise DataError(f"the model's training data {root} is not there (moved or deleted); "
                        f"point at it with --data DIR, or prepare the corpus again into it")
    return PreparedData(root)


def training_index(data_dir=None, state=None, progress: bool = False, echo=None,
                   recorded: Path | None = None) -> SuffixIndex:
    """The novelty index of the training split (built into the cache if needed)."""
    require_pydivsufsort()
    return open_index(training_data(data_dir, state, recorded), "train", progress=progress,
                      echo=echo)
