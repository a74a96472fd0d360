"""`inference.GRPCInferenceService` (KServe v2 gRPC, as Triton serves it) over KServeCore: decode the
protobuf into InferTensor / arguments, call the core, encode. Registered beside RewardService on the
same port and behind the same RequestGuard.

The messages are tritonclient's generated modules (`tritonclient.grpc.service_pb2*`, installed without
its `grpc` extra, which would pin protobuf < 7): their gencode loads under our protobuf, and being the
very modules Triton's Python clients (tritonclient, PyTriton) import, a process can hold the server and
those clients together. A second definition of package `inference` (our own .proto) could not be
loaded beside them: protobuf's descriptor pool refuses a symbol defined twice.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from reward_server.core import deadline_from
from reward_server.errors import InvalidArgument, RewardServerError
from reward_server.fronts.kserve.service import InferResults, KServeCore
from reward_server.fronts.kserve.tensors import (
    OUTPUTS,
    InferTensor,
    output_raw,
    output_shape,
    tensor_from_contents,
    tensor_from_raw,
)

if TYPE_CHECKING:  # server.py imports this module to register the service
    from reward_server.fronts.grpc.guard import RequestGuard


SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
SERVICE_NAME = SERVICE.full_name  # inference.GRPCInferenceService

# Requests of one ModelStreamInfer stream computed at once (their responses still go out in order).
STREAM_WINDOW = 64

# KServe v2 datatype -> the InferTensorContents field its typed values travel in.
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


_OUTPUT = pb.ModelInferResponse.InferOutputTensor


class Unimplemented(RewardServerError):
    code = grpc.StatusCode.UNIMPLEMENTED


def decode_inputs(request: pb.ModelInferRequest) -> list[InferTensor]:
    """The request's input tensors, from raw_input_contents (one entry per input) or typed contents."""
    inputs, raw = request.inputs, request.raw_input_contents
    if raw and len(raw) != len(inputs):
        raise InvalidArgument(f"raw_input_contents has {len(raw)} entries for {len(inputs)} inputs")
    tensors = []
    for index in range(len(inputs)):  # indexing costs less than iterating protobuf repeated fields
        t = inputs[index]
        if raw:
            tensors.append(tensor_from_raw(t.name, t.datatype, tuple(t.shape), raw[index]))
            continue
        field = _CONTENTS_FIELD.get(t.datatype)
        values = getattr(t.contents, field) if field else []
        tensors.append(tensor_from_contents(t.name, t.datatype, tuple(t.shape), values))
    return tensors


# Distinct (outputs asked, batch size) pairs whose serialized output descriptions are kept.
OUTPUT_TEMPLATES = 256


@functools.lru_cache(maxsize=OUTPUT_TEMPLATES)
def _outputs_template(names: tuple[str, ...], batch: int) -> bytes:
    """A response holding only the output descriptions (name, datatype, shape), serialized: the same for
    every request of `batch` rows asking for `names`, so it is built once instead of per request."""
    return pb.ModelInferResponse(
        outputs=[_OUTPUT(name=n, datatype=OUTPUTS[n][0], shape=output_shape(n, batch)) for n in names]
    ).SerializeToString()


def encode_response(done: InferResults, request_id: str) -> pb.ModelInferResponse:
    """Outputs always in raw_output_contents: tritonclient reads numeric outputs only from there."""
    response = pb.ModelInferResponse.FromString(_outputs_template(done.outputs, len(done.results)))
    response.model_name = done.model
    response.model_version = done.version
    response.id = request_id
    response.raw_output_contents.extend([output_raw(n, done.results) for n in done.outputs])
    return response


class KServeServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, core: KServeCore) -> None:
        self._core = core

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._core.server_live())

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._core.server_ready())

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._core.model_ready(request.name, request.version))

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return json_format.ParseDict(self._core.server_metadata(), pb.ServerMetadataResponse())

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        return json_format.ParseDict(
            self._core.model_metadata(request.name, request.version), pb.ModelMetadataResponse()
        )

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelConfigResponse:
        config = json_format.ParseDict(
            self._core.model_config(request.name, request.version), mc.ModelConfig()
        )
        return pb.ModelConfigResponse(config=config)

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        stats = self._core.model_statistics(request.name, request.version)
        return json_format.ParseDict(stats, pb.ModelStatisticsResponse())

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        done = await self._core.infer_results(
            request.model_name,
            request.model_version,
            decode_inputs(request),
            [o.name for o in request.outputs],
            deadline_from(context.time_remaining()),
        )
        return encode_response(done, request.id)

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        return json_format.ParseDict(
            {"models": self._core.repository_index(request.ready)}, pb.RepositoryIndexResponse()
        )

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        await self._core.load_model(request.model_name, dict(request.parameters))
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        # Triton's unload_dependents concerns ensembles; a reward model has none, so false and true agree.
        parameters = {k: v for k, v in request.parameters.items() if k != "unload_dependents"}
        await self._core.unload_model(request.model_name, parameters)
        return pb.RepositoryModelUnloadResponse()

    async def _unimplemented(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise Unimplemented(
            "shared memory, tracing and log settings are not implemented by this server: "
            "send tensors in the request (raw_input_contents or contents)"
        )

    SystemSharedMemoryStatus = SystemSharedMemoryRegister = SystemSharedMemoryUnregister = _unimplemented
    CudaSharedMemoryStatus = CudaSharedMemoryRegister = CudaSharedMemoryUnregister = _unimplemented
    TraceSetting = LogSettings = _unimplemented


class _StreamInfer:
    """ModelStreamInfer: the guard admits the stream (token, limits) and parses each of its requests; up to
    STREAM_WINDOW are computed at once and the responses go out in request order; a failed request answers
    error_message and the stream goes on. A request the guard refuses (malformed bytes, a bound) is answered
    the same way and ends the stream: its reader cannot go past it."""

    def __init__(self, servicer: KServeServicer) -> None:
        self._servicer = servicer

    async def _one(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelStreamInferResponse:
        try:
            response = await self._servicer.ModelInfer(request, context)
        except RewardServerError as e:
            return _failed(e)
        return pb.ModelStreamInferResponse(infer_response=response)

    async def stream(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        window: asyncio.Queue[asyncio.Future | None] = asyncio.Queue(STREAM_WINDOW)

        async def read() -> None:
            try:
                async for request in requests:
                    await window.put(asyncio.ensure_future(self._one(request, context)))
            except RewardServerError as e:
                refused: asyncio.Future = asyncio.get_running_loop().create_future()
                refused.set_result(_failed(e))
                await window.put(refused)
            finally:
                await window.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (task := await window.get()) is not None:
                yield await task
        finally:
            reader.cancel()
            while not window.empty():
                left = window.get_nowait()
                if left is not None:
                    left.cancel()


def _failed(error: RewardServerError) -> pb.ModelStreamInferResponse:
    from reward_server.fronts.grpc.guard import (
        bounded,
    )  # here: server.py imports this module to register the service

    return pb.ModelStreamInferResponse(error_message=f"{error.code.name}: {bounded(str(error))}")


def add_kserve_service(server: grpc.aio.Server, core: KServeCore, guard: RequestGuard) -> None:
    """Register GRPCInferenceService on `server`, every method behind `guard`."""
    servicer = KServeServicer(core)
    methods: dict[str, Any] = {m.name: getattr(servicer, m.name) for m in SERVICE.methods}
    methods["ModelStreamInfer"] = _StreamInfer(servicer).stream  # grpc.aio wants an async generator function
    guard.add_service(server, SERVICE, SimpleNamespace(**methods))
