"""Where torch's CPU work runs. Torch's CPU parallelism is OpenMP, and libgomp gives every OS thread
that runs a parallel operator its own team of worker threads, alive as long as that thread. Once the
teams together hold more threads than there are CPUs, libgomp stops spinning between parallel regions
(its "throttled" spin count), and every operator of a forward pays for waking its workers
(docs/pytorch-backend.md, "One OpenMP team per instance", has the numbers).

So one-off torch work (building a backend, its checks, warmup, token-budget tuning) runs on a thread of
its own that exits when the work is done, taking its team with it; each instance's forwards then run in
its batcher thread's team alone. And the CPU instances of one model share the CPUs out among their
teams (threads_per_cpu_instance), unless the model's config sets their threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run_on_thread_that_ends(work: Callable[[], T], name: str) -> T:
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


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_cpu_instance(cpu_instances: int) -> int:
    """Intra-op threads for each of a model's CPU instances when its config leaves them unset: the
    usable CPUs shared out (at least one each), or 0 (the library's default, every CPU) for a single
    instance. Each instance's team at the library's default would hold every CPU, and more threads than
    CPUs slow every forward (above)."""
    if cpu_instances < 2:
        return 0
    return max(1, usable_cpus() // cpu_instances)
