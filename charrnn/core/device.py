"""One place that turns --device and --precision into a torch device and a precision plan."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from .errors import ConfigError


def resolve_device(spec: str = "auto", local_rank: int | None = None) -> torch.device:
    """auto -> cuda, then mps, then cpu. Under torchrun each process takes cuda:LOCAL_RANK."""
    if spec == "auto":
        if torch.cuda.is_available():
            spec = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            spec = "mps"
        else:
            spec = "cpu"
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {spec!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: no CUDA GPU is available here; "
                              f"use --device cpu (or auto)")
        if device.index is None:
            device = torch.device("cuda", local_rank or 0)
        if device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {spec}: only {torch.cuda.device_count()} GPU(s) visible")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError("--device mps: Apple MPS is not available here; use --device cpu")
    return device


def available_memory(device: torch.device) -> int | None:
    """Bytes that allocations on `device` can still take (None where unknown): free GPU
    memory, or the host's available memory (MPS shares it)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits(needed: int, device: torch.device, what: str, advice: str) -> None:
    """Refuse, before allocating, what would need more memory than the device has."""
    free = available_memory(device)
    if free is not None and needed > free:
        raise ConfigError(f"{what} needs about {_gb(needed)} of memory and {device} has "
                          f"{_gb(free)} available; {advice}")


def _gb(n: int) -> str:
    return f"{n / 2**30:,.1f} GB" if n >= 2**27 else f"{n / 2**20:,.0f} MB"


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


# ----------------------------------------------------------------------------------------
# precision
#
# torch.autocast is not enough on its own for recurrent layers: PyTorch's autocast wrapper
# for cuDNN RNNs (aten/src/ATen/cudnn/AutocastRNN.cpp) casts input and weights to fp16
# whatever dtype autocast was asked for, so a bf16 autocast runs the LSTM in fp16 without
# loss scaling; on CPU, a bf16 autocast runs nn.RNN in bf16, leaves nn.GRU in fp32 and makes
# oneDNN's nn.LSTM fail outright on processors without bf16 support. So autocast here covers
# the head, and the recurrent layers join it only where the kernel really runs in the
# requested dtype: cuDNN in fp16, which always comes with a GradScaler.

@dataclass(frozen=True)
class Precision:
    """What each part of the model computes in, and whether gradients are loss-scaled."""
    name: str  # fp32 | bf16 | fp16: the setting as resolved
    autocast: torch.dtype | None  # the autocast dtype (None: no autocast)
    recurrent: torch.dtype  # what the nn.LSTM/GRU/RNN layers compute in
    head: torch.dtype  # what the output layer computes in
    scaler: bool  # a GradScaler guards the backward pass (fp16)

    def describe(self, device: torch.device) -> str:
        rnn = _dtype_name(self.recurrent)
        if self.recurrent == torch.float32 and device.type == "cuda" \
                and torch.backends.cudnn.allow_tf32:
            rnn += " (cuDNN may use TF32)"
        return (f"precision {self.name}: recurrent layers {rnn}, head {_dtype_name(self.head)}"
                + (", loss scaling" if self.scaler else ""))


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


FP32 = Precision("fp32", None, torch.float32, torch.float32, False)


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """The precision plan for `precision` on `device`, or a ConfigError saying why not.

    auto = fp32 everywhere: it is the reference the other settings are held to, and the
    setting that none of them has yet been measured to match within 0.01 nats/char at equal
    steps on a GPU (scripts/gpu_check.sh measures it)."""
    if precision in ("auto", "fp32"):
        return FP32
    if precision == "fp16":
        if device.type != "cuda":
            raise ConfigError(f"--precision fp16 needs a CUDA GPU (cuDNN's fp16 recurrent "
                              f"kernels with loss scaling); use fp32 on {device.type}")
        return Precision("fp16", torch.float16, torch.float16, torch.float16, True)
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("--precision bf16: this GPU has no bf16 support; use fp16 or fp32")
        if device.type not in ("cuda", "cpu"):
            raise ConfigError(f"--precision bf16 is supported on cuda and cpu, not "
                              f"{device.type}; use fp32")
        return Precision("bf16", torch.bfloat16, torch.float32, torch.bfloat16, False)
    raise ConfigError(f"--precision must be auto, fp32, bf16 or fp16; got {precision!r}")


def recurrent_autocast(device_type: str) -> bool:
    """Whether the recurrent layers may run under the autocast active for `device_type`:
    only cuDNN's fp16 (see above); otherwise they run in fp32 inside it."""
    return device_type == "cuda" and torch.get_autocast_dtype("cuda") == torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
