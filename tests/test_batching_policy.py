"""The batching policy on its own (batch_policy.py): no thread, no clock, no model; queues made up here."""

from __future__ import annotations

import random

import pytest

from reward_server.runtime.batch_policy import ALONE, BatchPolicy, expired


def test_size_ready_is_max_batch_size_when_the_queue_holds_a_full_batch():
    policy = BatchPolicy(max_batch_size=4, max_queue_delay_s=1.0)
    assert policy.size_ready(queued=4, queued_tokens=40) == 4
    assert policy.size_ready(queued=9, queued_tokens=90) == 4


def test_size_ready_waits_when_nothing_fills_a_batch():
    policy = BatchPolicy(max_batch_size=4, max_queue_delay_s=1.0, max_batch_tokens=100)
    assert policy.size_ready(queued=3, queued_tokens=99) == 0


def test_size_ready_is_the_queue_when_its_tokens_fill_the_budget():
    policy = BatchPolicy(max_batch_size=8, max_queue_delay_s=1.0, max_batch_tokens=100)
    assert policy.size_ready(queued=2, queued_tokens=100) == 2


def test_size_ready_is_the_largest_preferred_size_when_the_queue_reaches_one():
    policy = BatchPolicy(max_batch_size=16, max_queue_delay_s=1.0, preferred_batch_sizes=(2, 4, 8))
    assert [policy.size_ready(queued=n, queued_tokens=0) for n in (1, 2, 3, 5, 8, 15)] == [0, 2, 2, 4, 8, 8]


def test_batch_is_due_with_what_is_queued_when_the_oldest_input_has_waited_the_delay():
    policy = BatchPolicy(max_batch_size=4, max_queue_delay_s=0.5)
    assert policy.dispatch_at(10.0) == 10.5
    assert (policy.size_due(3), policy.size_due(7)) == (3, 4)


def test_companions_are_closest_in_length_then_oldest_when_lengths_tie():
    policy = BatchPolicy(max_batch_size=3, max_queue_delay_s=0.0)
    # head of length 10; the queue after it: lengths 30, 11, 9, 12
    # -> 11 (older of the distance-1 pair), then 9
    assert policy.companions(10, [30, 11, 9, 12], size=3) == [1, 2]


def test_companions_skip_work_that_runs_alone():
    policy = BatchPolicy(max_batch_size=4, max_queue_delay_s=0.0)
    assert policy.companions(5, [ALONE, 5, ALONE, 6], size=4) == [1, 3]


def test_companions_skip_an_input_over_the_token_budget_and_take_a_shorter_one():
    policy = BatchPolicy(max_batch_size=4, max_queue_delay_s=0.0, max_batch_tokens=60)
    # head 20: a 40-token companion would pad to 2 x 40 = 80 > 60; 25 pads to 50, then 10 -> 3 x 25 = 75 > 60
    assert policy.companions(20, [40, 25, 10], size=4) == [1]


def test_companions_are_none_when_the_batch_is_one_input():
    policy = BatchPolicy(max_batch_size=4, max_queue_delay_s=0.0)
    assert policy.companions(5, [5, 5], size=1) == []


@pytest.mark.parametrize("seed", range(20))
def test_every_batch_chosen_fits_size_and_budget_when_queues_are_random(seed):
    rng = random.Random(seed)
    policy = BatchPolicy(
        max_batch_size=rng.randint(1, 8), max_queue_delay_s=0.0, max_batch_tokens=rng.choice([0, 64, 256])
    )
    queue: list[int | None] = [rng.choice([ALONE, rng.randint(1, 100)]) for _ in range(rng.randint(1, 30))]
    size = rng.randint(1, policy.max_batch_size)
    head = rng.randint(1, 100)
    picked = policy.companions(head, queue, size)
    assert len(picked) == len(set(picked)) and len(picked) + 1 <= size
    assert all(queue[i] is not ALONE for i in picked)
    lengths = [head, *(queue[i] for i in picked)]
    if policy.max_batch_tokens and len(lengths) > 1:
        assert len(lengths) * max(lengths) <= policy.max_batch_tokens
    # nothing left behind would have fitted: the policy stops only at the size or for want of room
    if len(picked) + 1 < size:
        rest = [n for i, n in enumerate(queue) if n is not ALONE and i not in picked]
        for n in rest:
            assert policy.max_batch_tokens and (len(lengths) + 1) * max(*lengths, n) > policy.max_batch_tokens


def test_input_is_expired_from_its_deadline_on():
    assert not expired(None, 1e9)
    assert not expired(5.0, 4.999)
    assert expired(5.0, 5.0) and expired(5.0, 6.0)
