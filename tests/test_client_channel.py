"""The client's channel: targets for replica lists, wait_for_ready, chunked batches on the asyncio
client, and connections ended by the server's --max-connection-age costing no call."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time

import pytest

import reward_client as rc
from helpers import CHAT_1, add_model, random_chat, serve_repo
from reference import close
from reward_client import AsyncRewardClient, RewardClient
from reward_client._channel import channel_target


def test_channel_target_keeps_one_target_and_joins_a_list_into_one_round_robin_target():
    assert channel_target("dns:///reward.svc:50051") == "dns:///reward.svc:50051"
    assert channel_target(["10.0.0.1:50051"]) == "10.0.0.1:50051"
    assert channel_target(["10.0.0.1:1", "10.0.0.2:2"]) == "ipv4:10.0.0.1:1,10.0.0.2:2"
    assert channel_target(["[::1]:1", "[::1]:2"]) == "ipv6:[::1]:1,[::1]:2"
    assert channel_target(["localhost:1", "127.0.0.1:2"]) == "ipv4:127.0.0.1:1,127.0.0.1:2"


@pytest.mark.parametrize(
    "bad",
    [[], ["no-port", "10.0.0.1:1"], ["10.0.0.1:1", "[::1]:2"]],
    ids=["empty", "no-port", "mixed-families"],
)
def test_channel_target_is_refused_when_the_list_is_empty_portless_or_mixes_families(bad):
    with pytest.raises(ValueError):
        channel_target(bad)


def test_client_refuses_a_chunk_size_below_one():
    with pytest.raises(ValueError, match="chunk_size"):
        RewardClient("127.0.0.1:1", model="tiny", chunk_size=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_call_waits_for_a_server_that_starts_later_when_wait_for_ready(tiny_checkpoint, tmp_path):
    from helpers import ServerThread
    from reward_server.settings import ServerSettings

    add_model(tmp_path, "tiny", tiny_checkpoint)
    port = free_port()
    answers: list = []
    with RewardClient(f"127.0.0.1:{port}", model="tiny", timeout=2) as fail_fast:
        with pytest.raises(rc.UnavailableError):
            fail_fast.get_score(CHAT_1)
    with RewardClient(f"127.0.0.1:{port}", model="tiny", timeout=60, wait_for_ready=True) as rm:
        caller = threading.Thread(target=lambda: answers.append(rm.get_score(CHAT_1)))
        caller.start()
        time.sleep(0.5)  # the call is waiting, no server yet
        assert caller.is_alive() and not answers
        with ServerThread(
            ServerSettings(model_repository=tmp_path, host="127.0.0.1", port=port, http_port=None)
        ):
            caller.join(60)
    assert len(answers) == 1 and isinstance(answers[0], float)


def test_async_client_splits_a_large_batch_into_chunks_and_keeps_the_order(tiny_checkpoint, tmp_path):
    add_model(tmp_path, "tiny", tiny_checkpoint)
    rng = random.Random(11)
    chats = [random_chat(rng) for _ in range(9)]

    async def scores(chunk_size):
        async with AsyncRewardClient(server.target, model="tiny", chunk_size=chunk_size) as rm:
            return await rm.get_scores(chats), await rm.score(chats)

    def score_requests(server) -> float:
        return sum(
            s.value
            for metric in server.running.metrics.registry.collect()
            for s in metric.samples
            if s.name == "reward_request_success_total" and s.labels.get("method") == "Score"
        )

    with serve_repo(tmp_path) as server:
        whole, whole_results = asyncio.run(scores(None))
        before = score_requests(server)
        chunked, chunked_results = asyncio.run(scores(2))
        sent = score_requests(server) - before
    assert sent == 2 * 5, "9 inputs in chunks of 2 are 5 requests, for each of the two calls"
    assert len(chunked) == len(chats)
    assert all(close(a, b) for a, b in zip(chunked, whole))
    assert [r.num_tokens for r in chunked_results] == [r.num_tokens for r in whole_results]


def test_calls_succeed_across_connections_ended_by_max_connection_age(tiny_checkpoint, tmp_path):
    add_model(tmp_path, "tiny", tiny_checkpoint)
    with serve_repo(tmp_path, max_connection_age_s=0.3, grace_period_s=5) as server:
        with RewardClient(server.target, model="tiny") as rm:
            # several connection lifetimes, and calls enough to cross several of them however slow each is
            lifetimes_end = time.monotonic() + 1.5
            calls = 0
            while (time.monotonic() < lifetimes_end or calls < 8) and calls < 500:
                assert isinstance(rm.get_score(CHAT_1), float)
                calls += 1


@pytest.mark.parametrize("client_class", [RewardClient, AsyncRewardClient])
def test_chunked_call_raises_the_typed_error_naming_the_failed_chunk_when_one_chunk_is_refused(
    tiny_checkpoint, tmp_path, client_class
):
    add_model(tmp_path, "tiny", tiny_checkpoint)
    chats = [CHAT_1] * 5 + [[{"role": "bot", "content": "hi"}]]

    async def call_async(target):
        async with AsyncRewardClient(target, model="tiny", chunk_size=2) as rm:
            return await rm.get_scores(chats)

    with serve_repo(tmp_path) as server:
        with pytest.raises(
            rc.InvalidArgumentError, match=r"chunk of inputs from 4 .*input 1 message 0: unknown role 'bot'"
        ):
            if client_class is RewardClient:
                with RewardClient(server.target, model="tiny", chunk_size=2) as rm:
                    rm.get_scores(chats)
            else:
                asyncio.run(call_async(server.target))
        with RewardClient(server.target, model="tiny", chunk_size=2) as rm:
            assert len(rm.get_scores(chats[:5])) == 5
