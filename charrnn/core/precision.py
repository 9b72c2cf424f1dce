"""The precision plan: what each part of the model computes in, decided once per run.

    plan = resolve_precision("auto", device, cell="lstm", speedup=lambda: measure(...))
    model.recurrent_dtype = plan.cast     # bf16 recurrent layers, fp32 master weights
    with autocast(device, plan.autocast):  # the head
        logits, hidden = model(idx, hidden)

Why not torch.autocast alone: PyTorch's autocast wrapper for cuDNN RNNs
(aten/src/ATen/cudnn/AutocastRNN.cpp) casts input and weights to fp16 whatever dtype autocast
was asked for, so a bf16 autocast runs the LSTM in fp16 without loss scaling; on CPU, a bf16
autocast runs nn.RNN in bf16, leaves nn.GRU in fp32 and makes oneDNN's nn.LSTM fail outright
("could not create a primitive descriptor"). So the recurrent layers take bf16 by an
explicit cast instead: each step casts the fp32 master weights and the input to bf16 and
runs the kernel on them; gradients flow back through the cast to the fp32 weights, so the
optimizer, the loss and the carried hidden state stay fp32. Autocast covers the head.

`auto` picks bf16 for the recurrent layers only where all three hold: the device has native
bf16 units (else it is emulated and slower); the cell's bf16 step measures faster than its
fp32 step here, at this model's shape (`speedup`, timed once per machine and shape and kept
in the per-user cache, core/usercache.py; processors differ, e.g. oneDNN's bf16 GRU is slower
than fp32 on a Xeon with AMX and faster on an AMD EPYC with avx512_bf16); and the cell is one
whose bf16 training was measured within 0.01 nats/char of fp32 at equal steps
(docs/benchmarks.md, row 13). Everywhere else it picks fp32, and says why.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .cells import RNN_CLASSES, first_tensor, map_hidden
from .errors import ConfigError

# Cells whose bf16 training matched fp32 within 0.01 nats/char at equal steps (row 13).
QUALITY_CHECKED = ("lstm", "gru")
MIN_SPEEDUP = 1.2  # below it, timing noise could pick the slower path
# Narrower layers are not measured: there bf16 was slower on every CPU tried (the per-step
# cast and conversions outweigh the smaller products), and a fixed rule keeps the many small
# runs of tests and trials independent of timing.
MIN_BF16_WIDTH = 128


@dataclass(frozen=True)
class Precision:
    """What each part of the model computes in, whether gradients are loss-scaled, and why."""
    name: str  # fp32 | bf16 | fp16: the setting as resolved
    autocast: torch.dtype | None  # the autocast dtype (None: no autocast)
    recurrent: torch.dtype  # what the nn.LSTM/GRU/RNN layers compute in
    head: torch.dtype  # what the output layer computes in
    scaler: bool  # a GradScaler guards the backward pass (fp16)
    why: str = ""  # how `auto` (or the device) decided, for the start-up line

    @property
    def cast(self) -> torch.dtype | None:
        """The dtype the recurrent weights are cast to for each step (CharRNN.recurrent_dtype),
        or None: fp16 runs through cuDNN's autocast path instead."""
        return torch.bfloat16 if self.recurrent == torch.bfloat16 else None

    def describe(self, device: torch.device) -> str:
        rnn = _dtype_name(self.recurrent)
        if self.recurrent == torch.float32 and device.type == "cuda" \
                and torch.backends.cudnn.allow_tf32:
            rnn += " (cuDNN may use TF32)"
        line = (f"precision {self.name}: recurrent layers {rnn}, head {_dtype_name(self.head)}"
                + (", loss scaling" if self.scaler else ""))
        return line + (f" ({self.why})" if self.why else "")


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


FP32 = Precision("fp32", None, torch.float32, torch.float32, False)


