"""One TorchScript trace per module structure, reused by every later load of that structure.

Why: torch registers the types and methods of every trace in its global compilation unit and never
drops them (no API removes them), so each load that traced kept its graphs and their executors for
the life of the process: the demo model grew ~16 MiB per unload + load. Here a structure is traced
once; a later load builds a ScriptModule of the traced types around its own weights (what torch.jit
does for a module type whose methods are already compiled), which registers nothing new. The caller
checks the result against eager exactly as it checks a fresh trace, and `forget`s a structure whose
reuse does not match.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

_TYPES: dict[str, Any] = {}  # structure key -> the concrete TorchScript type of its trace
_LOCK = threading.Lock()


def structure_key(module: nn.Module, example: Sequence[torch.Tensor], extra: str) -> str:
    """What a trace depends on besides the weights' values: the module tree (its repr names each layer's
    sizes and settings), each submodule's class and plain settings (a trace bakes them in as
    constants), each parameter's and buffer's name, shape, dtype and device, the example's shapes, and
    `extra` (the model's config)."""
    settings = [
        (name, type(m).__module__, type(m).__qualname__, _plain_settings(m))
        for name, m in module.named_modules()
    ]
    tensors = [
        (name, tuple(t.shape), str(t.dtype), str(t.device))
        for name, t in itertools.chain(module.named_parameters(), module.named_buffers())
    ]
    shapes = [(tuple(t.shape), str(t.dtype)) for t in example]
    return repr((str(module), settings, tensors, shapes, extra))


def _plain_settings(module: nn.Module) -> list[tuple[str, object]]:
    return sorted(
        (k, v)
        for k, v in vars(module).items()
        if not k.startswith("_") and (v is None or isinstance(v, (bool, int, float, str)))
    )


def trace(module: nn.Module, example: tuple[torch.Tensor, ...], key: str) -> tuple[Any, bool]:
    """(`module` as a ScriptModule running the traced graph of its structure, whether that graph was
    reused); a structure seen for the first time is traced now."""
    with _LOCK:
        known = _TYPES.get(key)
    if known is not None:
        try:
            return torch.jit._recursive.wrap_cpp_module(_bound(module, known)), True
        except Exception as e:  # a torch that builds modules differently: trace afresh (and leak, as before)
            log.warning("reusing a TorchScript trace failed, tracing again: %s: %s", type(e).__name__, e)
    traced = torch.jit.trace(module, example, check_trace=False)
    with _LOCK:
        _TYPES[key] = traced._actual_script_module._concrete_type
    return traced, False


def _bound(module: nn.Module, concrete_type: Any) -> Any:
    """A C++ ScriptModule of the traced type with `module`'s own tensors (and its submodules', each of
    its traced type) in its attribute slots: the traced methods run on them."""
    bound = torch._C._create_module_with_type(concrete_type.jit_type)
    for name in concrete_type.get_attributes():
        bound.setattr(name, getattr(module, name))
    for name, sub_type in concrete_type.get_modules():
        bound.setattr(name, _bound(getattr(module, name), sub_type))
    return bound


def forget(key: str) -> None:
    """Trace this structure afresh next time (its reused trace did not match eager)."""
    with _LOCK:
        _TYPES.pop(key, None)
