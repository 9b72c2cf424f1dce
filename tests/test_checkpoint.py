import os
import pickle

import pytest
import torch

from charrnn.core.checkpoint import (
    FORMAT_VERSION,
    CheckpointHeader,
    load_checkpoint,
    read_header,
    save_checkpoint,
)
from charrnn.core.config import Config, ModelConfig
from charrnn.core.errors import CheckpointError
from charrnn.core.model import CharRNN
from charrnn.core.runs import find_checkpoint
from charrnn.corpus.text import TextOptions
from charrnn.corpus.vocab import Vocab
from charrnn.inference.trained import (
    load_model,
    model_checkpoint,
    model_from_checkpoint,
    save_model,
    vocab_of,
)


def minimal_state(model, chars):
    return model_checkpoint(model, Vocab(chars), step=3)


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


# ----------------------------------------------------------------------------------------
# the typed header, and the one writer of model checkpoints


def test_the_header_is_typed_and_checked(tmp_path):
    model = CharRNN(4, 8, 1, "gru")
    vocab = Vocab(list("ab\n"), end_count=2)  # a model of documents: 3 characters + the mark
    root = tmp_path / "data"
    save_model(tmp_path / "m.pt", model, vocab, step=7, best_val_loss=1.25, data_root=root,
               options=TextOptions(lower=True))
    header = read_header(load_checkpoint(tmp_path / "m.pt"))
    assert isinstance(header, CheckpointHeader)
    assert (header.step, header.best_val_loss, header.data_root) == (7, 1.25, root.resolve())
    assert header.chars == ("a", "b", "\n") and header.documents and header.vocab_size == 4
    assert header.config.model == ModelConfig(cell="gru", hidden_size=8, num_layers=1)
    assert header.text_options == TextOptions(lower=True).to_dict()
    assert vocab_of(header) == vocab and vocab_of(header).end == 3
    with pytest.raises(AttributeError):  # frozen
        header.step = 8


def test_counters_a_checkpoint_lacks_or_holds_damaged_read_as_none(tmp_path):
    model = CharRNN(3, 8, 1)
    state = model_checkpoint(model, Vocab(list("ab\n")))
    for damaged in ({"step": "7", "best_val_loss": float("inf")},  # never evaluated: inf
                    {"step": True, "best_val_loss": float("nan"), "elapsed": -1.0},
                    {"step": -3, "best_val_loss": None}):
        header = read_header({**state, **damaged})
        assert (header.step, header.best_val_loss, header.elapsed) == (None, None, None)
    old = {k: v for k, v in state.items() if k not in ("step", "data")}  # before both were kept
    header = read_header(old)
    assert header.step is None and header.data_root is None and not header.documents


def test_the_header_refuses_a_vocabulary_that_does_not_fit_the_weights():
    state = model_checkpoint(CharRNN(3, 8, 1), Vocab(list("ab\n")))
    with pytest.raises(CheckpointError, match="over 4 characters"):
        read_header({**state, "vocab": {"chars": list("abc\n")}})
    with pytest.raises(CheckpointError, match="no usable vocabulary"):
        read_header({**state, "vocab": {"chars": ["ab", "c", "d"]}})
    with pytest.raises(CheckpointError, match="empty vocabulary"):
        read_header({**state, "vocab": {"chars": []}})


def test_a_saved_model_loads_back_as_it_was_with_the_line_that_names_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = CharRNN(5, 8, 2, "lstm", embed_dim=3)
    cfg = Config(model=ModelConfig(cell="lstm", hidden_size=8, num_layers=2, embed_dim=3))
    save_model("m.pt", model, Vocab(list("abcd\n")), cfg, step=12, best_val_loss=1.0)
    trained = load_model("m.pt")
    assert trained.line == ("model: m.pt, step 12, best validation loss 1.0000 nats/char "
                            "(1.443 bits/char)")
    assert trained.header.config == cfg and trained.vocab.chars == list("abcd\n")
    for a, b in zip(model.state_dict().values(), trained.model.state_dict().values()):
        assert torch.equal(a, b)


def test_core_imports_nothing_from_the_packages_above_it():
    import ast
    from pathlib import Path

    import charrnn.core

    above = ("corpus", "training", "inference", "serve", "export", "novelty", "neurons", "cli")
    for path in Path(charrnn.core.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                assert not (node.level >= 2 and module.split(".")[0] in above), (path, module)
                assert not module.startswith(tuple(f"charrnn.{p}" for p in above)), (path, module)
