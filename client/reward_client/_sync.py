"""Blocking client with the InternLM2-Reward card's verbs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import grpc

from reward_api.v1 import reward_pb2_grpc

from ._base import ClientBase, Metadata
from ._calls import Call, chunk_position, merge_responses
from ._errors import error_from_rpc
from ._types import BestOfN, Chat, ModelInfo, RankResult, RepositoryModel, ScoreInputLike, ScoreResult

T = TypeVar("T")


class RewardClient(ClientBase):
    """`with RewardClient("localhost:50051", model="demo") as rm: rm.get_scores(chats)`.

    `RewardClient(["host-a:50051", "host-b:50051"], ...)` or `RewardClient("dns:///reward:50051", ...)`
    spreads calls over the replicas (round_robin) and retries UNAVAILABLE on another one.

    Every verb takes `timeout=` (seconds; default: the client's) and `metadata=` (extra pairs).
    Failures raise the typed subclass of RewardError for their gRPC status.
    """

    def __init__(self, target: str | Sequence[str], **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        if self._credentials is not None:
            self._channel = grpc.secure_channel(self.target, self._credentials, options=self._options)
        else:
            self._channel = grpc.insecure_channel(self.target, options=self._options)
        self._stub = reward_pb2_grpc.RewardServiceStub(self._channel)

    def _run(self, call: Call[T], timeout: float | None, metadata: Metadata | None) -> T:
        method = getattr(self._stub, call.method)
        args = self._call_args(timeout, metadata)
        requests = self._requests(call)
        if len(requests) == 1:
            try:
                response = method(requests[0], **args)
            except grpc.RpcError as error:
                raise error_from_rpc(error) from None
            return call.parse(response)
        futures = [method.future(request, **args) for request in requests]  # all chunks in flight at once
        responses = []
        try:
            for index, future in enumerate(futures):
                try:
                    responses.append(future.result())
                except grpc.RpcError as error:
                    raise error_from_rpc(error, chunk_position(index, self._chunk_size)) from None
        finally:
            for future in futures:  # after a failure, stop the chunks still running
                future.cancel()
        return call.parse(merge_responses(responses))

    def get_score(
        self, chat: Chat, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> float:
        return self._run(self._plan.get_score(chat), timeout, metadata)

    def get_scores(
        self, chats: Sequence[Chat], *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> list[float]:
        return self._run(self._plan.get_scores(chats), timeout, metadata)

    def compare(
        self, chat_a: Chat, chat_b: Chat, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> bool:
        return self._run(self._plan.compare(chat_a, chat_b), timeout, metadata)

    def rank(
        self, chats: Sequence[Chat], *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> list[int]:
        return self._run(self._plan.rank(chats), timeout, metadata)

    def best_of_n(
        self,
        prompt: Chat,
        responses: Sequence[str],
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> BestOfN:
        return self._run(self._plan.best_of_n(prompt, responses), timeout, metadata)

    def score(
        self,
        inputs: Sequence[ScoreInputLike],
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> list[ScoreResult]:
        return self._run(self._plan.score(inputs), timeout, metadata)

    def rank_conversations(
        self, chats: Sequence[Chat], *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> RankResult:
        return self._run(self._plan.rank_conversations(chats), timeout, metadata)

    def rank_candidates(
        self,
        prompt: Chat,
        responses: Sequence[str],
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> RankResult:
        return self._run(self._plan.rank_candidates(prompt, responses), timeout, metadata)

    def model_metadata(
        self, model: str | None = None, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> ModelInfo:
        return self._run(self._plan.model_metadata(model), timeout, metadata)

    def list_models(
        self, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> list[ModelInfo]:
        return self._run(self._plan.list_models(), timeout, metadata)

    def repository_index(
        self, ready_only: bool = False, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> list[RepositoryModel]:
        """Every model in the server's repository with its state (and why it is not ready)."""
        return self._run(self._plan.repository_index(ready_only), timeout, metadata)

    def load_model(
        self, model: str | None = None, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> ModelInfo:
        """Load or reload a model (server in --model-control-mode explicit); returns it once ready."""
        return self._run(self._plan.load_model(model), timeout, metadata)

    def unload_model(
        self, model: str | None = None, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> None:
        """Unload every version of a model once its requests in flight have finished (explicit mode)."""
        return self._run(self._plan.unload_model(model), timeout, metadata)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
