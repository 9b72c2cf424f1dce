"""charrnn: character-level recurrent language models, trained and sampled from the command line.

The library is the product; `charrnn.cli` is one client of it:

    from charrnn import load_config, open_corpus, train, load_model, Sampler
    result = train(load_config("tiny"), open_corpus("corpus.txt"))
    trained = load_model(result.run_dir)
    print(Sampler(trained.model, trained.vocab, seed=1).texts(200, prime="The ")[0])

The names below are imported on first use: `import charrnn` stays light (the command
line sets OpenMP's environment before torch loads).
"""

import importlib

__version__ = "0.1.0"

# name -> the module it lives in
_FACE = {
    "load_config": "charrnn.core.config_files",
    "Config": "charrnn.core.config",
    "CharRNNError": "charrnn.core.errors",
    "open_corpus": "charrnn.corpus.prepared",
    "Vocab": "charrnn.corpus.vocab",
    "TextOptions": "charrnn.corpus.text",
    "train": "charrnn.training.run",
    "resume": "charrnn.training.run",
    "list_runs": "charrnn.training.catalog",
    "load_model": "charrnn.inference.trained",
    "save_model": "charrnn.inference.trained",
    "Sampler": "charrnn.inference.sample",
    "sample_text": "charrnn.inference.sample",
    "evaluate": "charrnn.inference.evaluate",
}

__all__ = sorted(_FACE)


def __getattr__(name: str):
    if name not in _FACE:
        raise AttributeError(f"module 'charrnn' has no attribute {name!r}")
    value = getattr(importlib.import_module(_FACE[name]), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_FACE))
