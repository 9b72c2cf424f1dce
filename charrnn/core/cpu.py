"""The CPU: how many threads the kernels use (--threads, and a default that holds up when
the machine is shared), and what the processor is (its name and features).

    budget = cpu_budget()              # what this process may use: affinity, quota, cores
    n = apply_threads(0)               # 0 = the default; returns the count set
    describe_threads(n)                # "1 thread (default: 2 cores, shared ...)"

Why not PyTorch's own default (one thread per logical CPU): its OpenMP threads meet at a
barrier after every kernel, and an RNN runs thousands of small kernels per second (one per
time step and layer). When another process takes a core for a time slice, every barrier
waits for the thread that lost its core: on 2 cores with one other busy process, 2 threads
trained at 0.09 of their quiet speed, where 1 thread kept its speed (docs/benchmarks.md,
"Threads on a shared machine"). So the default uses the physical cores this process may
run on, capped by its CPU quota, and leaves one of them to the rest of the machine on small
machines, where a busy neighbour is the normal case; and OpenMP's threads sleep instead of
spinning when they wait (OMP_WAIT_POLICY=passive, set before torch loads, unless the user
set it), so a waiting thread does not take the core the late one needs.

The thread count never shapes a model: the config, the precision plan and the stream layout
do not depend on it.
"""

from __future__ import annotations

import functools
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from .config import MAX_THREADS
from .errors import ConfigError

# One core is left to the rest of the machine (the browser, the editor, another job), so
# that one busy neighbour does not stall every barrier: on 2 cores 1 thread was as fast as 2
# on a quiet machine and up to 8x faster on a busy one (docs/benchmarks.md). Machines of more
# cores were not measured: there the rule is the same reasoning, one core left.
SMALL_MACHINE = 2
MAX_DEFAULT = 16  # RNN kernels stop scaling long before this; more threads only add barriers


def quiet_openmp() -> None:
    """Ask OpenMP's threads to sleep while they wait (must run before torch is imported to
    take effect). A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


@dataclass(frozen=True)
class CpuBudget:
    """The CPUs this process may use."""
    logical: int  # CPUs in its affinity mask
    physical: int  # distinct cores among them (hyperthreads share one)
    quota: float | None  # a cgroup CPU quota in CPUs (None: no quota)

    @property
    def usable(self) -> int:
        """Cores worth a thread each: physical cores, within the quota."""
        cores = self.physical
        if self.quota is not None:
            cores = min(cores, max(1, math.floor(self.quota)))
        return max(1, cores)

    def default_threads(self) -> int:
        """The default thread count (see the module's docstring for why)."""
        usable = self.usable
        if usable <= SMALL_MACHINE:
            return 1
        return min(usable - 1, MAX_DEFAULT)

    def describe(self) -> str:
        parts = [f"{self.physical} core{'s' if self.physical != 1 else ''}"]
        if self.logical != self.physical:
            parts[0] += f" ({self.logical} logical CPUs)"
        if self.quota is not None:
            parts.append(f"a quota of {self.quota:g} CPUs")
        return ", ".join(parts)


def cpu_budget(sys_root: str = "/sys", proc_root: str = "/proc") -> CpuBudget:
    """What this process may use: its affinity mask, the cores behind it and its cgroup
    quota (Linux; elsewhere the logical CPU count)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = list(range(os.cpu_count() or 1))
    physical = _physical_cores(cpus, Path(sys_root)) or len(cpus)
    return CpuBudget(len(cpus), physical, _cgroup_quota(Path(sys_root), Path(proc_root)))


def _physical_cores(cpus: list[int], sys_root: Path) -> int | None:
    """Distinct cores among `cpus`: CPUs that list the same thread siblings share a core."""
    cores = set()
    for cpu in cpus:
        try:
            text = (sys_root / f"devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"
                    ).read_text().strip()
        except OSError:
            return None
        cores.add(text)
    return len(cores) or None


def _cgroup_quota(sys_root: Path, proc_root: Path) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (v2 cpu.max or v1 cfs_quota_us), or
    None when there is none or it cannot be read."""
    try:
        lines = (proc_root / "self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        path = path.lstrip("/")
        if controllers == "":  # cgroup v2
            quota = _read_quota(sys_root / "fs/cgroup" / path / "cpu.max")
        elif "cpu" in controllers.split(","):
            base = sys_root / "fs/cgroup" / controllers
            quota = _read_quota_v1(base / path) or _read_quota_v1(base)
        else:
            continue
        if quota is not None:
            return quota
    return None


def _read_quota(path: Path) -> float | None:
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _read_quota_v1(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def check_threads(threads: int, flag: str = "--threads") -> None:
    if not 0 <= threads <= MAX_THREADS:
        raise ConfigError(f"{flag} must be 1 to {MAX_THREADS}, or 0 for the default; got "
                          f"{threads}")


def env_threads() -> int:
    """OMP_NUM_THREADS when set to a positive count (as torchrun sets it), else 0."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else 0


def apply_threads(threads: int = 0, budget: CpuBudget | None = None) -> int:
    """Set the kernels' intra-op thread count: `threads`, else OMP_NUM_THREADS when set,
    else the default for this machine. Returns the count set."""
    import torch

    check_threads(threads)
    n = threads or env_threads() or (budget or cpu_budget()).default_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def describe_threads(n: int, given: int, budget: CpuBudget | None = None) -> str:
    """'1 thread (the default for 2 cores; --threads N sets it)' for the start-up line."""
    word = f"{n} thread{'s' if n != 1 else ''}"
    if given:
        return f"{word} (--threads)"
    if env_threads():
        return f"{word} (OMP_NUM_THREADS)"
    budget = budget or cpu_budget()
    return f"{word} (the default for {budget.describe()}; --threads N sets it)"


# ----------------------------------------------------------------------------------------
# what the processor is


@functools.lru_cache(maxsize=None)
def cpu_model() -> str:
    """The processor's name ('AMD EPYC 9R14'), for cache keys and benchmark tables."""
    for line in _cpuinfo().splitlines():
        if line.lower().startswith(("model name", "hardware")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The processor's feature flags (Linux's /proc/cpuinfo; empty elsewhere)."""
    for line in _cpuinfo().splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def has_amx() -> bool:
    """Whether the CPU has AMX tiles for bf16 (Intel Xeon from Sapphire Rapids on)."""
    return "amx_bf16" in cpu_flags()


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read(1 << 20)
    except OSError:
        return ""
