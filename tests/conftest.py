"""Shared fixtures and helpers: text to train on, a temporary working directory, the CLI
as a user runs it, what a clean error looks like, and model checkpoints to sample from."""

import os
import random
import tempfile

import pytest
from click.testing import CliRunner

from charrnn.cli import main

# Keep test runs small and repeatable on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Measurements charrnn caches per user go to a directory of the test run's own.
os.environ["CHARRNN_CACHE_DIR"] = tempfile.mkdtemp(prefix="charrnn-test-cache-")

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards "
         "quietly hex every jovial king and queen").split()


def make_text(n_chars: int, seed: int = 0) -> str:
    """Word-like text with line breaks, n_chars long."""
    rng = random.Random(seed)
    out, size = [], 0
    while size < n_chars:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))).capitalize() + ".\n"
        out.append(line)
        size += len(line)
    return "".join(out)[:n_chars]


def random_model_file(path, vocab, cell="lstm", hidden_size=16, num_layers=2, *,
                      embed_dim=0, seed=0, scale=1.0, **header):
    """A randomly initialised model over `vocab` written as a checkpoint by the library's
    own writer (inference/trained.py: save_model). `scale` multiplies the weights (a
    state that moves more); `header`: step, best_val_loss, options, data_root, cfg."""
    import torch

    from charrnn.core.model import CharRNN
    from charrnn.inference.trained import save_model

    torch.manual_seed(seed)
    model = CharRNN(len(vocab), hidden_size, num_layers, cell, embed_dim=embed_dim)
    if scale != 1.0:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(scale)
    return save_model(path, model, vocab, **header)


def quiet(*args, **kwargs):
    """An `echo` that prints nothing."""


TINY = ["--hidden-size", "32", "--batch-size", "4", "--seq-len", "16", "--max-steps", "20",
        "--set", "train.eval_every=10", "--set", "train.log_every=10"]


def run(*args, input=None):
    """The charrnn command with these arguments, in process."""
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def snapshot(root):
    """Every file under root with its bytes: to check that nothing was written."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
            for p in sorted(root.rglob("*"))}


def assert_clean_error(result, *fragments):
    """One line starting Error:, a non-zero exit and no traceback, naming each fragment."""
    assert result.exit_code not in (0, None), result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    message = result.stderr.strip()  # progress may precede it on stdout
    assert message.count("\n") == 0 and message.startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in message, message


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in an empty temporary directory (data/ and runs/ land there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def corpus(workdir):
    path = workdir / "corpus.txt"
    path.write_text(make_text(20_000), encoding="utf-8")
    return path


def pytest_collection_modifyitems(config, items):
    """CUDA-marked tests run only where a CUDA GPU is visible (scripts/gpu_check.sh)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run scripts/gpu_check.sh on one)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
