"""DynamicBatcher contract on a real tiny model: batch limits, delays, preferred sizes, queue bound,
cancelled and expired inputs dropped before compute, one result per input, failures per batch."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch
from bench.instance_thread import run_alone

from reward_server.backends import Backend
from reward_server.backends.pytorch import PyTorchBackend
from reward_server.checkpoint import read_checkpoint
from reward_server.errors import BackendFailure, DeadlineExceeded, ResourceExhausted, Unavailable
from reward_server.runtime.batching import DynamicBatcher


class Recording(Backend):
    """The real backend, with a record of each batch it ran (and a gate to hold the thread)."""

    def __init__(self, real):
        self.real, self.device, self.dtype, self.head_bias = real, real.device, real.dtype, real.head_bias
        self.batches: list[list[tuple[int, ...]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_on: int | None = None
        self.memory_for: int | None = None  # larger batches raise torch's out-of-memory error

    def score_batch(self, batch):
        self.gate.wait()
        self.batches.append([tuple(ids) for ids in batch])
        if self.fail_on is not None and any(self.fail_on in ids for ids in batch):
            raise RuntimeError("injected")
        if self.memory_for is not None and len(batch) > self.memory_for:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate a batch of {len(batch)}")
        return self.real.score_batch(batch)

    def close(self):
        pass


@pytest.fixture(scope="module")
def real_backend(tiny_checkpoint):
    return PyTorchBackend(read_checkpoint(tiny_checkpoint), "cpu", "float32")


def make(real_backend, **kwargs):
    backend = Recording(real_backend)
    defaults = dict(max_batch_size=4, max_queue_delay_s=0.0)
    return DynamicBatcher("t", backend, **{**defaults, **kwargs}), backend


def test_batches_never_exceed_max_batch_size(real_backend):
    batcher, backend = make(real_backend, max_batch_size=3, max_queue_delay_s=0.05)
    futures = batcher.submit([[i + 5] for i in range(10)], None)
    scores = [f.result(10) for f in futures]
    batcher.close()
    assert len(scores) == 10
    assert max(len(b) for b in backend.batches) <= 3
    assert [ids for b in backend.batches for ids in b] == [(i + 5,) for i in range(10)]  # FIFO


def test_queue_delay_gathers_requests_into_one_batch(real_backend):
    batcher, backend = make(
        real_backend, max_batch_size=8, max_queue_delay_s=2.0
    )  # wide: a stalled CI machine
    first = batcher.submit([[5, 6]], None)
    time.sleep(0.05)
    second = batcher.submit([[7, 8, 9]], None)
    [f.result(10) for f in first + second]
    batcher.close()
    assert backend.batches == [[(5, 6), (7, 8, 9)]]


def test_preferred_batch_size_dispatches_without_waiting(real_backend):
    batcher, backend = make(
        real_backend, max_batch_size=8, max_queue_delay_s=30.0, preferred_batch_sizes=(2,)
    )
    started = time.monotonic()
    [f.result(10) for f in batcher.submit([[5], [6]], None)]
    assert time.monotonic() - started < 10
    batcher.close()
    assert backend.batches == [[(5,), (6,)]]


def test_results_match_their_own_inputs(real_backend):
    batcher, _ = make(real_backend, max_batch_size=4, max_queue_delay_s=0.01)
    inputs = [[5 + i] * (1 + i) for i in range(9)]
    batched = [f.result(10).score for f in batcher.submit(inputs, None)]
    batcher.close()
    alone = [real_backend.score_batch([ids])[0] for ids in inputs]
    assert all(abs(a - b) <= 1e-5 * max(1, abs(b)) for a, b in zip(batched, alone))


def test_submit_refuses_all_inputs_when_queue_would_overflow(real_backend):
    batcher, backend = make(real_backend, max_queue_size=3)
    backend.gate.clear()  # hold the thread inside the first batch
    running = batcher.submit([[5]], None)
    while not backend.batches and batcher.pending():
        time.sleep(0.01)
    time.sleep(0.05)
    waiting = batcher.submit([[6], [7]], None)
    with pytest.raises(ResourceExhausted, match="max_queue_size is 3"):
        batcher.submit([[8], [9]], None)
    assert batcher.pending() == 2  # nothing of the refused request was queued
    backend.gate.set()
    [f.result(10) for f in running + waiting]
    batcher.close()


def test_cancelled_and_expired_inputs_never_reach_the_model(real_backend):
    # the delay is the window for the cancel to land before the batch forms: wide, for a stalled machine
    batcher, backend = make(real_backend, max_batch_size=8, max_queue_delay_s=1.5)
    expired = batcher.submit([[5]], deadline=time.monotonic() + 0.05)
    cancelled = batcher.submit([[6]], None)
    live = batcher.submit([[7]], None)
    assert cancelled[0].cancel()
    assert isinstance(live[0].result(10).score, float)
    with pytest.raises(DeadlineExceeded):
        expired[0].result(10)
    batcher.close()
    assert backend.batches == [[(7,)]]
    assert (batcher.stats.expired, batcher.stats.cancelled, batcher.stats.computed) == (1, 1, 1)


def test_backend_failure_fails_only_its_batch(real_backend):
    batcher, backend = make(real_backend, max_batch_size=2, max_queue_delay_s=0.0)
    backend.fail_on = 13
    backend.gate.clear()
    futures = batcher.submit([[13], [14]], None) + batcher.submit([[15], [16]], None)
    backend.gate.set()
    for f in futures[:2]:
        with pytest.raises(BackendFailure, match="injected"):
            f.result(10)
    assert all(isinstance(f.result(10).score, float) for f in futures[2:])
    batcher.close()
    assert batcher.stats.failed_batches == 1


def test_out_of_memory_batch_is_retried_in_halves_when_the_device_is_full(real_backend):
    batcher, backend = make(real_backend, max_batch_size=8, max_queue_delay_s=0.0)
    backend.memory_for = 2
    backend.gate.clear()
    inputs = [[5 + i] * (1 + i) for i in range(8)]
    futures = batcher.submit(inputs, None)
    backend.gate.set()
    scores = [f.result(10).score for f in futures]
    batcher.close()
    alone = [real_backend.score_batch([ids])[0] for ids in inputs]
    assert all(abs(a - b) <= 1e-5 * max(1, abs(b)) for a, b in zip(scores, alone))
    assert [len(b) for b in backend.batches] == [8, 4, 2, 2, 4, 2, 2]
    assert batcher.stats.oom_splits == 3 and batcher.stats.failed_batches == 0


def test_out_of_memory_on_a_single_input_fails_it_with_internal(real_backend):
    batcher, backend = make(real_backend, max_batch_size=2, max_queue_delay_s=0.0)
    backend.memory_for = 0
    futures = batcher.submit([[5], [6]], None)
    for f in futures:
        with pytest.raises(BackendFailure, match="out of memory"):
            f.result(10)
    backend.memory_for = None
    assert isinstance(batcher.submit([[7]], None)[0].result(10).score, float)  # still serving
    batcher.close()


def test_backend_returning_wrong_count_fails_the_batch(real_backend):
    batcher, backend = make(real_backend)
    backend.score_batch = lambda batch: [0.0]  # one score for two inputs breaks the contract
    futures = batcher.submit([[5], [6]], None)
    with pytest.raises(BackendFailure, match="1 scores for 2 inputs"):
        futures[0].result(10)
    batcher.close()


def test_batches_group_similar_lengths_and_keep_the_token_budget(real_backend):
    batcher, backend = make(real_backend, max_batch_size=4, max_queue_delay_s=5.0, max_batch_tokens=64)
    backend.gate.clear()
    lengths = [30, 4, 31, 5, 29, 6, 3, 32]
    futures = batcher.submit([[5] * n for n in lengths], None)
    backend.gate.set()
    assert all(isinstance(f.result(10).score, float) for f in futures)
    batcher.close()
    for batch in backend.batches:
        assert len(batch) == 1 or len(batch) * max(map(len, batch)) <= 64
    shapes = [sorted(map(len, b)) for b in backend.batches]
    assert shapes[0] == [30, 31]  # the oldest input, with the closest length (ties: oldest) in the budget
    assert [3, 4, 5, 6] in shapes  # the short inputs travel together instead of padding to 30
    assert batcher.stats.padding_efficiency > 0.9


def test_oldest_input_is_never_passed_over(real_backend):
    batcher, backend = make(real_backend, max_batch_size=2, max_queue_delay_s=5.0, max_batch_tokens=40)
    backend.gate.clear()
    futures = batcher.submit([[5] * 35] + [[6] * 3] * 6, None)  # a long input, then many short ones
    backend.gate.set()
    [f.result(10) for f in futures]
    batcher.close()
    assert backend.batches[0] == [tuple([5] * 35)]  # runs first, alone: it is the oldest and over budget


def test_input_over_the_token_budget_runs_alone(real_backend):
    batcher, backend = make(real_backend, max_batch_size=8, max_queue_delay_s=0.0, max_batch_tokens=10)
    assert isinstance(batcher.submit([[5] * 50], None)[0].result(10).score, float)
    batcher.close()
    assert backend.batches == [[tuple([5] * 50)]]


class CountingLoop(asyncio.SelectorEventLoop):
    """An event loop that counts the callbacks other threads hand it."""

    def __init__(self):
        super().__init__()
        self.threadsafe_calls = 0

    def call_soon_threadsafe(self, *args, **kwargs):
        self.threadsafe_calls += 1
        return super().call_soon_threadsafe(*args, **kwargs)


def run_on_counting_loop(coroutine_function):
    loop = CountingLoop()
    try:
        return loop.run_until_complete(coroutine_function(loop)), loop.threadsafe_calls
    finally:
        loop.close()


def test_asyncio_futures_of_one_batch_resolve_with_one_wakeup_of_the_loop(real_backend):
    batcher, backend = make(real_backend, max_batch_size=8, max_queue_delay_s=5.0)
    backend.gate.clear()
    inputs = [[5 + i] * (1 + i) for i in range(8)]

    async def scores(loop):
        futures = batcher.submit(inputs, None, loop)
        assert all(isinstance(f, asyncio.Future) for f in futures)
        backend.gate.set()
        return [(await f).score for f in futures]

    got, wakeups = run_on_counting_loop(scores)
    batcher.close()
    assert [len(b) for b in backend.batches] == [8]
    assert wakeups == 1  # not one per input
    alone = [real_backend.score_batch([ids])[0] for ids in inputs]
    assert all(abs(a - b) <= 1e-5 * max(1, abs(b)) for a, b in zip(got, alone))


def test_asyncio_inputs_cancelled_or_expired_never_reach_the_model_and_failures_reach_their_futures(
    real_backend,
):
    # the delay is the window for the cancel to land before the batch forms: wide, for a stalled machine
    batcher, backend = make(real_backend, max_batch_size=8, max_queue_delay_s=1.5)
    backend.fail_on = 9

    async def outcomes(loop):
        expired = batcher.submit([[5]], time.monotonic() + 0.05, loop)[0]
        cancelled = batcher.submit([[6]], None, loop)[0]
        live = batcher.submit([[7]], None, loop)[0]
        cancelled.cancel()
        score = (await live).score
        with pytest.raises(DeadlineExceeded):
            await expired
        with pytest.raises(BackendFailure, match="injected"):
            await batcher.submit([[9]], None, loop)[0]
        return score

    score, _ = run_on_counting_loop(outcomes)
    batcher.close()
    assert isinstance(score, float)
    assert backend.batches == [[(7,)], [(9,)]]
    assert (batcher.stats.expired, batcher.stats.cancelled, batcher.stats.failed_batches) == (1, 1, 1)


def test_asyncio_inputs_still_waiting_at_close_fail_with_unavailable(real_backend):
    batcher, backend = make(real_backend, max_batch_size=1, max_queue_delay_s=0.0)
    backend.gate.clear()

    async def waiting(loop):
        running, queued = batcher.submit([[5], [6]], None, loop)
        while batcher.pending() != 1:  # the first input is in the held batch, the second waits
            await asyncio.sleep(0.01)
        closing = asyncio.get_running_loop().run_in_executor(None, batcher.close)
        await asyncio.sleep(0.1)
        backend.gate.set()
        await closing
        assert isinstance((await running).score, float)
        with pytest.raises(Unavailable, match="unloading"):
            await queued

    run_on_counting_loop(waiting)


def test_run_alone_runs_work_on_the_instance_thread_between_batches_outside_the_statistics(real_backend):
    batcher, backend = make(real_backend, max_batch_size=8, max_queue_delay_s=0.05)
    first = batcher.submit([[5, 6], [5, 7]], None)
    thread = run_alone(batcher, lambda: (threading.current_thread().name, len(backend.batches)))
    rest = batcher.submit([[5, 8]], None)
    name, batches_before = thread.result(10)
    [f.result(10) for f in first + rest]
    with pytest.raises(Exception, match="ZeroDivisionError"):
        run_alone(batcher, lambda: 1 / 0).result(10)
    batcher.close()
    assert name == "batcher:t"
    assert batches_before == 1  # after the batch of the inputs queued before it
    assert batcher.stats.batches == len(backend.batches) and batcher.stats.computed == 3
