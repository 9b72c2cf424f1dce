"""The novelty cache (DIR/novelty/) as untrusted input: every damaged header or array is
reported in one line and rebuilt, never a traceback, a hang or a wrong answer; a held lock
is waited for visibly and for a bounded time; a mapped file truncated in place is an
error, not a SIGBUS."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_text

from charrnn.core.errors import DataError
from charrnn.core.files import DirectoryLock
from charrnn.corpus.prepare import prepare
from charrnn.corpus.prepared import PreparedData
from charrnn.novelty import novelty_report, open_index

pytest.importorskip("pydivsufsort")

PROBE = make_text(3000, seed=7)[1000:1400] + "zzqx novel tail"


@pytest.fixture
def data(tmp_path):
    (tmp_path / "c.txt").write_text(make_text(150_000))
    prepare([str(tmp_path / "c.txt")], tmp_path / "d", val_frac=0.05)
    data = PreparedData(tmp_path / "d")
    open_index(data)  # the cache, built once
    return data


def fresh_report(data):
    return novelty_report(open_index(data), PROBE).to_dict()


def edit_json(**changes):
    def edit(folder):
        info = json.loads((folder / "index.json").read_text())
        for key, value in changes.items():
            info[key] = value(info) if callable(value) else value
        (folder / "index.json").write_text(json.dumps(info))
    return edit


def write_bin(make):
    def edit(folder):
        size = (folder / "index.bin").stat().st_size
        (folder / "index.bin").write_bytes(make(size))
    return edit


def swap_offsets(info):
    offsets = dict(info["offsets"])
    offsets["sa"], offsets["isa"] = offsets["isa"], offsets["sa"]
    return offsets


def fifo_json(folder):
    (folder / "index.json").unlink()
    os.mkfifo(folder / "index.json")


DAMAGE = {
    "random bytes in index.bin": write_bin(lambda n: np.random.default_rng(0).bytes(n)),
    "index.bin of zeros": write_bin(lambda n: bytes(n)),
    "index.bin cut short": write_bin(lambda n: bytes(n // 2)),
    "dtype float64": edit_json(dtype="float64"),
    "dtype object": edit_json(dtype="object"),
    "dtype nonsense": edit_json(dtype="nonsense"),
    "dtype int8": edit_json(dtype="int8"),
    "offsets missing": edit_json(offsets={}),
    "negative offsets": edit_json(offsets=lambda i: {k: -v - 8 for k, v in i["offsets"].items()}),
    "sa and isa swapped": edit_json(offsets=swap_offsets),
    "garbage blocks": edit_json(blocks=[["a", None], 3]),
    "fanout 0": edit_json(fanout=0),
    "fanout 1": edit_json(fanout=1),
    "fanout 64.0": edit_json(fanout=64.0),
    "newline_id a string": edit_json(newline_id="\n"),
    "newline_id 999": edit_json(newline_id=999),
    "not an object": lambda folder: (folder / "index.json").write_text("[1, 2]"),
    "index.json a FIFO": fifo_json,
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_cache_is_one_line_and_rebuilt(data, damage):
    expected = fresh_report(data)
    DAMAGE[damage](data.root / "novelty")
    said = []
    index = open_index(data, echo=said.append)
    assert index.built
    assert any("is damaged" in line and "building it again" in line for line in said), said
    assert all("\n" not in line for line in said)
    assert novelty_report(index, PROBE).to_dict() == expected
    again = []
    assert not open_index(data, echo=again.append).built and again == []  # the new one holds


def test_a_split_edited_in_place_with_its_mtime_restored_is_indexed_again(data):
    path = data.root / "train.bin"
    st = os.stat(path)
    ids = np.fromfile(path, dtype=np.dtype(data.meta["dtype"]))
    ids[:400] = ids[5000:5400]  # same size, other contents
    with open(path, "r+b") as f:
        f.write(ids.tobytes())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    index = open_index(data)
    assert index.built
    from charrnn.novelty import in_memory_index
    fresh = in_memory_index(np.asarray(index.text), data.vocab)
    assert novelty_report(index, PROBE).to_dict() == novelty_report(fresh, PROBE).to_dict()


def test_a_held_lock_names_its_holder_and_gives_up_after_the_bound(data):
    said = []
    with DirectoryLock(data.root, "prepared directory"):
        with pytest.raises(DataError, match=f"in use by process {os.getpid()} after waiting"):
            open_index(data, echo=said.append, lock_wait=0.3)
    assert len(said) == 1 and f"waiting for process {os.getpid()}" in said[0]
    assert open_index(data, lock_wait=0.3) is not None  # free again


TRUNCATE = """
import os, sys
from charrnn.core.errors import DataError
from charrnn.corpus.prepared import PreparedData
from charrnn.novelty import novelty_report, open_index
data = PreparedData(sys.argv[1])
index = open_index(data)
novelty_report(index, "the quick brown fox")
os.truncate(sys.argv[2], 4096)  # in place: the mapping's pages past it are gone
for _ in range(2):  # a long-lived server asks again: the same error, no SIGBUS
    try:
        novelty_report(index, "the quick brown fox" * 50)
    except DataError as e:
        print("refused:", e)
"""


@pytest.mark.parametrize("name", ["train.bin", "novelty/index.bin"])
def test_a_mapped_file_truncated_in_place_is_an_error_not_sigbus(data, name):
    r = subprocess.run([sys.executable, "-c", TRUNCATE, str(data.root), str(data.root / name)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and all("was cut short while in use" in line for line in lines)
    assert name.split("/")[-1] in lines[0]
