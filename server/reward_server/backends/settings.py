"""Typed settings of each backend: the `pytorch { }` and `onnxruntime { }` blocks of config.pbtxt, as
the proto nests them. The defaults here are the only ones: the config parser falls back to them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reward_server.repository.config import ModelConfig

# onnxruntime's GraphOptimizationLevel by the names config.pbtxt uses.
ORT_OPTIMIZATION_LEVELS = ("all", "extended", "basic", "disabled")


@dataclass(frozen=True)
class PyTorchSettings:
    """`pytorch { }`: how the PyTorch backend runs a model."""

    torchscript: bool = True  # serve a TorchScript trace of the forward (checked against eager at load)
    intra_op_threads: int = 0  # CPU instances; 0: torch's default (or a share of the CPUs, see loader)
    last_position_only: bool = True  # the last decoder layer only where the head reads
    packed_batches: bool = True  # inputs of different lengths share rows (packing.py)


@dataclass(frozen=True)
class OnnxRuntimeSettings:
    """`onnxruntime { }`: the session options of the onnxruntime backend."""

    graph_optimization_level: str = "all"  # one of ORT_OPTIMIZATION_LEVELS
    intra_op_threads: int = 0  # 0: onnxruntime's default (one per physical core)


PYTORCH_DEFAULTS = PyTorchSettings()
ONNXRUNTIME_DEFAULTS = OnnxRuntimeSettings()


def pytorch_settings(config: ModelConfig) -> PyTorchSettings:
    """The pytorch block of a parsed (and validated) model config."""
    return PyTorchSettings(
        torchscript=config.torchscript,
        intra_op_threads=config.torch_intra_op_threads,
        last_position_only=config.last_position_only,
        packed_batches=config.packed_batches,
    )


def onnxruntime_settings(config: ModelConfig) -> OnnxRuntimeSettings:
    """The onnxruntime block of a parsed (and validated) model config."""
    return OnnxRuntimeSettings(
        graph_optimization_level=config.ort_graph_optimization_level,
        intra_op_threads=config.ort_intra_op_threads,
    )
