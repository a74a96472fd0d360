"""Each client verb as a pure plan: which RPC, which request, how to read the response.

The sync and asyncio clients only differ in how they send a plan, so every verb is written once here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from reward_api.v1 import reward_pb2 as pb

from ._types import (
    BestOfN,
    Chat,
    ModelInfo,
    RankResult,
    RepositoryModel,
    ScoreInputLike,
    ScoreResult,
    VersionStatus,
)

T = TypeVar("T")

SERVICE = "reward_api.v1.RewardService"
# The server's readiness health name (reward_server.server.READY_SERVICE_NAME).
READY_SERVICE = "reward.ready"

# Calls are spread over every address of the target with gRPC's round_robin policy. Only UNAVAILABLE
# is retried (a replica killed, restarting or draining: the retry goes to the next replica); everything
# else is the caller's to see. Only the RPCs that are safe to repeat are retried: scoring and the
# read-only ones. LoadModel / UnloadModel are not (a load can take minutes and change the server; the
# server answers a failed load FAILED_PRECONDITION anyway). Throttling stops retries when most attempts
# fail (the whole pool is down): each failure costs a token, each success gives back 0.1, and retries
# stop below half of maxTokens.
RETRIED_METHODS = ("Score", "Rank", "GetModelMetadata", "ListModels", "RepositoryIndex")
SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        # Each replica's grpc.health.v1 status is watched: one that goes NOT_SERVING (draining on
        # SIGTERM, or a model it must serve not ready) gets no new calls from then on.
        "healthCheckConfig": {"serviceName": READY_SERVICE},
        "methodConfig": [
            {
                "name": [{"service": SERVICE, "method": method} for method in RETRIED_METHODS]
                + [{"service": "grpc.health.v1.Health"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
        "retryThrottling": {"maxTokens": 100, "tokenRatio": 0.1},
    }
)

MESSAGE_LIMIT = 64 * 1024 * 1024

CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    ("grpc.max_send_message_length", MESSAGE_LIMIT),
    ("grpc.max_receive_message_length", MESSAGE_LIMIT),
    # Ping a silent connection with calls open every 30 s, so a replica that vanished without a FIN
    # (node lost, network cut) is dropped within ~40 s instead of at the deadline. The server accepts it.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str  # attribute name on the generated stub
    request: Any
    parse: Callable[[Any], T]
    # Score requests may be split by input and their results concatenated; Rank orders all its items
    # together, so it always goes as one request.
    splittable: bool = False


def split_request(call: Call[Any], chunk_size: int | None) -> list[Any]:
    """The requests that carry `call`: one, or (splittable calls) chunks of at most `chunk_size` inputs."""
    inputs = call.request.inputs if call.splittable else ()
    if chunk_size is None or len(inputs) <= chunk_size:
        return [call.request]
    request = call.request
    return [
        pb.ScoreRequest(model=request.model, version=request.version, inputs=inputs[i : i + chunk_size])
        for i in range(0, len(inputs), chunk_size)
    ]


def chunk_position(index: int, chunk_size: int | None) -> str:
    """Where chunk `index` starts, for errors: the server numbers inputs within the chunk it got."""
    if chunk_size is None:
        return ""
    return f"in the chunk of inputs from {index * chunk_size} (the server counts inputs within the chunk)"


def merge_responses(responses: Sequence[Any]) -> Any:
    """One ScoreResponse with the results of `responses` (chunks of one request), in order."""
    if len(responses) == 1:
        return responses[0]
    merged = pb.ScoreResponse(model=responses[0].model, version=responses[0].version)
    for response in responses:
        merged.results.extend(response.results)
    return merged


def _messages(chat: Chat) -> list[pb.Message]:
    if isinstance(chat, (str, bytes)) or not isinstance(chat, Sequence):
        raise TypeError(
            f"a chat is a list of {{'role': ..., 'content': ...}} messages, got {type(chat).__name__}"
        )
    out = []
    for message in chat:
        if not isinstance(message, Mapping):
            raise TypeError(
                f"a chat message is a mapping with 'role' and 'content', got {type(message).__name__}"
            )
        out.append(pb.Message(role=message["role"], content=message["content"]))
    return out


def _conversation(chat: Chat) -> pb.Conversation:
    return pb.Conversation(messages=_messages(chat))


def _score_input(item: ScoreInputLike) -> pb.ScoreInput:
    if hasattr(item, "tolist"):  # numpy arrays and torch tensors of token ids
        item = item.tolist()
    if isinstance(item, str):
        return pb.ScoreInput(text=item)
    if isinstance(item, Sequence) and item and all(isinstance(x, int) for x in item):
        return pb.ScoreInput(token_ids=pb.TokenIds(ids=list(cast(Sequence[int], item))))
    return pb.ScoreInput(conversation=_conversation(item))  # type: ignore[arg-type]


def _results(response: Any) -> list[ScoreResult]:
    return [ScoreResult(r.score, r.num_tokens, r.num_truncated_tokens) for r in response.results]


def _scores(response: Any) -> list[float]:
    return [r.score for r in response.results]


def _rank_result(response: Any) -> RankResult:
    return RankResult(
        scores=_scores(response),
        rank=list(response.rank),
        order=list(response.order),
        results=_results(response),
        version=response.version,
    )


def _state(state: int) -> str:
    return str(pb.ModelState.Name(state)).removeprefix("MODEL_STATE_")


def _versions(versions: Any) -> list[VersionStatus]:
    return [VersionStatus(v.version, _state(v.state), v.reason, v.forward) for v in versions]


def _repository_model(m: Any) -> RepositoryModel:
    return RepositoryModel(m.name, _versions(m.versions), _state(m.state), m.reason)


def _model_info(m: Any) -> ModelInfo:
    return ModelInfo(
        name=m.name,
        versions=_versions(m.versions),
        backend=m.backend,
        max_sequence_length=m.max_sequence_length,
        prompt_format=m.prompt_format,
        max_batch_size=m.max_batch_size,
        dtype=m.dtype,
        device=m.device,
    )


@dataclass(frozen=True)
class Planner:
    """Builds the Call for each verb, for one (model, version)."""

    model: str
    version: str = ""

    def _score_request(self, inputs: Sequence[pb.ScoreInput]) -> pb.ScoreRequest:
        return pb.ScoreRequest(model=self.model, version=self.version, inputs=inputs)

    def score(self, inputs: Sequence[ScoreInputLike]) -> Call[list[ScoreResult]]:
        return Call(
            "Score", self._score_request([_score_input(i) for i in inputs]), _results, splittable=True
        )

    def get_score(self, chat: Chat) -> Call[float]:
        return Call(
            "Score",
            self._score_request([pb.ScoreInput(conversation=_conversation(chat))]),
            lambda r: _scores(r)[0],
        )

    def get_scores(self, chats: Sequence[Chat]) -> Call[list[float]]:
        request = self._score_request([pb.ScoreInput(conversation=_conversation(c)) for c in chats])
        return Call("Score", request, _scores, splittable=True)

    def compare(self, chat_a: Chat, chat_b: Chat) -> Call[bool]:
        def better(response: Any) -> bool:
            a, b = _scores(response)
            return a > b

        return Call("Score", self.get_scores([chat_a, chat_b]).request, better)

    def rank_conversations(self, chats: Sequence[Chat]) -> Call[RankResult]:
        request = pb.RankRequest(
            model=self.model,
            version=self.version,
            conversations=pb.Conversations(conversations=[_conversation(c) for c in chats]),
        )
        return Call("Rank", request, _rank_result)

    def rank(self, chats: Sequence[Chat]) -> Call[list[int]]:
        return Call("Rank", self.rank_conversations(chats).request, lambda r: list(r.rank))

    def rank_candidates(self, prompt: Chat, responses: Sequence[str]) -> Call[RankResult]:
        request = pb.RankRequest(
            model=self.model,
            version=self.version,
            candidates=pb.Candidates(prompt=_messages(prompt), responses=list(responses)),
        )
        return Call("Rank", request, _rank_result)

    def best_of_n(self, prompt: Chat, responses: Sequence[str]) -> Call[BestOfN]:
        return Call(
            "Rank",
            self.rank_candidates(prompt, responses).request,
            lambda r: BestOfN(index=r.order[0], scores=_scores(r)),
        )

    def model_metadata(self, model: str | None = None) -> Call[ModelInfo]:
        request = pb.ModelMetadataRequest(model=model or self.model, version=self.version)
        return Call("GetModelMetadata", request, _model_info)

    def list_models(self) -> Call[list[ModelInfo]]:
        return Call("ListModels", pb.ListModelsRequest(), lambda r: [_model_info(m) for m in r.models])

    def repository_index(self, ready_only: bool = False) -> Call[list[RepositoryModel]]:
        return Call(
            "RepositoryIndex",
            pb.RepositoryIndexRequest(ready=ready_only),
            lambda r: [_repository_model(m) for m in r.models],
        )

    def load_model(self, model: str | None = None) -> Call[ModelInfo]:
        return Call(
            "LoadModel", pb.LoadModelRequest(model=model or self.model), lambda r: _model_info(r.model)
        )

    def unload_model(self, model: str | None = None) -> Call[None]:
        return Call("UnloadModel", pb.UnloadModelRequest(model=model or self.model), lambda r: None)
