"""The backend protocol: one loaded copy of a model on one device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Backend(Protocol):
    device: str
    dtype: str
    head_bias: bool  # whether the reward head has a bias

    def score_batch(self, batch: Sequence[Sequence[int]]) -> list[float]:
        """Exactly one float32 score per sequence, in order. Runs on the instance's own thread."""

    # Optional: backends that can reuse a prefix's KV cache (PyTorch) also define
    # score_shared_prefix(prefix, suffixes) -> one score per prefix + suffix; the others take the plain path.
    # Backends that pack a batch's inputs into fewer rows than padding (PyTorch) define
    # computed_tokens(lengths) -> tokens computed, padding included; the others compute rows x longest.

    def close(self) -> None:
        """Free the model's memory."""


# What PyTorch (torch.OutOfMemoryError), onnxruntime (a RuntimeException whose message says it could not
# allocate) and Python raise when a batch does not fit in memory.
_OUT_OF_MEMORY_MESSAGES = ("out of memory", "failed to allocate memory", "bad_alloc")


def is_out_of_memory(error: BaseException) -> bool:
    """True when `error` says the device ran out of memory: the batch may fit when split."""
    if isinstance(error, MemoryError):
        return True
    if type(error).__name__ == "OutOfMemoryError":  # torch's, without importing torch here
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and any(m in message for m in _OUT_OF_MEMORY_MESSAGES)