def resolve_precision(precision: str, device: torch.device, cell: str = "lstm",
                      speedup: Callable[[], float] | None = None, hidden_size: int = 256,
                      started: str | None = None) -> Precision:
    """The precision plan for `precision` on `device`, or a ConfigError saying why not.
    `speedup`: fp32 time / bf16 time of this model's training step, a Speedup or a float (for
    `auto` on a CPU with native bf16; not called elsewhere). `started`: the plan a resumed
    run started with, which `auto` keeps where it can, so a resumed run computes as it began."""
    if precision == "fp32":
        return FP32
    if precision == "auto":
        return _auto(device, cell, speedup, hidden_size, started)
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
        if not bf16_kernel_works(device, cell):
            # cuDNN takes bf16 RNN input only from version 9.13 (pytorch/pytorch#164411).
            return Precision("bf16", torch.bfloat16, torch.float32, torch.bfloat16, False,
                             f"this {device.type} has no bf16 {cell.upper()} kernel")
        why = "" if native_bf16(device) else (
            "this CPU has no bf16 units (avx512_bf16 or AMX): bf16 is emulated and slower "
            "than fp32 here")
        return Precision("bf16", torch.bfloat16, torch.bfloat16, torch.bfloat16, False, why)
    raise ConfigError(f"--precision must be auto, fp32, bf16 or fp16; got {precision!r}")


def _auto(device: torch.device, cell: str, speedup, hidden_size: int,
          started: str | None) -> Precision:
    def fp32(why: str) -> Precision:
        return Precision("fp32", None, torch.float32, torch.float32, False, "auto: " + why)

    if started == "fp32":
        return fp32("fp32, as when this run started")
    if device.type != "cpu":
        return fp32(f"bf16 is not yet measured against fp32 on {device.type} "
                    f"(scripts/gpu_check.sh precision)")
    if not native_bf16(device):
        return fp32("this CPU has no bf16 units")
    if cell not in QUALITY_CHECKED:
        return fp32(f"bf16 {cell.upper()} training is not yet measured against fp32")
    if hidden_size < MIN_BF16_WIDTH and started != "bf16":
        return fp32(f"at hidden size {hidden_size} the cast costs more than bf16 saves")
    if not bf16_kernel_works(device, cell):
        return fp32(f"no bf16 {cell.upper()} kernel here")
    if started == "bf16":
        return Precision("bf16", torch.bfloat16, torch.bfloat16, torch.bfloat16, False,
                         "auto: bf16, as when this run started")
    found = speedup() if speedup is not None else Speedup(0.0)
    found = found if isinstance(found, Speedup) else Speedup(float(found))
    if not found.reliable:
        return fp32("the bf16 timing was upset twice (a busy machine?); --precision bf16 "
                    "chooses bf16")
    where = "on this machine (cached)" if found.cached else "here"
    if found.ratio < MIN_SPEEDUP:
        return fp32(f"a bf16 step measured {found.ratio:.2f}x the fp32 one {where}")
    return Precision("bf16", torch.bfloat16, torch.bfloat16, torch.bfloat16, False,
                     f"auto: bf16 units, a bf16 step measured {found.ratio:.2f}x faster "
                     f"{where}")


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 in hardware: a CPU with avx512_bf16 or AMX (oneDNN's
    check), or a CUDA GPU that supports bf16."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.lru_cache(maxsize=None)
def bf16_kernel_works(device: torch.device, cell: str) -> bool:
    """Whether this device runs a bf16 `cell` forward and backward (a tiny one, once)."""
    # The probe's initial weights come from the global generator: restored after, so that
    # a run's random numbers do not depend on whether (or when) a probe ran.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            rnn = RNN_CLASSES[cell](4, 4, 1).to(device)
            x = torch.zeros(2, 1, 4, device=device, requires_grad=True)
            with quiet_cast():
                out, _ = run_cast(rnn, torch.bfloat16, x, None)
            out.float().sum().backward()
            return True
        except (RuntimeError, NotImplementedError):
            return False


def run_cast(rnn: nn.RNNBase, dtype: torch.dtype, x: torch.Tensor, hidden):
    """rnn(x, hidden) computed in `dtype` from its own (fp32) weights: (output in dtype, hidden
    in the dtype it came in, fp32 when None)."""
    weights = {name: p.to(dtype) for name, p in rnn.named_parameters()}
    state_dtype = torch.float32 if hidden is None else first_tensor(hidden).dtype
    h = None if hidden is None else map_hidden(lambda t: t.to(dtype), hidden)
    with torch.autocast(x.device.type, enabled=False):
        out, h = torch.func.functional_call(rnn, weights, (x.to(dtype), h))
    return out, map_hidden(lambda t: t.to(state_dtype), h)


