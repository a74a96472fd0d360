"""Server metadata, model metadata, model config and statistics as KServe v2 / Triton JSON.

The dicts use the field names of Triton's protos (the names its REST API and
`json_format.MessageToDict(..., preserving_proto_field_name=True)` use) with int64 values as numbers, as
Triton's REST API writes them; `json_format.ParseDict` turns each into its gRPC message.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from reward_server import __version__
from reward_server.datatypes import ModelMetadata
from reward_server.fronts.kserve.tensors import INPUTS, OUTPUTS
from reward_server.repository import ModelConfig

SERVER_NAME = "reward-server"
# The protocol extensions both fronts implement in full (Triton's names). Shared memory, tracing,
# logging, classification, sequences and schedule policies are not offered.
EXTENSIONS = ("model_configuration", "model_repository", "statistics")

# KServe v2 datatype -> Triton's ModelConfig DataType name.
CONFIG_TYPES = {"BYTES": "TYPE_STRING", "INT64": "TYPE_INT64", "INT32": "TYPE_INT32", "FP32": "TYPE_FP32"}


def server_metadata(extra_extensions: Sequence[str] = ()) -> dict:
    """`extra_extensions`: those only one front implements (HTTP: binary_tensor_data)."""
    return {"name": SERVER_NAME, "version": __version__, "extensions": [*EXTENSIONS, *extra_extensions]}


def _tensor_metadata(specs: dict[str, tuple[str, tuple[int, ...]]]) -> list[dict]:
    return [
        {"name": name, "datatype": datatype, "shape": [-1, *dims]} for name, (datatype, dims) in specs.items()
    ]


def model_metadata(meta: ModelMetadata) -> dict:
    """ModelMetadataResponse: the model's ready versions and the tensor view (shapes with the batch dim)."""
    return {
        "name": meta.name,
        "versions": [str(v.version) for v in meta.versions if v.state == "READY"],
        "platform": meta.backend,
        "inputs": _tensor_metadata(INPUTS),
        "outputs": _tensor_metadata(OUTPUTS),
    }


def _version_policy(config: ModelConfig) -> dict:
    policy = config.version_policy
    if policy.kind == "all":
        return {"all": {}}
    if policy.kind == "specific":
        return {"specific": {"versions": list(policy.versions)}}
    return {"latest": {"num_versions": policy.num_versions}}


def _instance_groups(config: ModelConfig, device: str) -> list[dict]:
    """Each group with an explicit kind: KIND_AUTO is proto3's default, which JSON conversion drops
    (and PyTriton's config parser then fails), so an auto group shows where it was placed."""
    on_gpu = "cuda" in device
    groups = []
    for index, group in enumerate(config.instance_groups):
        kind = group.kind if group.kind != "auto" else ("gpu" if on_gpu else "cpu")
        entry: dict = {"name": f"{config.name}_{index}", "kind": f"KIND_{kind.upper()}", "count": group.count}
        if kind == "gpu":
            entry["gpus"] = list(group.gpus or (0,))
        groups.append(entry)
    return groups


def model_config(config: ModelConfig, device: str, forward: str) -> dict:
    """Our config.pbtxt as Triton's ModelConfig; `device`: where the served version runs ("cpu", "cuda:0");
    `forward`: the forward plan serving it, as the string parameter `forward` (GetModelMetadata's)."""
    batching: dict = {
        "max_queue_delay_microseconds": round(config.max_queue_delay_s * 1e6),
        "default_queue_policy": {"max_queue_size": config.max_queue_size},
    }
    if config.preferred_batch_sizes:
        batching["preferred_batch_size"] = list(config.preferred_batch_sizes)
    return {
        "name": config.name,
        "backend": config.backend,
        "version_policy": _version_policy(config),
        "max_batch_size": config.max_batch_size,
        "input": [
            {"name": name, "data_type": CONFIG_TYPES[datatype], "dims": list(dims), "optional": True}
            for name, (datatype, dims) in INPUTS.items()
        ],
        "output": [
            {"name": name, "data_type": CONFIG_TYPES[datatype], "dims": list(dims)}
            for name, (datatype, dims) in OUTPUTS.items()
        ],
        "dynamic_batching": batching,
        "instance_group": _instance_groups(config, device),
        "default_model_filename": config.default_model_filename,
        "parameters": {"forward": {"string_value": forward}},
    }


@dataclass(frozen=True)
class VersionStatistics:
    """The counters of one model version since it was loaded (summed over its instances)."""

    name: str
    version: int
    last_inference_ms: int  # wall clock, ms since the epoch; 0 = none yet
    inference_count: int  # inputs computed
    execution_count: int  # backend calls (batches)
    success_count: int
    success_ns: int
    fail_count: int
    fail_ns: int
    queue_ns: int
    compute_infer_ns: int
    batches: tuple[tuple[int, int, int], ...]  # (batch size, executions, compute ns), by size


def _duration(count: int, ns: int) -> dict:
    return {"count": count, "ns": ns}


def model_statistics(versions: Iterable[VersionStatistics]) -> dict:
    """ModelStatisticsResponse. Each computed input counts once in success, queue and the three compute
    durations (so their counts are equal); the backend runs input preparation, the forward and the read
    of the scores as one call, whose time is all in compute_infer."""
    stats = []
    for v in versions:
        stats.append(
            {
                "name": v.name,
                "version": str(v.version),
                "last_inference": v.last_inference_ms,
                "inference_count": v.inference_count,
                "execution_count": v.execution_count,
                "inference_stats": {
                    "success": _duration(v.success_count, v.success_ns),
                    "fail": _duration(v.fail_count, v.fail_ns),
                    "queue": _duration(v.success_count, v.queue_ns),
                    "compute_input": _duration(v.success_count, 0),
                    "compute_infer": _duration(v.success_count, v.compute_infer_ns),
                    "compute_output": _duration(v.success_count, 0),
                    "cache_hit": _duration(0, 0),
                    "cache_miss": _duration(0, 0),
                },
                "batch_stats": [
                    {
                        "batch_size": size,
                        "compute_input": _duration(executions, 0),
                        "compute_infer": _duration(executions, ns),
                        "compute_output": _duration(executions, 0),
                    }
                    for size, executions, ns in v.batches
                ],
            }
        )
    return {"model_stats": stats}
