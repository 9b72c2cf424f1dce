"""charrnn: character-level recurrent language models, trained and sampled from the command line.

The library is the product; `charrnn.cli` is one client of it:

    from charrnn.core.config_files import load_config
    from charrnn.corpus.prepared import open_corpus
    from charrnn.training.run import train
    result = train(load_config("tiny"), open_corpus("corpus.txt"))
"""

__version__ = "0.1.0"
