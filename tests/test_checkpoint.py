import os
import pickle

import pytest
import torch

from charrnn.core.checkpoint import (
    FORMAT_VERSION,
    find_checkpoint,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from charrnn.core.config import Config
from charrnn.core.errors import CheckpointError
from charrnn.core.model import CharRNN
from charrnn.corpus.text import TextOptions


def minimal_state(model, chars):
    return {"model": model.state_dict(), "config": Config().to_dict(),
            "vocab": {"chars": chars}, "text_options": TextOptions().to_dict(), "step": 3}


def test_round_trip_under_weights_only(tmp_path):
    torch.manual_seed(0)
    model = CharRNN(4, 256, 2)
    save_checkpoint(tmp_path / "m.pt", minimal_state(model, list("abc\n")))
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert state["format_version"] == FORMAT_VERSION and state["step"] == 3
    loaded, vocab, options = model_from_checkpoint(load_checkpoint(tmp_path / "m.pt"))
    assert vocab.chars == list("abc\n") and options == TextOptions()
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


class Payload:
    """Unpickling this would create a file: what a malicious checkpoint could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pt", "wb") as f:
        torch.save({"kind": "charrnn", "format_version": 1, "x": Payload(str(marker))}, f)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused to load .*could run code"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
    # The same with a bare pickle file, not a torch zip.
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Payload(str(marker))))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_truncated_and_foreign_files(tmp_path):
    model = CharRNN(4, 8, 1)
    save_checkpoint(tmp_path / "m.pt", minimal_state(model, list("abcd")))
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a charrnn checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_newer_format_is_refused(tmp_path):
    torch.save({"kind": "charrnn", "format_version": FORMAT_VERSION + 1}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="newer charrnn"):
        load_checkpoint(tmp_path / "new.pt")


@pytest.mark.parametrize("failure, raised, message", [
    (OSError(28, "No space left on device"), CheckpointError,
     "no space left on the device.*previous one is kept"),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0"),
     CheckpointError, "the write failed.*previous one is kept"),
    (OSError(27, "File too large"), CheckpointError, "file too large"),
    (KeyboardInterrupt(), KeyboardInterrupt, None),
])
def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failure, raised, message):
    model = CharRNN(4, 8, 1)
    save_checkpoint(tmp_path / "last.pt", minimal_state(model, list("abcd")))
    good = (tmp_path / "last.pt").read_bytes()

    def fails_midway(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise failure

    monkeypatch.setattr(torch, "save", fails_midway)
    with pytest.raises(raised, match=message):
        save_checkpoint(tmp_path / "last.pt", minimal_state(model, list("abcd")))
    assert (tmp_path / "last.pt").read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]  # no temporary file left behind


def test_find_checkpoint(tmp_path):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    with pytest.raises(CheckpointError, match="has no checkpoint"):
        find_checkpoint(run)
    (run / "last.pt").write_bytes(b"x")
    assert find_checkpoint(run) == run / "last.pt"
    (run / "best.pt").write_bytes(b"x")
    assert find_checkpoint(run) == run / "best.pt"
    with pytest.raises(CheckpointError, match="no runs found"):
        find_checkpoint(None, tmp_path / "runs")
    (tmp_path / "runs" / "latest").symlink_to("r1")
    assert find_checkpoint(None, tmp_path / "runs") == tmp_path / "runs" / "latest" / "best.pt"
