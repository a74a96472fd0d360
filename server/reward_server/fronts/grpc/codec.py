"""Protobuf <-> frozen dataclasses, with the structural checks of a request (INVALID_ARGUMENT).
Protobuf types stop here; the core never sees them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from reward_api.v1 import reward_pb2 as pb
from reward_server.datatypes import (
    Candidates,
    Conversation,
    Message,
    ModelMetadata,
    RankRequest,
    RankResponse,
    RepositoryModel,
    ScoreInput,
    ScoreRequest,
    ScoreResponse,
    ScoreResult,
    Text,
    TokenIds,
    VersionStatus,
)
from reward_server.errors import InvalidArgument

ROLES = ("system", "user", "assistant")
# Roles whose message must say something; an assistant turn may be empty (a policy can answer nothing).
NON_EMPTY_ROLES = ("system", "user")


def _messages(where: str, messages: Iterable[pb.Message]) -> tuple[Message, ...]:
    out = []
    for index, m in enumerate(messages):
        if m.role not in ROLES:
            raise InvalidArgument(
                f"{where} message {index}: unknown role {m.role!r} (expected one of {', '.join(ROLES)})"
            )
        if m.role in NON_EMPTY_ROLES and not m.content:
            raise InvalidArgument(f"{where} message {index}: empty content in a {m.role} message")
        out.append(Message(m.role, m.content))
    if not out:
        raise InvalidArgument(f"{where}: the conversation has no messages")
    return tuple(out)


def _model(request: pb.ScoreRequest | pb.RankRequest) -> str:
    if not request.model:
        raise InvalidArgument("the request names no model")
    return request.model


def _score_input(index: int, item: pb.ScoreInput) -> ScoreInput:
    kind = item.WhichOneof("kind")
    if kind == "conversation":
        return Conversation(_messages(f"input {index}", item.conversation.messages))
    if kind == "text":
        if not item.text:
            raise InvalidArgument(f"input {index}: empty text")
        return Text(item.text)
    if kind == "token_ids":
        return TokenIds(tuple(item.token_ids.ids))
    raise InvalidArgument(f"input {index}: set one of conversation, text or token_ids")


def _count(items: int, max_items: int | None) -> None:
    """The item limit, checked on the protobuf's count before anything is built: a request of 300,000
    inputs is refused at the cost of one len()."""
    if max_items is not None and items > max_items:
        raise InvalidArgument(f"the request has {items} inputs; at most {max_items} are allowed")


def decode_score(request: pb.ScoreRequest, max_items: int | None = None) -> ScoreRequest:
    model = _model(request)
    _count(len(request.inputs), max_items)
    return ScoreRequest(
        model, request.version, tuple(_score_input(i, x) for i, x in enumerate(request.inputs))
    )


def decode_rank(request: pb.RankRequest, max_items: int | None = None) -> RankRequest:
    model = _model(request)
    kind = request.WhichOneof("kind")
    if kind == "candidates":
        _count(len(request.candidates.responses), max_items)
        prompt = _messages("prompt", request.candidates.prompt)
        items: Candidates | tuple[Conversation, ...] = Candidates(prompt, tuple(request.candidates.responses))
    elif kind == "conversations":
        _count(len(request.conversations.conversations), max_items)
        items = tuple(
            Conversation(_messages(f"conversation {i}", c.messages))
            for i, c in enumerate(request.conversations.conversations)
        )
    else:
        raise InvalidArgument("set one of candidates or conversations")
    return RankRequest(model, request.version, items)


def _results(results: Iterable[ScoreResult]) -> list[pb.ScoreResult]:
    return [
        pb.ScoreResult(score=r.score, num_tokens=r.num_tokens, num_truncated_tokens=r.num_truncated_tokens)
        for r in results
    ]


def encode_score(response: ScoreResponse) -> pb.ScoreResponse:
    return pb.ScoreResponse(
        model=response.model, version=str(response.version), results=_results(response.results)
    )


def encode_rank(response: RankResponse) -> pb.RankResponse:
    return pb.RankResponse(
        model=response.model,
        version=str(response.version),
        results=_results(response.results),
        rank=response.rank,
        order=response.order,
    )


def _state(name: str) -> pb.ModelState:
    return pb.ModelState.Value(f"MODEL_STATE_{name}")


def _versions(versions: Sequence[VersionStatus]) -> list[pb.VersionStatus]:
    return [
        pb.VersionStatus(
            version=str(v.version) if v.version else "",
            state=_state(v.state),
            reason=v.reason,
            forward=v.forward,
        )
        for v in versions
    ]


def encode_index(models: Sequence[RepositoryModel]) -> pb.RepositoryIndexResponse:
    return pb.RepositoryIndexResponse(
        models=[
            pb.RepositoryModel(
                name=m.name, versions=_versions(m.versions), state=_state(m.state), reason=m.reason
            )
            for m in models
        ]
    )


def encode_metadata(m: ModelMetadata) -> pb.ModelMetadata:
    return pb.ModelMetadata(
        name=m.name,
        versions=_versions(m.versions),
        backend=m.backend,
        max_sequence_length=m.max_sequence_length,
        prompt_format=m.prompt_format,
        max_batch_size=m.max_batch_size,
        dtype=m.dtype,
        device=m.device,
    )
