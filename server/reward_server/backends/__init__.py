"""Backends by the name config.pbtxt gives them (`backend: "pytorch"` or `"onnxruntime"`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..checkpoint import Checkpoint
from ..errors import LoadError
from .base import Backend, is_out_of_memory


def _pytorch(checkpoint: Checkpoint, device: str, dtype: str, config: Any) -> Backend:
    from .torch_eager import TorchEagerBackend  # torch is imported only when a model needs it

    return TorchEagerBackend(checkpoint, device, dtype, config)


def _onnxruntime(checkpoint: Checkpoint, device: str, dtype: str, config: Any) -> Backend:
    try:
        from .ort_session import OnnxRuntimeBackend
    except ImportError as e:
        raise LoadError(f"backend 'onnxruntime' needs the onnxruntime package ({e})") from e
    return OnnxRuntimeBackend(checkpoint, device, dtype, config)


# A factory gets the version's checkpoint, one instance's device, the resolved dtype and the
# model's ModelConfig (for backend settings).
BackendFactory = Callable[[Checkpoint, str, str, Any], Backend]

FACTORIES: dict[str, BackendFactory] = {"pytorch": _pytorch, "onnxruntime": _onnxruntime}


def create_backend(name: str, checkpoint: Checkpoint, device: str, dtype: str, config: Any) -> Backend:
    try:
        factory = FACTORIES[name]
    except KeyError:
        raise LoadError(f"backend {name!r} is not available in this build") from None
    return factory(checkpoint, device, dtype, config)


__all__ = ["Backend", "is_out_of_memory", "BackendFactory", "FACTORIES", "create_backend"]
