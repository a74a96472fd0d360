"""Dynamic batcher of one model instance, on the instance's own thread.

Contract: inputs wait in a bounded FIFO queue (full -> RESOURCE_EXHAUSTED at once, never a wait);
a batch is dispatched when it reaches max_batch_size, a preferred size or the token budget, or when
its first input has waited max_queue_delay; cancelled and expired inputs are dropped before compute;
the backend returns exactly one score per input; a future is set only if it is not done already.

An input's future is a concurrent.futures.Future, or, when submitted with an event loop, an asyncio
future of that loop: those of one batch are resolved by one call_soon_threadsafe (one wakeup of the
loop per batch, where wrapped concurrent futures cost a wakeup and two callbacks per input).

Which inputs form the next batch, and when, is batch_policy.BatchPolicy (pure, tested on its own):
length-aware batches around the oldest input, within max_batch_size and max_batch_tokens. This module
holds the queue, the thread, and the futures.

A batch the device has no memory for is split in halves and retried (down to single inputs); any
other backend error fails that batch's inputs only.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Protocol

from reward_server.backends import Backend, is_out_of_memory
from reward_server.errors import BackendFailure, DeadlineExceeded, ResourceExhausted, Unavailable
from reward_server.runtime.batch_policy import ALONE, BatchPolicy, expired

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    """What an input's future resolves to: its score and where its time went."""

    score: float
    queue_s: float  # from submit to the start of its batch
    compute_s: float  # the backend time of its batch


class BatchObserver(Protocol):
    """Told about every backend call of an instance (metrics); called on the batcher thread."""

    def batch_done(
        self, size: int, real_tokens: int, computed_tokens: int, queue_s: Sequence[float], compute_s: float
    ) -> None: ...

    def batch_failed(self, size: int) -> None: ...


class AloneTask(ABC):
    """Work queued on an instance that runs alone, as one batch, on the instance's thread."""

    @abstractmethod
    def execute(self, batcher: DynamicBatcher, ids: Sequence[int], queue_s: float) -> object:
        """Run on the batcher thread; the task's future gets what it returns. An error fails it as a
        failed batch. `ids`: the tokens it reads; `queue_s`: how long it waited in the queue."""


@dataclass(frozen=True)
class GroupTask(AloneTask):
    """A shared-prompt group: run() gives one score per member; its future gets one Scored each."""

    run: Callable[[], list[float]]
    computed_tokens: int  # tokens it computes, padding included

    def execute(self, batcher: DynamicBatcher, ids: Sequence[int], queue_s: float) -> list[Scored]:
        return batcher._compute_group(self, ids, queue_s)


AnyFuture = Future | asyncio.Future


@dataclass
class _Item:
    ids: Sequence[int]
    deadline: float | None  # time.monotonic() value
    enqueued: float
    future: AnyFuture
    started: float = 0.0  # when its batch was formed
    task: AloneTask | None = (
        None  # work that runs alone (a shared-prompt group: its future gets a list of Scored)
    )

    def start(self) -> bool:
        """Mark it running; False if its caller cancelled it. (An asyncio future is only read here, on
        the batcher thread; a cancel that races this read costs one computed input, nothing else.)"""
        if isinstance(self.future, Future):
            return self.future.set_running_or_notify_cancel()
        return not self.future.cancelled()


def _resolve(future: AnyFuture, value: object, error: BaseException | None) -> None:
    """Set a future that is not done already (done: cancelled by its caller, or failed after a split)."""
    if not future.done():
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)


def _settle_on_loop(outcomes: list[tuple[asyncio.Future, object, BaseException | None]]) -> None:
    for outcome in outcomes:
        _resolve(*outcome)


