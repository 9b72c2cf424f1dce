"""The novelty check of served samples (serve --novelty), on a thread of its own.

    judge = Judge(index)
    judge.final(job, event, loop)    # the request's final event, once its reports are in it

A request with "novelty": true gets its final event only when each of its samples' reports
(novelty/report.py) is added to it. One thread computes them: neither the event loop nor
the worker, which steps every other stream, waits on them; reports take turns, so that many
at once cannot crowd out the worker (they share the GIL with it), and their memory stays
one report's.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from ..core.errors import Unavailable
from ..novelty.report import SPANS, novelty_report
from .jobs import GenerateJob, InternalError

log = logging.getLogger("charrnn.serve")


class Judge:
    def __init__(self, index):
        # The training text's suffix index (novelty/index.py), opened once at start-up. A
        # model reloaded by --watch keeps it: it is the text the server was started with.
        self.index = index
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="charrnn-novelty")

    def info(self) -> dict:
        """What GET /v1/model says of the novelty check."""
        return {"training_chars": self.index.n, "copied_spans_min": SPANS[0]}

    def stop(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def final(self, job: GenerateJob, event: tuple, loop) -> None:
        """On the event loop: `event` (a "done") to `job` once the judge thread has added
        each sample's report to it; a failure there fails the request, not the server."""
        texts = [job.text_of(r) for r in range(job.generation.B)]
        index = self.index
        future = loop.run_in_executor(
            self.pool, lambda: [novelty_report(index, text).to_dict() for text in texts])
        future.add_done_callback(lambda future: _judged(job, event, future))


def _judged(job: GenerateJob, event: tuple, future) -> None:
    """On the event loop: the reports are in (or failed)."""
    if job.cancelled:
        return
    if future.cancelled():  # the server stopped first
        job.receive(("error", Unavailable("the server is shutting down")))
        return
    error = future.exception()
    if error is not None:
        log.error("internal error while checking novelty",
                  exc_info=(type(error), error, error.__traceback__))
        job.receive(("error", InternalError("internal error while checking novelty; see "
                                            "the log")))
        return
    payload = event[1]
    for sample, report in zip(payload["samples"], future.result()):
        sample["novelty"] = report
    job.receive(("done", payload, *event[2:]))
