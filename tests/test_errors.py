"""The error table of docs/operations.md ("Errors"), row by row, through a real server that keeps serving."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

import reward_client as rc
from helpers import CHAT_1, CHAT_2, add_model, config_text, serve_repo
from reward_api.v1 import reward_pb2 as pb
from reward_api.v1 import reward_pb2_grpc
from reward_client import RewardClient
from reward_server.backends import Backend

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    add_model(repo, "tiny", tiny_checkpoint)
    add_model(
        repo,
        "strict",
        tiny_checkpoint,
        config_text("strict", reward="max_sequence_length: 16 truncation: false"),
    )
    add_model(
        repo, "slow", tiny_checkpoint, config_text("slow", max_batch_size=8, delay_us=1_500_000, queue=2)
    )
    # A batch of "held" goes only when 3 inputs wait (or after a minute): a test decides when its queue
    # empties, by sending the input that completes the batch.
    add_model(
        repo, "held", tiny_checkpoint, config_text("held", max_batch_size=3, delay_us=60_000_000, queue=3)
    )
    broken = add_model(repo, "broken", tiny_checkpoint)
    (broken / "1" / "model.safetensors").write_bytes(b"not a safetensors file")
    with serve_repo(repo, strict=False, max_items_per_request=8) as running:
        yield running


@pytest.fixture()
def rm(server):
    with RewardClient(server.target, model="tiny", timeout=30) as client:
        yield client


def assert_still_serving(server):
    with RewardClient(server.target, model="tiny") as client:
        assert len(client.get_scores([CHAT_1, CHAT_2])) == 2


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([], "no inputs"),
        ([[{"role": "bot", "content": "hi"}]], "unknown role 'bot'"),
        ([[{"role": "user", "content": ""}]], "empty content in a user message"),
        ([[]], "no messages"),
        (
            [
                "",
            ],
            "empty text",
        ),
        ([[10**6]], "outside the vocabulary"),
        ([CHAT_1] * 9, "at most 8"),
    ],
    ids=[
        "empty-list",
        "unknown-role",
        "empty-content",
        "empty-conversation",
        "empty-text",
        "bad-token-id",
        "too-many-items",
    ],
)
def test_score_is_invalid_argument_when_input_is_malformed(server, rm, inputs, message):
    with pytest.raises(rc.InvalidArgumentError, match=message):
        rm.score(inputs)
    assert_still_serving(server)


def test_score_is_invalid_argument_when_version_is_not_a_number(server):
    with RewardClient(server.target, model="tiny", version="latest") as client:
        with pytest.raises(rc.InvalidArgumentError, match="version must be a positive integer"):
            client.get_score(CHAT_1)
    assert_still_serving(server)


def test_score_is_invalid_argument_naming_lengths_when_too_long_and_truncation_disabled(server):
    with RewardClient(server.target, model="strict") as client:
        with pytest.raises(
            rc.InvalidArgumentError, match=r"has \d+ tokens, more than .* max_sequence_length 16"
        ):
            client.get_score(CHAT_1)
        assert client.score([[1, 2, 3]])[0].num_truncated_tokens == 0
    assert_still_serving(server)


def test_request_without_model_or_kind_is_invalid_argument(server):
    with grpc.insecure_channel(server.target) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Score(pb.ScoreRequest(inputs=[pb.ScoreInput(text="x")]))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as info:
            stub.Rank(pb.RankRequest(model="tiny"))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as info:
            stub.Score(pb.ScoreRequest(model="tiny", inputs=[pb.ScoreInput()]))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_model_or_version_is_not_found(server):
    with RewardClient(server.target, model="nope") as client:
        with pytest.raises(rc.NotFoundError, match="unknown model 'nope'"):
            client.get_score(CHAT_1)
        with pytest.raises(rc.NotFoundError):
            client.model_metadata()
    with RewardClient(server.target, model="tiny", version=7) as client:
        with pytest.raises(rc.NotFoundError, match="no version 7"):
            client.get_score(CHAT_1)
    assert_still_serving(server)


def test_model_that_failed_to_load_is_unavailable_with_its_reason(server):
    with RewardClient(server.target, model="broken") as client:
        with pytest.raises(rc.UnavailableError, match="cannot read safetensors"):
            client.get_score(CHAT_1)
        info = client.model_metadata()
    assert info.versions[0].state == "UNAVAILABLE" and "safetensors" in info.versions[0].reason
    assert_still_serving(server)


def test_draining_server_is_unavailable(server, rm):
    server.running.core.draining = True
    try:
        # The client retries UNAVAILABLE a few times (service config), then reports it.
        with pytest.raises(rc.UnavailableError, match="shutting down"):
            rm.get_score(CHAT_1)
    finally:
        server.running.core.draining = False
    assert_still_serving(server)


def test_full_queue_is_resource_exhausted_at_once(server):
    batcher = server.running.repository.resolve("held", "").instances[0]
    batches = batcher.stats.batches
    answered: list[list[float]] = []
    with RewardClient(server.target, model="held", timeout=60) as client:
        first = threading.Thread(target=lambda: answered.append(client.get_scores([CHAT_1, CHAT_2])))
        first.start()  # two of the three places (max_queue_size 3); no batch goes before a third input
        while batcher.pending() < 2:
            assert first.is_alive(), "the first request ended before its inputs were queued"
            time.sleep(0.01)
        # Two more do not fit. Room would come only from the input sent below, so a server that waited
        # for room instead of refusing would answer DEADLINE_EXCEEDED here, not RESOURCE_EXHAUSTED.
        with pytest.raises(rc.ResourceExhaustedError, match="queue of held/1#0 is full"):
            client.get_scores([CHAT_1, CHAT_2], timeout=30)
        # Refused while the queue was full: no batch ran meanwhile, the first request's inputs still wait.
        assert batcher.pending() == 2 and batcher.stats.batches == batches and first.is_alive()
        assert isinstance(client.get_score(CHAT_1), float)  # the third input: the batch of three goes
        first.join(60)
    assert len(answered) == 1 and len(answered[0]) == 2
    assert batcher.stats.batches == batches + 1
    assert_still_serving(server)


def test_expired_input_never_reaches_the_model(server):
    batcher = server.running.repository.resolve("slow", "").instances[0]
    computed_before = batcher.stats.computed
    with RewardClient(server.target, model="slow") as client:
        with pytest.raises(rc.DeadlineExceededError):
            client.get_score(CHAT_1, timeout=0.3)  # the batch waits 1.5 s for company
    deadline = time.monotonic() + 5
    while batcher.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert batcher.stats.computed == computed_before
    assert batcher.stats.expired + batcher.stats.cancelled >= 1
    assert_still_serving(server)


class PoisonedBackend(Backend):
    """Fault injection around the real backend: a batch holding token id 7 fails."""

    def __init__(self, real):
        self.real, self.device, self.dtype, self.head_bias = real, real.device, real.dtype, real.head_bias

    def score_batch(self, batch):
        if any(7 in ids for ids in batch):
            raise RuntimeError("injected failure")
        return self.real.score_batch(batch)

    def close(self):
        self.real.close()


def test_backend_failure_is_internal_and_server_keeps_serving(server, rm):
    batcher = server.running.repository.resolve("tiny", "").instances[0]
    real = batcher.backend
    batcher.backend = PoisonedBackend(real)
    try:
        with pytest.raises(rc.InternalError, match="injected failure"):
            rm.score([[5, 6, 7]])
        assert len(rm.score([[5, 6, 8]])) == 1
    finally:
        batcher.backend = real
    assert_still_serving(server)


def test_missing_or_wrong_token_is_refused_and_health_stays_open(tiny_checkpoint, tmp_path):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    add_model(tmp_path, "tiny", tiny_checkpoint)
    with serve_repo(tmp_path, auth_token=TOKEN) as server:
        with RewardClient(server.target, model="tiny") as client:
            with pytest.raises(rc.UnauthenticatedError):
                client.get_score(CHAT_1)
        with RewardClient(server.target, model="tiny", token="wrong") as client:
            with pytest.raises(rc.PermissionDeniedError):
                client.get_score(CHAT_1)
        with RewardClient(server.target, model="tiny", token=TOKEN) as client:
            assert isinstance(client.get_score(CHAT_1), float)
        with grpc.insecure_channel(server.target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
