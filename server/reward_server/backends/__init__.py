"""Backends by the name config.pbtxt gives them (`backend: "pytorch"` or `"onnxruntime"`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from reward_server.backends.base import Backend, is_out_of_memory
from reward_server.backends.plan import ForwardPlan
from reward_server.backends.settings import (
    OnnxRuntimeSettings,
    PyTorchSettings,
    onnxruntime_settings,
    pytorch_settings,
)
from reward_server.checkpoint import Checkpoint
from reward_server.errors import LoadError

if TYPE_CHECKING:
    from reward_server.repository.config import ModelConfig


def _pytorch(checkpoint: Checkpoint, device: str, dtype: str, config: ModelConfig) -> Backend:
    from reward_server.backends.pytorch import PyTorchBackend  # torch is imported only when a model needs it

    return PyTorchBackend(checkpoint, device, dtype, pytorch_settings(config))


def _onnxruntime(checkpoint: Checkpoint, device: str, dtype: str, config: ModelConfig) -> Backend:
    try:
        from reward_server.backends.ort_session import OnnxRuntimeBackend
    except ImportError as e:
        raise LoadError(f"backend 'onnxruntime' needs the onnxruntime package ({e})") from e
    return OnnxRuntimeBackend(checkpoint, device, dtype, onnxruntime_settings(config))


# A factory gets the version's checkpoint, one instance's device, the resolved dtype and the model's
# ModelConfig, and passes the backend its own typed settings block.
BackendFactory = Callable[[Checkpoint, str, str, "ModelConfig"], Backend]

FACTORIES: dict[str, BackendFactory] = {"pytorch": _pytorch, "onnxruntime": _onnxruntime}


def create_backend(
    name: str, checkpoint: Checkpoint, device: str, dtype: str, config: ModelConfig
) -> Backend:
    try:
        factory = FACTORIES[name]
    except KeyError:
        raise LoadError(f"backend {name!r} is not available in this build") from None
    backend = factory(checkpoint, device, dtype, config)
    if not isinstance(backend, Backend):  # a factory registered from outside: hold it to the contract
        raise LoadError(f"backend {name!r} built a {type(backend).__name__}, not a backends.Backend")
    return backend


__all__ = [
    "Backend",
    "ForwardPlan",
    "is_out_of_memory",
    "BackendFactory",
    "FACTORIES",
    "create_backend",
    "OnnxRuntimeSettings",
    "PyTorchSettings",
]
