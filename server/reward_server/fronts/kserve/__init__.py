"""Triton's protocol (KServe v2) over the reward core, protocol-neutral: the fronts (gRPC
`inference.GRPCInferenceService` in grpc_front.py, HTTP/REST) only translate their wire
format to and from what this package takes and gives.

Interface (stable: the gRPC and HTTP fronts are both written against it)
-----------------------------------------------------------------------
tensors.py -- the tensor view
    InferTensor(name: str, datatype: str, shape: tuple[int, ...], data: numpy.ndarray)   frozen
        datatype is a KServe v2 name ("BYTES", "INT64", "FP32", ...); data holds prod(shape) elements
        (BYTES: an object array of bytes); request_inputs checks the size and reshapes.
    tensor_from_raw(name, datatype, shape, raw: bytes) -> InferTensor        raw / binary tensor data
    tensor_from_contents(name, datatype, shape, values: Sequence) -> InferTensor   flat typed values
        (HTTP JSON: flatten `data` first; BYTES values may be str or bytes)
    tensor_raw(tensor) -> bytes                      little-endian raw bytes (BYTES: length-prefixed)
    decode_bytes_raw(buf: bytes, count: int, name: str = "") -> list[bytes]
    encode_bytes_raw(items: Iterable[bytes | str]) -> bytes         4-byte little-endian length prefix
    request_inputs(tensors) -> list[ScoreInput]      validates everything (InvalidArgument names the tensor)
    result_tensors(results, requested: Sequence[str] | None) -> list[InferTensor]
        rewards FP32 [B, 1], num_tokens INT32 [B, 1], num_truncated_tokens INT32 [B, 1]; the requested
        subset in the requested order; an unknown name is InvalidArgument.
    output_names(requested: Sequence[str] | None) -> tuple[str, ...]   result_tensors' names, checked
    output_shape(name, batch) -> tuple[int, ...]; output_raw(name, results) -> bytes
        an output's shape and raw bytes without building its tensor (tensor_raw of it, byte for byte)
    INPUTS / OUTPUTS: name -> (datatype, dims without the batch dimension)
metadata.py -- JSON-shaped dicts in Triton's proto field names, int64 values as numbers
    server_metadata(extra_extensions=()) -> {"name", "version", "extensions"}
        EXTENSIONS are what both fronts implement; a front adds its own (HTTP: "binary_tensor_data").
    model_metadata(ModelMetadata) -> {"name", "versions", "platform", "inputs", "outputs"}
    model_config(ModelConfig, device, forward) -> Triton's ModelConfig (input/output, dynamic_batching,
        version_policy, instance_group with an explicit kind, parameters {"forward": the forward plan})
    model_statistics(Iterable[VersionStatistics]) -> {"model_stats": [...]}
service.py -- KServeCore(core: core.RewardCore, max_chars_per_message: int = 0)   (0: no limit)
    server_live() -> bool; server_ready() -> bool; model_ready(model, version="") -> bool
    server_metadata(extra_extensions=()) -> dict
    model_metadata(model, version="") -> dict; model_config(model, version="") -> dict
    model_statistics(model="", version="") -> dict            (all models when model is "")
    async infer(model, version, tensors, requested_outputs: Sequence[str] | None, deadline: float | None)
        -> (model_name: str, version: str, outputs: list[InferTensor])    deadline: time.monotonic()
    async infer_results(same arguments) -> InferResults(model, version, results, outputs: output names)
        infer's checks and scores, the output tensors left unbuilt (the gRPC front packs raw outputs)
    repository_index(ready_only=False) -> list[{"name", "version", "state", "reason"}]
    async load_model(model, parameters=None); async unload_model(model, parameters=None)
        (non-empty parameters: InvalidArgument; outside explicit mode: FailedPrecondition)

Errors are the project's RewardServerError classes (errors.py), each carrying its gRPC status; a front
maps them as it maps every other error (HTTP: the status Triton uses for that gRPC code).
"""

from reward_server.fronts.kserve.metadata import (
    EXTENSIONS,
    VersionStatistics,
    model_config,
    model_metadata,
    model_statistics,
    server_metadata,
)
from reward_server.fronts.kserve.service import InferResults, KServeCore
from reward_server.fronts.kserve.tensors import (
    INPUTS,
    OUTPUTS,
    InferTensor,
    decode_bytes_raw,
    encode_bytes_raw,
    output_names,
    output_raw,
    output_shape,
    request_inputs,
    result_tensors,
    tensor_from_contents,
    tensor_from_raw,
    tensor_raw,
)

__all__ = [
    "EXTENSIONS",
    "INPUTS",
    "OUTPUTS",
    "InferResults",
    "InferTensor",
    "KServeCore",
    "VersionStatistics",
    "decode_bytes_raw",
    "encode_bytes_raw",
    "model_config",
    "model_metadata",
    "model_statistics",
    "output_names",
    "output_raw",
    "output_shape",
    "request_inputs",
    "result_tensors",
    "server_metadata",
    "tensor_from_contents",
    "tensor_from_raw",
    "tensor_raw",
]
