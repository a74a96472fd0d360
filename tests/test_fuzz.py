"""Fuzzing the request decoders through a real server: random and mutated bytes sent to every RPC of the
RewardService on a raw channel (the bytes go out as they are). Every answer is a status the error table
allows, never UNKNOWN or INTERNAL, and the server still scores correctly after. Bounded and
deterministic: a fixed number of examples per RPC, derandomized."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import CHAT_1, serve_repo
from reward_api.v1 import reward_pb2 as pb
from reward_client import RewardClient

SERVICE = pb.DESCRIPTOR.services_by_name["RewardService"]
EXPECTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.FAILED_PRECONDITION,
}
EXAMPLES_PER_RPC = 60

HI = [pb.Message(role="user", content="hi"), pb.Message(role="assistant", content="hello 😀")]
# One valid request per RPC: the seeds that mutations start from.
VALID = {
    "Score": pb.ScoreRequest(
        model="tiny",
        version="1",
        inputs=[
            pb.ScoreInput(conversation=pb.Conversation(messages=HI)),
            pb.ScoreInput(text="plain text"),
            pb.ScoreInput(token_ids=pb.TokenIds(ids=[5, 6, 7])),
        ],
    ),
    "Rank": pb.RankRequest(
        model="tiny", candidates=pb.Candidates(prompt=HI[:1], responses=["a", "bb", "ccc"])
    ),
    "GetModelMetadata": pb.ModelMetadataRequest(model="tiny", version="1"),
    "ListModels": pb.ListModelsRequest(),
    "RepositoryIndex": pb.RepositoryIndexRequest(ready=True),
    "LoadModel": pb.LoadModelRequest(model="tiny"),
    "UnloadModel": pb.UnloadModelRequest(model="tiny"),
}
assert set(VALID) == {m.name for m in SERVICE.methods}, "a new RPC needs a seed here"


def mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    """`seed` with a few bytes overwritten, then cut or extended: broken lengths, tags, UTF-8, varints."""
    edits = st.lists(st.tuples(st.integers(0, max(0, len(seed) - 1)), st.integers(0, 255)), max_size=4)

    def apply(args: tuple[list[tuple[int, int]], int, bytes]) -> bytes:
        changes, cut, tail = args
        data = bytearray(seed)
        for position, value in changes:
            if data:
                data[position] = value
        return bytes(data[:cut]) + tail

    return st.tuples(edits, st.integers(0, len(seed)), st.binary(max_size=12)).map(apply)


@pytest.fixture(scope="module")
def server(tiny_repo):
    # model control mode none: no load/unload
    with serve_repo(tiny_repo, max_items_per_request=16) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.target) as ch:
        yield ch


@pytest.mark.parametrize("method", list(VALID))
def test_decoder_answers_an_expected_status_when_given_random_or_mutated_bytes(server, channel, method):
    call = channel.unary_unary(f"/{SERVICE.full_name}/{method}")  # no serializers: the bytes as they are
    seed = VALID[method].SerializeToString()
    answered: list[grpc.StatusCode] = []

    @settings(
        max_examples=EXAMPLES_PER_RPC,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.one_of(st.binary(max_size=200), mutated(seed)))
    def check(payload: bytes) -> None:
        try:
            call(payload, timeout=30)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
            assert code in EXPECTED, f"{method} {payload!r}: {code} {error.details()}"
        answered.append(code)

    check()
    assert len(answered) >= EXAMPLES_PER_RPC // 2
    if method in ("Score", "Rank", "GetModelMetadata", "LoadModel", "UnloadModel"):
        assert grpc.StatusCode.INVALID_ARGUMENT in answered  # the fuzzing reached the decoder's refusals
    with RewardClient(server.target, model="tiny") as rm:
        assert isinstance(rm.get_score(CHAT_1), float)
