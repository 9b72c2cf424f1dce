import os
import random

import pytest

# Keep test runs small and repeatable on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

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
