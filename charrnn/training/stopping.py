"""When to stop: signals, and one decision shared by every process.

    with StopRequests(dist) as stop:
        while ...:
            ...one training step...
            why, evaluate = stop.poll(time_up, eval_due)   # the same on every rank

SIGINT and SIGTERM ask training to stop after the current step and save; in one process an
evaluation in progress is abandoned rather than waited for. In one process a second signal
interrupts at once (checkpoint writes are atomic, so nothing is corrupted).
Under torchrun the launcher passes a Ctrl-C on to the workers, which the terminal has
signalled already: there, repeated signals are not a request to hurry, and the launcher's
own kill timeout is the hard stop.

With several processes every rank must stop at the same step, or the others wait forever in
the next collective. After each step every rank adds its wish to stop (a signal, or its
clock past the time budget) to an all-reduce on a CPU (gloo) process group of its own, so
all ranks stop together at the end of the step in which the first of them asked (the same
message carries whether an evaluation is due by any rank's clock). It costs a
small message per step and no GPU synchronisation. A step must still end before the launcher
gives up waiting (torchrun's --shutdown-timeout, 30 s by default; scripts/train_multigpu.sh
raises it).
"""

from __future__ import annotations

import signal

import torch
import torch.distributed as torch_dist

from ..core.distributed import Dist
from .budget import StopReason

# The wishes a rank can vote for, by priority (the all-reduce takes the largest): a signal
# wins over the clock.
WISHES = (None, StopReason.MAX_TIME, StopReason.INTERRUPTED)


class StopRequests:
    def __init__(self, dist: Dist):
        self.dist = dist
        self.signal: int | None = None
        self._previous = {}
        self._vote = torch.zeros(2, dtype=torch.int32)  # (stop wish, evaluate now)
        self._group = (torch_dist.new_group(backend="gloo")
                       if dist.enabled and torch_dist.is_initialized() else None)

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            if not self.dist.enabled:
                raise KeyboardInterrupt
            return
        self.signal = signum

    def poll(self, time_up: bool, eval_due: bool = False) -> tuple[StopReason | None, bool]:
        """Call once per step on every rank: why to stop now, and whether to evaluate now
        (an evaluation every rank takes part in: due on any rank's clock), the same answers
        on every rank."""
        wish = 2 if self.signal is not None else 1 if time_up else 0  # an index into WISHES
        if self._group is None:
            return WISHES[wish], eval_due
        self._vote[0], self._vote[1] = wish, int(eval_due)
        torch_dist.all_reduce(self._vote, op=torch_dist.ReduceOp.MAX, group=self._group)
        return WISHES[int(self._vote[0])], bool(self._vote[1])

    @property
    def interrupted(self) -> bool:
        """A signal has come (this process's view: for work it may abandon alone)."""
        return self.signal is not None

    def __exit__(self, *exc):
        if self._group is not None and exc[0] is None:
            torch_dist.destroy_process_group(self._group)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