class _Settler:
    """Resolves the futures of one batch: concurrent ones at once, asyncio ones with one
    call_soon_threadsafe per event loop when flushed."""

    def __init__(self) -> None:
        self._pending: dict[asyncio.AbstractEventLoop, list] = {}

    def set(self, future: AnyFuture, value: object = None, error: BaseException | None = None) -> None:
        if isinstance(future, Future):
            _resolve(future, value, error)
        else:
            self._pending.setdefault(future.get_loop(), []).append((future, value, error))

    def flush(self) -> None:
        for loop, outcomes in self._pending.items():
            try:
                loop.call_soon_threadsafe(_settle_on_loop, outcomes)
            except RuntimeError:  # the loop is closed: nobody waits for these any more
                pass
        self._pending = {}


@dataclass
class BatcherStats:
    """Counters read by tests and bench/ (metrics come through BatchObserver). Updated on the batcher
    thread only."""

    batches: int = 0
    computed: int = 0
    expired: int = 0
    cancelled: int = 0
    failed_batches: int = 0
    oom_splits: int = 0  # batches split in halves after an out-of-memory error
    real_tokens: int = 0  # tokens of the inputs computed
    computed_tokens: int = 0  # tokens computed, padding included
    shared_groups: int = 0  # shared-prompt groups computed (which Rank path ran)
    compute_s: float = 0.0  # backend time of the batches computed

    @property
    def padding_efficiency(self) -> float:
        return self.real_tokens / self.computed_tokens if self.computed_tokens else 1.0

    batch_sizes: Counter = field(default_factory=Counter)  # size -> batches of that size


@dataclass(frozen=True)
class InferenceCounts:
    """A consistent copy of an instance's InferenceStats."""

    executions: int = 0  # backend calls
    inferences: int = 0  # inputs computed
    success_ns: int = 0  # per input: queue + compute
    queue_ns: int = 0
    compute_ns: int = 0  # per input: the compute time of its batch
    fail_count: int = 0  # inputs of failed batches and inputs that expired in the queue
    fail_ns: int = 0
    last_inference_ms: int = 0  # wall clock of the last batch, ms since the epoch
    batches: tuple[tuple[int, int, int], ...] = ()  # (size, executions, compute ns)