@contextlib.contextmanager
def quiet_cast():
    """cuDNN warns on every call that cast weights are not one contiguous buffer: it copies
    them into one, which is part of the cast's cost and expected here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "RNN module weights are not part of single")
        yield


# A bf16 step of an RNN is at most a few times faster than fp32 on any CPU measured (1.4-2.2x
# with avx512_bf16); a ratio outside this range is a timing upset (another process took the
# core during one side of the comparison), not a property of the kernels.
PLAUSIBLE = (1 / 3, 3.0)


@dataclass(frozen=True)
class Speedup:
    """fp32 time / bf16 time of a step, and where the figure came from."""
    ratio: float
    cached: bool = False  # read from the per-user cache rather than measured now
    reliable: bool = True  # within PLAUSIBLE (an unreliable figure decides fp32)


def cached_speedup(rnn: nn.RNNBase, batch_size: int, seq_len: int, device: torch.device,
                   cache=None, measure=None) -> Speedup:
    """The bf16 speed-up of `rnn`'s step on this machine: from the per-user cache when this
    machine, torch, thread count and shape were measured before, else measured now (twice
    when the first figure is implausible) and cached. So the same command decides the same
    way every time, however busy the machine is when it runs again."""
    from .usercache import UserCache

    cache = cache if cache is not None else UserCache("precision")
    measure = measure or measure_speedup
    key = speedup_key(rnn, batch_size, seq_len, device)
    known = cache.get(key)
    if known is not None and PLAUSIBLE[0] <= known <= PLAUSIBLE[1]:
        return Speedup(known, cached=True)
    for _ in range(2):
        ratio = measure(rnn, batch_size, seq_len, device)
        if PLAUSIBLE[0] <= ratio <= PLAUSIBLE[1]:
            cache.put(key, ratio)
            return Speedup(ratio)
    return Speedup(ratio, reliable=False)


def speedup_key(rnn: nn.RNNBase, batch_size: int, seq_len: int, device: torch.device) -> str:
    """What a bf16 measurement depends on: the processor, torch, the thread count and the
    step's shape."""
    from .cpu import cpu_model

    return (f"{cpu_model()}|torch {torch.__version__}|{torch.get_num_threads()} threads|"
            f"{rnn.mode} {rnn.input_size}x{rnn.hidden_size}x{rnn.num_layers}|"
            f"B{min(batch_size, 32)} T{min(seq_len, 64)}|{device.type}")


def measure_speedup(rnn: nn.RNNBase, batch_size: int, seq_len: int,
                    device: torch.device, rounds: int = 7) -> float:
    """fp32 time / bf16 time of a forward and backward pass of `rnn` on (B, T) inputs: the
    median of `rounds` ratios, each of an fp32 and a bf16 pass run back to back (their order
    alternating), after a warm-up. A neighbour that takes the core slows both sides of a
    pair alike, and the median drops the pairs it split. At most 32 x 64 characters, and
    3 rounds when the warm-up took over 2 s: the ratio is what is wanted, and a large
    model's whole step would make start-up take a minute."""
    batch_size, seq_len = min(batch_size, 32), min(seq_len, 64)
    # Its own generator, and the global one restored: a run's random numbers never depend on it.
    x = torch.randn(batch_size, seq_len, rnn.input_size, device=device,
                    generator=torch.Generator(device).manual_seed(0))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        ratios = _time_pairs(rnn, x, rounds)
    rnn.zero_grad(set_to_none=True)
    return statistics.median(ratios)


def _time_pairs(rnn: nn.RNNBase, x: torch.Tensor, rounds: int) -> list[float]:
    def timed(dtype) -> float:
        started = time.perf_counter()
        with quiet_cast():
            out = rnn(x)[0] if dtype == torch.float32 else run_cast(rnn, dtype, x, None)[0]
        out.float().sum().backward()
        return time.perf_counter() - started

    warm = timed(torch.float32) + timed(torch.bfloat16)  # kernels and allocator warm up
    rounds = 3 if warm > 2.0 else rounds
    ratios = []
    for i in range(rounds):
        order = (torch.float32, torch.bfloat16) if i % 2 == 0 else (torch.bfloat16, torch.float32)
        seconds = {dtype: timed(dtype) for dtype in order}
        ratios.append(seconds[torch.float32] / seconds[torch.bfloat16])
    return ratios


def recurrent_autocast(device_type: str) -> bool:
    """Whether the recurrent layers may run under the autocast active for `device_type`:
    only cuDNN's fp16 (see above); otherwise they run outside it."""
    return device_type == "cuda" and torch.get_autocast_dtype("cuda") == torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
