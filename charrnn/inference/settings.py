"""The settings of generation, checked once for every client (sample, serve, redraw).

    check_settings(length=500, temperature=0.8, top_k=0, num_samples=1, seed=None)
    check_prime(vocab, prime)

Every refusal is a SettingError naming its setting (`field`: length, temperature, top_k,
num_samples, seed, prime, stop_at_end); the CLI shows it under its flag (`--top-k`) and
the HTTP API under its field (`'top_k'`), with the same words after the name.
"""

from __future__ import annotations

from ..core.errors import SettingError
from ..corpus.vocab import Vocab, listed

DEFAULT_LENGTH = 500  # characters a sample has when nobody says: `charrnn sample`, serve
MAX_TEMPERATURE = 1e3
MIN_TEMPERATURE = 1e-3  # below it logits / T overflows float32: use 0 (the argmax) instead


def check_settings(length: int = 0, temperature: float = 1.0, top_k: int = 0,
                   num_samples: int = 1, seed: int | None = None) -> None:
    """Refuse sampling settings out of range, naming the setting."""
    if seed is not None and not 0 <= seed < 2**64:
        raise SettingError("seed", f"must be in [0, 2^64), got {seed}")
    if length < 0:
        raise SettingError("length", f"must be >= 0, got {length}")
    if not (temperature == 0 or MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE):
        raise SettingError("temperature", f"must be 0 (always the likeliest character) or "
                                          f"between {MIN_TEMPERATURE:g} and "
                                          f"{MAX_TEMPERATURE:g}, got {temperature}")
    if top_k < 0:
        raise SettingError("top_k", f"must be at least 1 (or 0 for all), got {top_k}")
    if num_samples < 1:
        raise SettingError("num_samples", f"must be at least 1, got {num_samples}")


def check_known(vocab: Vocab, text: str, field: str) -> None:
    """Refuse a text the model reads (`field`: prime, stop, text) with characters it does not
    know."""
    missing = vocab.missing(text)
    if missing:
        raise SettingError(field, f"has characters the model does not know: {listed(missing)}")


def check_prime(vocab: Vocab, prime: str, transliterated: bool = False) -> None:
    """check_known for a prime typed at the command line, with the way out."""
    missing = vocab.missing(prime)
    if not missing:
        return
    ascii_model = all(c.isascii() for c in vocab.chars)
    hint = ("; the model knows only ASCII: add --unidecode to transliterate the prime"
            if ascii_model and not transliterated and not all(c.isascii() for c in missing)
            else "; change the prime")
    raise SettingError("prime", f"has characters the model does not know: {listed(missing)}"
                                f"{hint}")


def check_stop_at_end(vocab: Vocab) -> None:
    if vocab.end is None:
        raise SettingError("stop_at_end", "needs a model trained on a corpus of documents (a "
                                          "directory, or --split-on): this one has no "
                                          "end-of-document mark")
