"""A directory's small files read many at a time (corpus/batched.py): the preparation is
the one that reading each file alone gives, byte for byte, whatever the files hold."""

import functools
import json
import tracemalloc

import pytest

import charrnn.corpus.prepare as prep
from charrnn.corpus import batched, passes
from charrnn.corpus.prepare import prepare
from charrnn.corpus.text import TextOptions


def mixed_tree(root):
    """Files of every kind the batched reading must hand on, or take itself."""
    files = {f"a/plain{i:02d}.txt": f"/* plain {i} */\nint x{i};\n".encode() * (1 + i % 5)
             for i in range(40)}
    files.update({
        "a/empty.txt": b"",
        "a/Upper.TXT": b"MIXED Case Text\n" * 3,
        "b/accents.txt": "café, naïve, Zürich ✓\n".encode(),
        "b/bom.txt": "\ufeffwith a byte-order mark\n".encode(),
        "b/crlf.txt": b"windows\r\nlines\r\n",
        "b/lone_cr.txt": b"ends with cr\r",
        "b/nl_first.txt": b"\nstarts with a newline\n",
        "b/binary.bin": b"\x7fELF\0\0\x01" + b"text" * 10,
        "b/late_nul.txt": b"x" * 9000 + b"\0 after the sniffed block\n",
        "b/latin1.txt": b"caf\xe9\n" * 4,
        "c/large.txt": b"a large file, read alone\n" * 12_000,
    })
    files.update({f"c/z{i:03d}.txt": f"more text {i}\n".encode() for i in range(60)})
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def outputs(out):
    got = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "meta.json"}
    meta = json.loads((out / "meta.json").read_text())
    meta.pop("seconds")
    return got, meta


def prepare_both(tmp_path, monkeypatch, inputs, **kwargs):
    """(batched, each file alone) preparations of `inputs`."""
    prepare(inputs, tmp_path / "batched", **kwargs)
    monkeypatch.setattr(prep, "count", functools.partial(passes.count, batched=False))
    prepare(inputs, tmp_path / "alone", **kwargs)
    monkeypatch.undo()
    return outputs(tmp_path / "batched"), outputs(tmp_path / "alone")


@pytest.mark.parametrize("options", [
    TextOptions(), TextOptions(lower=True), TextOptions(keep_crlf=True),
    TextOptions(encoding="latin-1"), TextOptions(unidecode=True, lower=True)])
@pytest.mark.parametrize("small", [False, True])
def test_batched_reading_prepares_what_reading_each_file_alone_does(
        tmp_path, monkeypatch, options, small):
    mixed_tree(tmp_path / "src")
    (tmp_path / "single.txt").write_text("a file given by itself\n" * 5)
    if small:  # many batches, and files too large for one read alone
        monkeypatch.setattr(batched, "BATCH_BYTES", 300)
        monkeypatch.setattr(batched, "SMALL_BYTES", 100)
    taken = []
    count_plain = batched._count_plain
    monkeypatch.setattr(batched, "_count_plain",
                        lambda b, lo, hi, *a: taken.append(hi - lo) or count_plain(b, lo, hi, *a))
    inputs = [str(tmp_path / "src"), str(tmp_path / "single.txt")]
    fast, alone = prepare_both(tmp_path, monkeypatch, inputs, options=options,
                               chunk_bytes=4096)
    assert fast == alone
    assert sum(taken) >= 80  # the plain files went the batched way
    assert fast[1]["skipped"] == (1 if options.encoding == "latin-1" else 2)


def test_a_directory_of_plain_files_prepares_as_alone(tmp_path, monkeypatch):
    for i in range(300):
        (tmp_path / "src" / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / f"d{i % 4}" / f"f{i}.h").write_text(f"#define F{i}\n" * (i % 9))
    fast, alone = prepare_both(tmp_path, monkeypatch, [str(tmp_path / "src")], val_frac=0.2)
    assert fast == alone and fast[1]["documents"] == sum(1 for i in range(300) if i % 9)


def traced_peak(tmp_path, n: int) -> int:
    src = tmp_path / f"src{n}"
    for i in range(n):
        (src / f"d{i // 500}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i // 500}" / f"f{i:05d}.txt").write_text(f"file {i}\n" + "text " * 20)
    tracemalloc.start()
    try:
        prepare([str(src)], tmp_path / f"o{n}", chunk_bytes=1 << 16)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_grows_by_compact_records_not_an_object_a_file(tmp_path, monkeypatch):
    """Past what a batch and a chunk hold (made small here), memory grows by the files'
    records: arrays, about a hundred bytes a file, where a Python object a file (a tuple
    and two strings) would add more than two hundred."""
    monkeypatch.setattr(batched, "BATCH_BYTES", 1 << 16)
    monkeypatch.setattr(batched, "BATCH_FILES", 64)
    small, large = traced_peak(tmp_path, 1000), traced_peak(tmp_path, 5000)
    assert (large - small) / 4000 < 200
