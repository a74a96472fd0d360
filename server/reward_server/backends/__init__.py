"""Backends by the name config.pbtxt gives them (`backend: "pytorch"`)."""

from __future__ import annotations

from collections.abc import Callable

from ..checkpoint import Checkpoint
from ..errors import LoadError
from .base import Backend


def _pytorch(checkpoint: Checkpoint, device: str, dtype: str) -> Backend:
    from .torch_eager import TorchEagerBackend  # torch is imported only when a model needs it

    return TorchEagerBackend(checkpoint, device, dtype)


BackendFactory = Callable[[Checkpoint, str, str], Backend]

FACTORIES: dict[str, BackendFactory] = {"pytorch": _pytorch}


def create_backend(name: str, checkpoint: Checkpoint, device: str, dtype: str) -> Backend:
    try:
        factory = FACTORIES[name]
    except KeyError:
        raise LoadError(f"backend {name!r} is not available in this build") from None
    return factory(checkpoint, device, dtype)


__all__ = ["Backend", "BackendFactory", "FACTORIES", "create_backend"]
