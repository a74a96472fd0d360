"""Limits against abuse: message size, items per request, characters per message, RPCs in flight.
Each over-limit request gets its clear status; the server keeps serving and its memory stays bounded."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import reward_client as rc
from helpers import CHAT_1, CHAT_2, ServerProcess, add_model, config_text, serve_repo
from reward_api.v1 import reward_pb2 as pb
from reward_api.v1 import reward_pb2_grpc
from reward_client import RewardClient

DEMO = Path(__file__).resolve().parent.parent / "model_repository"
MIB = 1024 * 1024


def conversation(content: str) -> pb.ScoreInput:
    return pb.ScoreInput(conversation=pb.Conversation(messages=[pb.Message(role="user", content=content)]))


def test_oversize_burst_gets_clear_statuses_while_memory_stays_bounded_and_server_serves():
    server = ServerProcess(
        DEMO,
        "--max-message-bytes",
        str(MIB),
        "--max-chars-per-message",
        "10000",
        "--max-items-per-request",
        "16",
    ).wait_started()
    try:
        with RewardClient(server.target, model="demo") as rm:
            rm.get_scores([CHAT_1, CHAT_2])  # warm: models, threads and buffers allocated
            rss_before = server.memory_rss_bytes()
            burst = (
                [
                    (
                        pb.ScoreRequest(model="demo", inputs=[pb.ScoreInput(text="x" * (8 * MIB))]),
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                    )
                ]
                * 32
                + [
                    (
                        pb.ScoreRequest(model="demo", inputs=[conversation("y" * 10_001)]),
                        grpc.StatusCode.INVALID_ARGUMENT,
                    )
                ]
                * 32
                + [
                    (
                        pb.ScoreRequest(model="demo", inputs=[conversation("hi")] * 17),
                        grpc.StatusCode.INVALID_ARGUMENT,
                    )
                ]
                * 32
            )  # 256 MiB of oversize messages in flight at once

            with grpc.insecure_channel(
                server.target, options=[("grpc.max_send_message_length", 64 * MIB)]
            ) as channel:
                stub = reward_pb2_grpc.RewardServiceStub(channel)

                def send(item):
                    request, _ = item
                    try:
                        stub.Score(request, timeout=60)
                    except grpc.RpcError as error:
                        return error.code(), error.details()
                    return grpc.StatusCode.OK, ""

                with ThreadPoolExecutor(32) as pool:
                    answers = list(pool.map(send, burst))
            for (_, expected), (code, details) in zip(burst, answers):
                assert code == expected, details
            details = {d for _, d in answers}
            assert any("larger than max" in d for d in details)  # gRPC's own size check, before parsing
            assert any("10001 characters; at most 10000" in d for d in details)
            assert any("17 inputs; at most 16" in d for d in details)

            assert server.proc.poll() is None
            assert len(rm.get_scores([CHAT_1, CHAT_2])) == 2
            growth = server.memory_rss_bytes() - rss_before
            # Holding the burst would grow RSS by 256 MiB or more. What does grow is the allocator's arenas
            # keeping gRPC's read buffers: 37-90 MiB measured over runs (tools: one burst after another).
            assert growth < 128 * MIB, f"server memory grew by {growth / MIB:.0f} MiB in a 256 MiB burst"
    finally:
        server.kill()


@pytest.fixture(scope="module")
def limited(tiny_checkpoint, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    add_model(repo, "tiny", tiny_checkpoint)
    # One input waits 1.5 s for company: two calls stay in flight long enough to fill the limit.
    add_model(repo, "slow", tiny_checkpoint, config_text("slow", max_batch_size=8, delay_us=1_500_000))
    with serve_repo(repo, max_chars_per_message=100, max_concurrent_rpcs=2) as server:
        yield server


@pytest.mark.parametrize(
    ("call", "where"),
    [
        (
            lambda rm: rm.get_score([{"role": "user", "content": "a" * 101}]),
            "inputs[0].conversation.messages[0].content",
        ),
        (lambda rm: rm.score(["b" * 101]), "inputs[0].text"),
        (
            lambda rm: rm.best_of_n([{"role": "user", "content": "hi"}], ["ok", "c" * 101]),
            "candidates.responses[1]",
        ),
    ],
    ids=["message", "text", "rank-response"],
)
def test_request_is_invalid_argument_naming_the_field_when_a_string_is_over_the_character_limit(
    limited, call, where
):
    with RewardClient(limited.target, model="tiny") as rm:
        with pytest.raises(
            rc.InvalidArgumentError, match=re.escape(f"{where} has 101 characters; at most 100")
        ):
            call(rm)
        assert isinstance(rm.get_score([{"role": "user", "content": "a" * 100}]), float)  # at the limit: fine


def test_request_is_resource_exhausted_at_once_when_over_the_concurrent_rpc_limit_and_health_stays_open(
    limited,
):
    with RewardClient(limited.target, model="slow") as rm:
        slow = [threading.Thread(target=rm.get_score, args=(CHAT_1,)) for _ in range(2)]
        for thread in slow:
            thread.start()
        deadline = time.monotonic() + 10
        while limited.running.guard.in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        with RewardClient(limited.target, model="tiny") as fast:
            started = time.monotonic()
            with pytest.raises(rc.ResourceExhaustedError, match="--max-concurrent-rpcs"):
                fast.get_score(CHAT_2)
            assert time.monotonic() - started < 1.0, "over the limit must be refused at once, not queued"
        with grpc.insecure_channel(limited.target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        for thread in slow:
            thread.join(30)
    with RewardClient(limited.target, model="tiny") as rm:
        assert isinstance(rm.get_score(CHAT_2), float)
