"""One place that turns --device into a torch device, and what the device has room for.
(--precision: precision.py.)"""

from __future__ import annotations

import os

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
        n = torch.get_num_threads()
        return f"cpu ({n} thread{'s' if n > 1 else ''})"
    return str(device)
