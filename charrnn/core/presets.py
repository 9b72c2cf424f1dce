"""Which shipped preset a run without -c takes: decided from facts (the device, the CPU's
features and the size of the training text), never from a timing, so the same command
builds the same model on a busy machine as on a quiet one.

    name, why = choose_preset(device, train_chars=1_003_854)   # ("cpu-bf16", "...")

The facts behind the rule (docs/benchmarks.md, five-minute runs on 2 CPU cores):
- cpu-bf16 (a 2x512 GRU) is only affordable where bf16 runs in hardware (avx512_bf16), and
  not on a Xeon with AMX, whose oneDNN bf16 GRU kernel measured slower than fp32;
- even there it won only on texts of about 1 MB (tiny Shakespeare: 1.458 against 1.464
  nats/char); on 2 MB (Andersen) and on 4.7 MB (kernel headers) the 2x256 GRU's extra
  steps won, so larger texts take cpu.
"""

from __future__ import annotations

import torch

from .cpu import has_amx
from .precision import native_bf16

# Training text (characters) up to which the wider cpu-bf16 model is the better pick.
BF16_PRESET_MAX_CHARS = 1_500_000


def choose_preset(device: torch.device, train_chars: int | None, *,
                  bf16_units: bool | None = None, amx: bool | None = None) -> tuple[str, str]:
    """(preset name, why) for a run without -c. `train_chars`: the training text's size
    (None when unknown: taken as large). `bf16_units`, `amx`: the CPU's features (read from
    the machine when None)."""
    if device.type != "cpu":
        return "gpu", f"{device.type} is available"
    bf16_units = native_bf16(device) if bf16_units is None else bf16_units
    amx = has_amx() if amx is None else amx
    if not bf16_units:
        return "cpu", "no GPU here"
    if amx:
        return "cpu", "no GPU here; on a CPU with AMX the bf16 GRU is not faster"
    if train_chars is None or train_chars > BF16_PRESET_MAX_CHARS:
        size = "a text of unknown size" if train_chars is None else \
            f"{train_chars / 1e6:.1f} M training characters"
        return "cpu", (f"no GPU here; for {size} the 2x256 model's extra steps beat "
                       f"cpu-bf16's width")
    return "cpu-bf16", ("no GPU here; this CPU's bf16 units make the wider GRU affordable, "
                        "and it wins on texts of up to 1.5 M characters")