class InferenceStats:
    """Triton-style counters (ModelStatistics) of one instance: written on the batcher thread once per
    batch, read from any thread; the lock keeps a snapshot's counts consistent with each other."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = InferenceCounts()
        self._batches: dict[int, tuple[int, int]] = {}

    def batch_done(self, queue_s: Sequence[float], compute_s: float) -> None:
        size, compute_ns = len(queue_s), int(compute_s * 1e9)
        queue_ns = int(sum(queue_s) * 1e9)
        with self._lock:
            c = self._counts
            executions, ns = self._batches.get(size, (0, 0))
            self._batches[size] = (executions + 1, ns + compute_ns)
            self._counts = replace(
                c,
                executions=c.executions + 1,
                inferences=c.inferences + size,
                success_ns=c.success_ns + queue_ns + size * compute_ns,
                queue_ns=c.queue_ns + queue_ns,
                compute_ns=c.compute_ns + size * compute_ns,
                last_inference_ms=time.time_ns() // 1_000_000,
            )

    def failed(self, waited_s: Sequence[float]) -> None:
        with self._lock:
            c = self._counts
            self._counts = replace(
                c, fail_count=c.fail_count + len(waited_s), fail_ns=c.fail_ns + int(sum(waited_s) * 1e9)
            )

    def snapshot(self) -> InferenceCounts:
        with self._lock:
            return replace(self._counts, batches=tuple((s, *v) for s, v in sorted(self._batches.items())))


def _new_future(loop: asyncio.AbstractEventLoop | None) -> AnyFuture:
    return Future() if loop is None else loop.create_future()


class DynamicBatcher:
    def __init__(
        self,
        name: str,
        backend: Backend,
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        preferred_batch_sizes: Sequence[int] = (),
        max_queue_size: int = 0,
        max_batch_tokens: int = 0,
        observer: BatchObserver | None = None,
    ) -> None:
        self.name = name
        self.backend = backend
        self.policy = BatchPolicy(
            max_batch_size, max_queue_delay_s, tuple(sorted(preferred_batch_sizes)), max_batch_tokens
        )
        self.max_queue_size = max_queue_size
        self.observer = observer
        self._queued_tokens = 0
        self.stats = BatcherStats()
        self.inference_stats = InferenceStats()
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"batcher:{name}", daemon=True)
        self._thread.start()

    def pending(self) -> int:
        return len(self._queue)

    @property
    def max_batch_size(self) -> int:
        return self.policy.max_batch_size

    @property
    def max_batch_tokens(self) -> int:
        return self.policy.max_batch_tokens

    @property
    def closed(self) -> bool:
        """True once close() has returned: the thread has ended and the backend was released."""
        return self._closed and not self._thread.is_alive()

    def submit(
        self,
        sequences: Sequence[Sequence[int]],
        deadline: float | None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> list[AnyFuture]:
        """Queue every sequence of one request, or none of them. With `loop` (called on that loop's
        thread), the futures are asyncio futures of that loop; without, concurrent futures."""
        now = time.monotonic()
        return self._enqueue([_Item(ids, deadline, now, _new_future(loop)) for ids in sequences])

    def submit_task(
        self,
        ids: Sequence[int],
        task: AloneTask,
        deadline: float | None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> AnyFuture:
        """Queue work that runs alone, as one batch, on this instance's thread, after the batches of the
        inputs queued before it (a shared-prompt group); `ids` are the tokens it reads; the future
        resolves to what task.execute returns (a GroupTask: one Scored per member)."""
        return self._enqueue([_Item(ids, deadline, time.monotonic(), _new_future(loop), task=task)])[0]

    def _enqueue(self, items: list[_Item]) -> list[AnyFuture]:
        with self._cond:
            if self._closed:
                raise Unavailable(f"model instance {self.name} is unloading")
            if self.max_queue_size and len(self._queue) + len(items) > self.max_queue_size:
                raise ResourceExhausted(
                    f"queue of {self.name} is full: {len(self._queue)} inputs waiting, request adds "
                    f"{len(items)}, max_queue_size is {self.max_queue_size}"
                )
            self._queue.extend(items)
            self._queued_tokens += sum(len(item.ids) for item in items)
            self._cond.notify()
        return [item.future for item in items]

    def close(self) -> None:
        """Stop taking work, fail what still waits, finish the batch in flight, release the backend."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
        self.backend.close()

    # --- the batcher thread -------------------------------------------------------------------

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            settler = _Settler()
            self._execute(batch, settler)
            settler.flush()

    def _next_batch(self) -> list[_Item] | None:
        with self._cond:
            while True:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    settler = _Settler()
                    self._fail_waiting(settler)
                    settler.flush()
                    return None
                dispatch_at = self.policy.dispatch_at(self._queue[0].enqueued)
                size = self.policy.size_ready(len(self._queue), self._queued_tokens)
                while not size and not self._closed:
                    remaining = dispatch_at - time.monotonic()
                    if remaining <= 0:
                        size = self.policy.size_due(len(self._queue))
                        break
                    self._cond.wait(remaining)
                    size = self.policy.size_ready(len(self._queue), self._queued_tokens)
                if self._closed:
                    continue
                settler = _Settler()
                batch = self._live(self._take(size), settler)
                settler.flush()
                if batch:
                    return batch

    def _take(self, size: int) -> list[_Item]:
        """The oldest input and the companions the policy picks for it, out of the queue."""
        head = self._queue.popleft()
        chosen = [head]
        if head.task is None and size > 1 and self._queue:
            lengths = [ALONE if item.task is not None else len(item.ids) for item in self._queue]
            picked = self.policy.companions(len(head.ids), lengths, size)
            if picked:
                chosen += [self._queue[i] for i in picked]
                taken = set(picked)
                self._queue = deque(item for i, item in enumerate(self._queue) if i not in taken)
        self._queued_tokens -= sum(len(item.ids) for item in chosen)
        return chosen

    def _live(self, items: list[_Item], settler: _Settler) -> list[_Item]:
        """Drop cancelled and expired items; the rest are marked running (no longer cancellable)."""
        now = time.monotonic()
        live = []
        for item in items:
            if not item.start():
                self.stats.cancelled += 1
            elif expired(item.deadline, now):
                self.stats.expired += 1
                self.inference_stats.failed([now - item.enqueued])
                settler.set(
                    item.future, error=DeadlineExceeded("deadline passed while the input waited in the queue")
                )
            else:
                item.started = now
                live.append(item)
        return live

    def _fail_waiting(self, settler: _Settler) -> None:
        self._queued_tokens = 0
        while self._queue:
            item = self._queue.popleft()
            if item.start():
                settler.set(item.future, error=Unavailable(f"model instance {self.name} is unloading"))

    def _execute(self, batch: list[_Item], settler: _Settler) -> None:
        try:
            self._compute(batch, settler)
        except Exception as e:
            self.stats.failed_batches += 1
            if self.observer:
                self.observer.batch_failed(len(batch))
            now = time.monotonic()
            self.inference_stats.failed([now - item.enqueued for item in batch])
            log.exception("backend of %s failed on a batch of %d", self.name, len(batch))
            error = BackendFailure(
                f"model {self.name} failed on a batch of {len(batch)}: {type(e).__name__}: {e}"
            )
            for item in batch:
                settler.set(item.future, error=error)

    def _compute(self, batch: list[_Item], settler: _Settler) -> None:
        """Score `batch` and resolve its futures; out of memory -> the two halves, one after the other."""
        head = batch[0]
        if head.task is not None:  # alone in its batch: see _take
            return settler.set(head.future, head.task.execute(self, head.ids, head.started - head.enqueued))
        try:
            start = time.monotonic()
            scores = self.backend.score_batch([item.ids for item in batch])
            compute_s = time.monotonic() - start
            if len(scores) != len(batch):
                raise RuntimeError(f"backend returned {len(scores)} scores for {len(batch)} inputs")
        except Exception as e:
            if len(batch) < 2 or not is_out_of_memory(e):
                raise
            self.stats.oom_splits += 1
            log.warning(
                "%s: out of memory on a batch of %d (%s); retrying it in halves", self.name, len(batch), e
            )
            half = len(batch) // 2
            self._compute(batch[:half], settler)
            self._compute(batch[half:], settler)
            return
        lengths = [len(item.ids) for item in batch]
        queue_s = [item.started - item.enqueued for item in batch]
        # fewer computed tokens than rows x longest where the backend packs
        self._record_batch(sum(lengths), self.backend.computed_tokens(lengths), queue_s, compute_s)
        for item, score, waited in zip(batch, scores, queue_s):
            settler.set(item.future, Scored(float(score), waited, compute_s))

    def _record_batch(
        self, real_tokens: int, computed_tokens: int, queue_s: Sequence[float], compute_s: float
    ) -> None:
        """The one stats update of a computed batch: this batcher's stats, Triton's statistics, metrics."""
        size = len(queue_s)
        self.stats.batches += 1
        self.stats.computed += size
        self.stats.batch_sizes[size] += 1
        self.stats.real_tokens += real_tokens
        self.stats.computed_tokens += computed_tokens
        self.stats.compute_s += compute_s
        if self.observer:
            self.observer.batch_done(size, real_tokens, computed_tokens, queue_s, compute_s)
        self.inference_stats.batch_done(queue_s, compute_s)

    def _compute_group(self, task: GroupTask, ids: Sequence[int], queue_s: float) -> list[Scored]:
        """A shared-prompt group: one backend call, one Scored per member (no split: it is one sequence)."""
        start = time.monotonic()
        scores = task.run()
        compute_s = time.monotonic() - start
        self.stats.shared_groups += 1
        self._record_batch(len(ids), task.computed_tokens, [queue_s] * len(scores), compute_s)
        return [Scored(float(score), queue_s, compute_s) for score in scores]
