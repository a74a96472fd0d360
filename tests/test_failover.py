"""Replicas behind the client's round_robin: three server subprocesses on loopback, 32 concurrent
callers, one replica killed (SIGKILL) or drained (SIGTERM) mid-run. No call may fail and every answer
must equal the reference score: retries of UNAVAILABLE land on the replicas still up."""

from __future__ import annotations

import random
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import ServerProcess, add_model, random_chat, serve_repo, start_servers
from reference import close, reference_score
from reward_client import RewardClient

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "model_repository"
DEMO_VERSION = DEMO / "demo" / "1"
CALLERS = 32
CALLS_BEFORE = 96  # calls answered before the disruption
CALLS_AFTER = 192  # calls answered after it
MAX_CALLS_PER_CALLER = 100
LOAD_TIME_LIMIT_S = 120


@pytest.fixture(scope="module")
def chats_and_scores():
    rng = random.Random(7)
    chats = [random_chat(rng) for _ in range(12)]
    return chats, [reference_score(DEMO_VERSION, chat) for chat in chats]


class Load:
    """CALLERS threads calling get_scores on one client until told to stop (or a bounded number of calls)."""

    def __init__(self, client: RewardClient, chats: list, expected: list[float]) -> None:
        self.client, self.chats, self.expected = client, chats, expected
        self.answered = 0
        self.failures: list[str] = []
        self.wrong: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._caller, args=(i,), daemon=True) for i in range(CALLERS)
        ]

    def _caller(self, seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(MAX_CALLS_PER_CALLER):
            if self._stop.is_set():
                return
            picks = rng.sample(range(len(self.chats)), k=rng.randint(1, 3))
            try:
                scores = self.client.get_scores([self.chats[i] for i in picks])
            except Exception as error:  # every failure is a test failure, recorded with its message
                with self._lock:
                    self.failures.append(repr(error))
                continue
            with self._lock:
                self.answered += 1
                self.wrong += [
                    f"chat {i}: {s} != {self.expected[i]}"
                    for i, s in zip(picks, scores)
                    if not close(s, self.expected[i])
                ]

    def wait_for(self, calls: int, deadline: float) -> None:
        while (
            self.answered < calls and time.monotonic() < deadline and any(t.is_alive() for t in self._threads)
        ):
            time.sleep(0.02)
        assert self.answered >= calls, f"only {self.answered} calls answered; failures: {self.failures[:3]}"

    def run(self, disrupt: Callable[[], None]) -> None:
        deadline = time.monotonic() + LOAD_TIME_LIMIT_S
        for thread in self._threads:
            thread.start()
        try:
            self.wait_for(CALLS_BEFORE, deadline)
            at_disruption = self.answered
            disrupt()
            self.wait_for(at_disruption + CALLS_AFTER, deadline)
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join(60)


def run_with_disruption(
    chats_and_scores, disrupt: Callable[[ServerProcess], None]
) -> tuple[Load, ServerProcess, bool]:
    servers = start_servers(3, DEMO, "--grace-period", "20")
    try:
        with RewardClient([s.target for s in servers], model="demo", timeout=30) as client:
            load = Load(client, *chats_and_scores)
            load.run(lambda: disrupt(servers[0]))
        survivors_up = all(s.proc.poll() is None for s in servers[1:])
        try:
            servers[0].proc.wait(60)  # a drained replica exits by itself
        except subprocess.TimeoutExpired:
            pass
        return load, servers[0], survivors_up
    finally:
        for server in servers:
            server.kill()


def test_replicas_answer_every_call_correctly_when_one_is_killed_mid_run(chats_and_scores):
    load, victim, survivors_up = run_with_disruption(chats_and_scores, lambda s: s.kill())
    assert load.failures == [] and load.wrong == []
    assert victim.proc.returncode == -9 and survivors_up


def test_replicas_answer_every_call_correctly_when_one_drains_on_sigterm_mid_run(chats_and_scores):
    load, victim, survivors_up = run_with_disruption(chats_and_scores, lambda s: s.terminate())
    assert load.failures == [] and load.wrong == []
    assert victim.proc.returncode == 0 and "stopped" in victim.log()
    assert survivors_up


def computed(server) -> int:
    """Inputs the replica's model has computed."""
    return server.running.repository.resolve("tiny", "").instances[0].stats.computed


@pytest.fixture()
def replicas(tiny_checkpoint, tmp_path):
    """Three in-process servers of one repository."""
    add_model(tmp_path, "tiny", tiny_checkpoint)
    servers = []
    try:
        for _ in range(3):
            servers.append(serve_repo(tmp_path))
        yield servers
    finally:
        for server in servers:
            server.stop()


def until_every_replica_answered(client: RewardClient, servers: list, chat, timeout: float = 60) -> None:
    """Calls until every replica has computed something (a new channel connects to them in the
    background, slower on a busy machine; round_robin picks among the connected ones)."""
    deadline = time.monotonic() + timeout
    while not all(computed(s) for s in servers):
        assert time.monotonic() < deadline, (
            f"not every replica got a call in {timeout} s: {[computed(s) for s in servers]}"
        )
        client.get_score(chat)


def test_client_spreads_calls_over_every_replica_when_given_a_list(replicas):
    with RewardClient([s.target for s in replicas], model="tiny") as client:
        chat = random_chat(random.Random(0))
        until_every_replica_answered(client, replicas, chat)
        before = [computed(s) for s in replicas]
        for _ in range(3 * 4):
            client.get_score(chat)
        after = [computed(s) for s in replicas]
    assert [a - b for a, b in zip(after, before)] == [4, 4, 4]  # round robin once all are connected


def test_client_splits_a_large_batch_into_chunks_over_every_replica_in_order(replicas):
    rng = random.Random(3)
    chats = [random_chat(rng) for _ in range(30)]
    with RewardClient(replicas[0].target, model="tiny", chunk_size=None) as one:
        expected = one.get_scores(chats)
    with RewardClient([s.target for s in replicas], model="tiny", chunk_size=4) as client:
        until_every_replica_answered(client, replicas, chats[0])
        before = [computed(s) for s in replicas]
        scores = client.get_scores(chats)
        after = [computed(s) for s in replicas]
    assert all(close(a, b) for a, b in zip(scores, expected)) and len(scores) == len(chats)
    assert all(a > b for a, b in zip(after, before)), (before, after)  # 8 chunks, round robin over 3


def test_client_sends_no_new_calls_to_a_replica_when_its_health_is_not_serving(replicas):
    from grpc_health.v1 import health_pb2

    from reward_server.server import READY_SERVICE_NAME

    chat = random_chat(random.Random(5))
    with RewardClient([s.target for s in replicas], model="tiny") as client:
        until_every_replica_answered(client, replicas, chat)
        replicas[0].run(
            replicas[0].running.health.set(READY_SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        )
        # the client's health watch hears of it: waited on, as calls that leave replica 0 alone
        deadline = time.monotonic() + 30
        while True:
            before = [computed(s) for s in replicas]
            for _ in range(6):
                client.get_score(chat)
            if computed(replicas[0]) == before[0]:
                break
            assert time.monotonic() < deadline, "replica 0 still gets calls 30 s after going NOT_SERVING"
        before = [computed(s) for s in replicas]
        for _ in range(20):
            client.get_score(chat)
        after = [computed(s) for s in replicas]
    assert after[0] == before[0] and sum(after) == sum(before) + 20, (before, after)
