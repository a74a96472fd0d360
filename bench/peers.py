"""The systems the server is compared with, behind the same gRPC API on loopback.

- NaivePeer: what the model cards do: per request, tokenize, pad, one forward, no batching across
  requests. It reuses the server's servicer, codec, encoder and backend (the same ids, the same model),
  and replaces only the core: each request is encoded and run alone, one at a time, on the model
  instance's thread (a card's model object behind a web handler; the thread the server's own forwards
  use, so that no second OpenMP team slows either: see reward_server/runtime/openmp.py), never on the
  event loop.
- BareServicer: answers Score with zeros without a model: the ceiling of grpc.aio itself.
"""

from __future__ import annotations

import asyncio
from functools import partial

import grpc
import grpc.aio

from bench.instance_thread import run_alone
from reward_api.v1 import reward_pb2 as pb
from reward_api.v1 import reward_pb2_grpc
from reward_server.core import rank_of
from reward_server.datatypes import (
    Candidates,
    ModelMetadata,
    RankRequest,
    RankResponse,
    ScoreRequest,
    ScoreResponse,
    ScoreResult,
)
from reward_server.fronts.grpc.servicer import RewardServicer
from reward_server.repository import ModelRepository
from reward_server.runtime.encoding import candidate_conversations


class NaiveCore:
    """RewardCore's interface with no batcher: each request is tokenized, padded and run on its own."""

    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository

    @staticmethod
    def _forward(loaded, inputs) -> tuple[str, int, tuple[ScoreResult, ...]]:
        encoded = loaded.encoder.encode(inputs)
        scores = loaded.instances[0].backend.score_batch([e.ids for e in encoded])
        results = tuple(ScoreResult(s, len(e.ids), e.num_truncated) for s, e in zip(scores, encoded))
        return loaded.name, loaded.version, results

    async def _alone(self, model: str, version: str, inputs) -> tuple[str, int, tuple[ScoreResult, ...]]:
        loaded = self.repository.resolve(model, version)
        return await asyncio.wrap_future(
            run_alone(loaded.instances[0], partial(self._forward, loaded, inputs))
        )

    async def score(self, request: ScoreRequest, deadline: float | None) -> ScoreResponse:
        return ScoreResponse(*await self._alone(request.model, request.version, request.inputs))

    async def rank(self, request: RankRequest, deadline: float | None) -> RankResponse:
        items = request.items
        inputs = candidate_conversations(items) if isinstance(items, Candidates) else items
        name, version, results = await self._alone(request.model, request.version, inputs)
        rank, order = rank_of([r.score for r in results])
        return RankResponse(name, version, results, rank, order)

    def model_metadata(self, model: str, version: str) -> ModelMetadata:
        return self.repository.metadata(model)

    def list_models(self) -> list[ModelMetadata]:
        return self.repository.list_models()

    def close(self) -> None:
        pass  # nothing of its own: it runs on the server's instances


class BareServicer(reward_pb2_grpc.RewardServiceServicer):
    """Score without a model: one zero per input."""

    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        return pb.ScoreResponse(
            model=request.model, version="1", results=[pb.ScoreResult(score=0.0) for _ in request.inputs]
        )


async def start_grpc(servicer: reward_pb2_grpc.RewardServiceServicer) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    reward_pb2_grpc.add_RewardServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


class _Decoding(reward_pb2_grpc.RewardServiceServicer):
    """The naive peer's servicer: our codec and servicer, without the guard (which the server's
    registration supplies), so that the peer differs from the server only in batching."""

    def __init__(self, servicer: RewardServicer) -> None:
        self._servicer = servicer
        self._decoders = servicer.decoders()

    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        return await self._servicer.Score(self._decoders["Score"](request), context)

    async def Rank(self, request: pb.RankRequest, context: grpc.aio.ServicerContext) -> pb.RankResponse:
        return await self._servicer.Rank(self._decoders["Rank"](request), context)


async def start_naive_peer(repository: ModelRepository) -> tuple[grpc.aio.Server, int, NaiveCore]:
    core = NaiveCore(repository)
    server, port = await start_grpc(_Decoding(RewardServicer(core, max_items=4096)))  # type: ignore[arg-type]
    return server, port, core
