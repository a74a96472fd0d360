"""RewardService servicer: decode -> core -> encode, nothing else. Score and Rank get their requests
decoded by the guard (with `decoders()`: on a decode thread when they are large)."""

from __future__ import annotations

from functools import partial

import grpc

from reward_api.v1 import reward_pb2
from reward_api.v1 import reward_pb2 as pb
from reward_server.core import RewardCore, deadline_from
from reward_server.datatypes import RankRequest, ScoreRequest
from reward_server.fronts.grpc import codec
from reward_server.fronts.grpc.guard import Decoder

SERVICE = reward_pb2.DESCRIPTOR.services_by_name["RewardService"]


class RewardServicer:
    def __init__(self, core: RewardCore, max_items: int) -> None:
        self._core = core
        self._max_items = max_items

    def decoders(self) -> dict[str, Decoder]:
        return {
            "Score": partial(codec.decode_score, max_items=self._max_items),
            "Rank": partial(codec.decode_rank, max_items=self._max_items),
        }

    async def Score(self, request: ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        response = await self._core.score(request, deadline_from(context.time_remaining()))
        return codec.encode_score(response)

    async def Rank(self, request: RankRequest, context: grpc.aio.ServicerContext) -> pb.RankResponse:
        response = await self._core.rank(request, deadline_from(context.time_remaining()))
        return codec.encode_rank(response)

    async def GetModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadata:
        return codec.encode_metadata(self._core.model_metadata(request.model, request.version))

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[codec.encode_metadata(m) for m in self._core.list_models()])

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        return codec.encode_index(self._core.repository_index(request.ready))

    async def LoadModel(
        self, request: pb.LoadModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.LoadModelResponse:
        return pb.LoadModelResponse(model=codec.encode_metadata(await self._core.load_model(request.model)))

    async def UnloadModel(
        self, request: pb.UnloadModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnloadModelResponse:
        await self._core.unload_model(request.model)
        return pb.UnloadModelResponse()
