"""Benchmark work on a served model instance's own thread, between its batches.

Why there: torch's OpenMP gives each thread that computes a team of its own, and more teams than
CPUs slow every forward (reward_server/runtime/openmp.py), so the naive peer's and the floor's reference
forwards run on the thread where the served ones do. Such work counts in no batch statistic of the
instance (a failure counts as a failed batch, as any error on that thread does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from reward_server.runtime.batching import AloneTask, DynamicBatcher


@dataclass(frozen=True)
class ThreadTask(AloneTask):
    """Work that needs the instance's thread but is not scoring."""

    work: Callable[[], object]

    def execute(self, batcher: DynamicBatcher, ids: Sequence[int], queue_s: float) -> object:
        return self.work()


def run_alone(batcher: DynamicBatcher, work: Callable[[], object]) -> Future:
    """Queue `work` to run alone on `batcher`'s thread, after the batches of the inputs queued before it;
    the future gets what it returns, or its error."""
    future = batcher.submit_task((), ThreadTask(work), None)
    assert isinstance(future, Future)  # no event loop given: a concurrent future
    return future
