"""asyncio client (grpc.aio): the same verbs as RewardClient, as coroutines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio

from reward_api.v1 import reward_pb2_grpc

from ._base import ClientBase, Metadata
from ._calls import Call, chunk_position, merge_responses
from ._errors import error_from_rpc
from ._types import BestOfN, Chat, ModelInfo, RankResult, RepositoryModel, ScoreInputLike, ScoreResult

T = TypeVar("T")


class AsyncRewardClient(ClientBase):
    """`async with AsyncRewardClient("localhost:50051", model="demo") as rm: await rm.get_scores(chats)`."""

    def __init__(self, target: str | Sequence[str], **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        if self._credentials is not None:
            self._channel = grpc.aio.secure_channel(self.target, self._credentials, options=self._options)
        else:
            self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
        self._stub = reward_pb2_grpc.RewardServiceStub(self._channel)

    async def _run(self, call: Call[T], timeout: float | None, metadata: Metadata | None) -> T:
        method = getattr(self._stub, call.method)
        args = self._call_args(timeout, metadata)
        calls = [method(request, **args) for request in self._requests(call)]  # all chunks in flight at once
        responses = []
        try:
            for index, pending in enumerate(calls):
                try:
                    responses.append(await pending)
                except grpc.RpcError as error:
                    raise error_from_rpc(
                        error, chunk_position(index, self._chunk_size) if len(calls) > 1 else ""
                    ) from None
        finally:
            for pending in calls:  # after a failure, stop the chunks still running
                pending.cancel()
        return call.parse(merge_responses(responses))

    async def get_score(
        self, chat: Chat, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> float:
        return await self._run(self._plan.get_score(chat), timeout, metadata)

    async def get_scores(
        self, chats: Sequence[Chat], *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> list[float]:
        return await self._run(self._plan.get_scores(chats), timeout, metadata)

    async def compare(
        self, chat_a: Chat, chat_b: Chat, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> bool:
        return await self._run(self._plan.compare(chat_a, chat_b), timeout, metadata)

    async def rank(
        self, chats: Sequence[Chat], *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> list[int]:
        return await self._run(self._plan.rank(chats), timeout, metadata)

    async def best_of_n(
        self,
        prompt: Chat,
        responses: Sequence[str],
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> BestOfN:
        return await self._run(self._plan.best_of_n(prompt, responses), timeout, metadata)

    async def score(
        self,
        inputs: Sequence[ScoreInputLike],
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> list[ScoreResult]:
        return await self._run(self._plan.score(inputs), timeout, metadata)

    async def rank_conversations(
        self, chats: Sequence[Chat], *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> RankResult:
        return await self._run(self._plan.rank_conversations(chats), timeout, metadata)

    async def rank_candidates(
        self,
        prompt: Chat,
        responses: Sequence[str],
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> RankResult:
        return await self._run(self._plan.rank_candidates(prompt, responses), timeout, metadata)

    async def model_metadata(
        self, model: str | None = None, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> ModelInfo:
        return await self._run(self._plan.model_metadata(model), timeout, metadata)

    async def list_models(
        self, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> list[ModelInfo]:
        return await self._run(self._plan.list_models(), timeout, metadata)

    async def repository_index(
        self, ready_only: bool = False, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> list[RepositoryModel]:
        """Every model in the server's repository with its state (and why it is not ready)."""
        return await self._run(self._plan.repository_index(ready_only), timeout, metadata)

    async def load_model(
        self, model: str | None = None, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> ModelInfo:
        """Load or reload a model (server in --model-control-mode explicit); returns it once ready."""
        return await self._run(self._plan.load_model(model), timeout, metadata)

    async def unload_model(
        self, model: str | None = None, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> None:
        """Unload every version of a model once its requests in flight have finished (explicit mode)."""
        return await self._run(self._plan.unload_model(model), timeout, metadata)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
