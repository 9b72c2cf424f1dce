"""`charrnn export`: the ONNX file against PyTorch, the torch-free example against
`charrnn sample`, and the failures that must leave no file."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from charrnn.core.checkpoint import load_checkpoint
from charrnn.core.errors import CharRNNError
from charrnn.core.model import CharRNN, hidden_tensors
from charrnn.corpus.text import TextOptions
from charrnn.corpus.vocab import Vocab
from charrnn.export import exporter
from charrnn.export.exporter import ExportError, export_onnx
from charrnn.export.metadata import read_metadata
from charrnn.inference.trained import model_from_checkpoint

from conftest import assert_clean_error, make_text, random_model_file, run, snapshot

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "onnx_sample.py"
TEXT = make_text(4000)
H = 16


def random_checkpoint(path, cell="lstm", num_layers=2, embed_dim=0, seed=0,
                      options=TextOptions(), scale=1.0):
    """A checkpoint of a randomly initialised model. `scale` > 1 makes the state move more
    (greedy text settles less soon); well past 1.5 the dynamics turn chaotic and float
    rounding alone grows past any tolerance over 1,000 steps, as for no trained model."""
    return random_model_file(path, Vocab.from_text(TEXT), cell, H, num_layers,
                             embed_dim=embed_dim, seed=seed, scale=scale, options=options,
                             step=42, best_val_loss=2.5)


def export_checkpoint(checkpoint, out):
    state = load_checkpoint(checkpoint)
    model, vocab, options = model_from_checkpoint(state)
    return export_onnx(model, vocab, options, out, state=state)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A GRU briefly trained through the CLI (~4 s): greedy text with some structure."""
    root = tmp_path_factory.mktemp("trained")
    (root / "corpus.txt").write_text(make_text(20_000), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        r = run("train", "corpus.txt", "--model", "gru", "--hidden-size", "32", "--num-layers",
                "2", "--batch-size", "8", "--seq-len", "32", "--max-steps", "120", "--lr",
                "0.01", "--set", "train.eval_every=120", "--set", "train.log_every=60",
                "--name", "tiny", "-q")
    assert r.exit_code == 0, r.output
    return root / "runs" / "tiny"


def without_torch(tmp_path):
    """An environment where `import torch` fails: a torch.py ahead of site-packages."""
    blocker = tmp_path / "no_torch"
    blocker.mkdir(exist_ok=True)
    (blocker / "torch.py").write_text("raise ImportError('torch is blocked in this test')\n")
    return {**os.environ, "PYTHONPATH": str(blocker), "OMP_NUM_THREADS": "1"}


def example(tmp_path, *args):
    r = subprocess.run([sys.executable, str(EXAMPLE), *map(str, args)], env=without_torch(tmp_path),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


# ----------------------------------------------------------------------------------------
# the file against PyTorch


@pytest.mark.parametrize("embed_dim", [0, 8], ids=["one-hot", "embedding"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_onnxruntime_matches_pytorch_with_state_carried(tmp_path, cell, num_layers, embed_dim):
    ckpt = random_checkpoint(tmp_path / "m.pt", cell, num_layers, embed_dim)
    exported = export_checkpoint(ckpt, tmp_path / "m.onnx")
    assert exported.max_diff <= 1e-4 and exported.size == (tmp_path / "m.onnx").stat().st_size
    model, vocab, _ = model_from_checkpoint(load_checkpoint(ckpt))
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    names = ["h", "c"] if cell == "lstm" else ["h"]
    assert [i.name for i in session.get_inputs()] == ["ids", *names]
    assert [o.name for o in session.get_outputs()] == ["logits", *(n + "_out" for n in names)]
    gen = torch.Generator().manual_seed(1)
    for B in (1, 8):
        ids = torch.randint(len(vocab), (B, 1000), generator=gen)
        hidden = model.init_hidden(B)
        state = dict(zip(names, (t.numpy() for t in hidden_tensors(hidden))))
        start, worst = 0, 0.0
        for size in [1, 1, 2, 50, 1, 300, 17, 128, 500]:  # state carried over each boundary
            chunk = ids[:, start:start + size]
            start += size
            with torch.no_grad():
                logits, hidden = model(chunk, hidden)
            out = session.run(None, {"ids": chunk.numpy(), **state})
            assert out[0].shape == (B, chunk.shape[1], len(vocab))
            state = dict(zip(names, out[1:]))
            worst = max(worst, float(np.abs(out[0] - logits.numpy()).max()))
        assert start >= 1000
        assert worst < 1e-4, (B, worst)
        for got, want in zip(out[1:], hidden_tensors(hidden)):
            assert np.abs(got - want.numpy()).max() < 1e-4


def test_the_file_carries_what_sampling_needs(tmp_path):
    options = TextOptions(lower=True, keep_crlf=True)
    ckpt = random_checkpoint(tmp_path / "m.pt", "lstm", 2, 8, options=options)
    export_checkpoint(ckpt, tmp_path / "m.onnx")
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta["vocab"] == Vocab.from_text(TEXT).chars
    assert meta["text_options"] == options.to_dict()
    assert meta["model"] == {"cell": "lstm", "vocab_size": len(meta["vocab"]), "hidden_size": H,
                             "num_layers": 2, "embed_dim": 8, "parameters": meta["model"]["parameters"]}
    assert meta["step"] == 42 and meta["best_val_loss"] == 2.5
    assert meta["state"] == ["h", "c"]
    # The example lowercases the prime as the model's text options say.
    assert example(tmp_path, tmp_path / "m.onnx", "-p", "THE ", "-n", "5", "-t", "0").startswith("the ")


def test_a_one_hot_model_does_not_carry_its_identity_table(tmp_path):
    # V = 200: the (V, V) table would add 160 kB to ~55 kB of weights.
    torch.manual_seed(0)
    model = CharRNN(200, H, 1, "gru")
    vocab = Vocab([chr(0x100 + i) for i in range(200)])
    exported = export_onnx(model, vocab, TextOptions(), tmp_path / "m.onnx")
    weights, table = 4 * sum(p.numel() for p in model.parameters()), 4 * 200 * 200
    assert weights < exported.size < weights + table // 4


# ----------------------------------------------------------------------------------------
# the torch-free example


def test_torch_is_really_blocked_for_the_example(tmp_path):
    r = subprocess.run([sys.executable, "-c", "import torch"], env=without_torch(tmp_path),
                       capture_output=True, text=True)
    assert r.returncode != 0 and "torch is blocked" in r.stderr


def test_greedy_text_of_the_example_equals_charrnn_sample(trained, tmp_path):
    r = run("export", trained, "-o", tmp_path / "m.onnx")
    assert r.exit_code == 0, r.output
    for prime in ("The ", "Quietly the lazy dog"):
        want = run("sample", trained, "-t", "0", "-n", "500", "-p", prime, "-q")
        assert want.exit_code == 0, want.output
        got = example(tmp_path, tmp_path / "m.onnx", "-t", "0", "-n", "500", "-p", prime)
        assert len(got) == len(prime) + 500 + 1
        assert got == want.stdout


@pytest.mark.parametrize("cell,embed_dim", [("lstm", 0), ("rnn", 8)])
def test_greedy_text_matches_for_other_cells(tmp_path, cell, embed_dim):
    ckpt = random_checkpoint(tmp_path / "m.pt", cell, 2, embed_dim, seed=2, scale=1.5)
    export_checkpoint(ckpt, tmp_path / "m.onnx")
    want = run("sample", ckpt, "-t", "0", "-n", "500", "-q")  # blank prime: after a newline
    got = example(tmp_path, tmp_path / "m.onnx", "-t", "0", "-n", "500")
    assert got == want.stdout
    assert len(set(got)) > 3  # the text moves: a divergence would show


def test_example_samples_with_temperature_and_top_k(tmp_path):
    ckpt = random_checkpoint(tmp_path / "m.pt", "gru", 1, 0, seed=5)
    export_checkpoint(ckpt, tmp_path / "m.onnx")
    model = tmp_path / "m.onnx"

    def sample(*args):
        return example(tmp_path, model, "-p", "the ", "-n", "200", *args)

    first = sample("-t", "0.9", "--seed", "1")
    assert first.startswith("the ") and len(first) == 4 + 200 + 1
    assert set(first) <= set(TEXT)
    assert sample("-t", "0.9", "--seed", "1") == first  # same seed, same text
    assert sample("-t", "0.9", "--seed", "2") != first
    # With only the likeliest character allowed, any temperature is greedy.
    assert sample("-t", "1.5", "--top-k", "1", "--seed", "7") == sample("-t", "0")


# ----------------------------------------------------------------------------------------
# the command and its failures


def test_export_of_the_latest_run(trained, workdir):
    runs = trained.parent
    r = run("export", "--runs", runs, "-o", "model.onnx")
    assert r.exit_code == 0, r.output
    assert "wrote model.onnx" in r.stdout and "matches PyTorch" in r.stdout
    assert "model: " in r.stderr and "step 120" in r.stderr
    assert read_metadata(workdir / "model.onnx")["model"]["cell"] == "gru"
    assert [p.name for p in workdir.iterdir()] == ["model.onnx"]  # no temporary file left


def test_an_export_prints_nothing_from_the_exporter(tmp_path, capfd):
    ckpt = random_checkpoint(tmp_path / "m.pt", "lstm", 2)
    export_checkpoint(ckpt, tmp_path / "m.onnx")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_unwritable_output(trained, workdir):
    if os.geteuid() == 0:  # root writes anywhere: a path under a regular file instead
        (workdir / "file").write_text("x")
        target, message = "file/model.onnx", "cannot write file/model.onnx"
    else:
        (workdir / "ro").mkdir(mode=0o500)
        target, message = "ro/model.onnx", "no permission"
    before = snapshot(workdir)
    assert_clean_error(run("export", trained, "-o", target), message)
    assert_clean_error(run("export", trained, "-o", "missing/model.onnx"), "does not exist")
    assert snapshot(workdir) == before


def test_output_path_that_is_a_directory(trained, workdir):
    (workdir / "model.onnx").mkdir()
    before = snapshot(workdir)
    assert_clean_error(run("export", trained, "-o", "model.onnx"), "is a directory")
    assert snapshot(workdir) == before


def test_damaged_checkpoint(trained, workdir):
    data = (trained / "best.pt").read_bytes()
    (workdir / "cut.pt").write_bytes(data[: len(data) // 2])
    before = snapshot(workdir)
    assert_clean_error(run("export", "cut.pt", "-o", "model.onnx"), "cut.pt",
                       "not a readable checkpoint")
    assert snapshot(workdir) == before


def test_missing_extra(trained, workdir, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    assert_clean_error(run("export", trained, "-o", "model.onnx"),
                       "onnx", "pip install -e '.[export]'", "pip install onnx onnxruntime")
    assert snapshot(workdir) == {}


def test_a_file_that_does_not_match_is_refused_and_the_old_one_kept(trained, workdir,
                                                                     monkeypatch):
    assert run("export", trained, "-o", "model.onnx").exit_code == 0
    before = snapshot(workdir)
    real = exporter.onnx_bytes

    def slightly_off(model):
        other = copy.deepcopy(model)
        with torch.no_grad():
            other.head.bias.add_(1e-3)
        return real(other)

    monkeypatch.setattr(exporter, "onnx_bytes", slightly_off)
    assert_clean_error(run("export", trained, "-o", "model.onnx"),
                       "does not match PyTorch", "the previous one is kept")
    assert snapshot(workdir) == before
    assert_clean_error(run("export", trained, "-o", "new.onnx"), "nothing written")
    assert snapshot(workdir) == before


class LogGammaHead(torch.nn.Linear):
    """An output layer with an operator ONNX has no mapping for."""

    def forward(self, x):
        return torch.lgamma(super().forward(x))


def test_what_the_exporter_cannot_handle_is_named_in_one_line(tmp_path, capfd):
    torch.manual_seed(0)
    model = CharRNN(10, H, 2, "lstm").eval()
    model.head = LogGammaHead(H, 10)
    with pytest.raises(ExportError) as e:
        export_onnx(model, Vocab(list("abcdefghij")), TextOptions(), tmp_path / "m.onnx")
    message = str(e.value)
    assert "\n" not in message and "the output layer" in message and "lgamma" in message
    assert isinstance(e.value, CharRNNError)
    assert capfd.readouterr() == ("", "")  # no stack of exporter warnings either
    assert list(tmp_path.iterdir()) == []
