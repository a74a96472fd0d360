"""Where torch's CPU work runs. Torch's CPU parallelism is OpenMP, and libgomp gives every OS thread
that runs a parallel operator its own team of worker threads, alive as long as that thread. Once the
teams together hold more threads than there are CPUs, libgomp stops spinning between parallel regions
(its "throttled" spin count), and every operator of a forward pays for waking its workers: on a 2-core
CPU a batcher's forwards ran 20-35% slower while a loading thread's team lingered beside its own.

So one-off torch work (building a backend, its checks, warmup, token-budget tuning) runs on a thread of
its own that exits when the work is done, taking its team with it; each instance's forwards then run in
its batcher thread's team alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def on_passing_thread(work: Callable[[], T], name: str) -> T:
    """work() on a new thread that ends with it; its result, or its exception raised here."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as e:  # handed to the caller, whatever it is
            failure.append(e)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]
