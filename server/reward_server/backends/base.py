"""The backend contract: one loaded copy of a model on one device.

A backend implements `score_batch` and `close`, and declares its capabilities as values the server reads
(never probes for): `supports_shared_prompt` (score_shared_prompt reuses a prompt's KV cache, for Rank
requests whose candidates share a prompt) and `packs_batches` (score_batch packs inputs of different
lengths into fewer rows than padding; `computed_tokens` counts what it computes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from reward_server.backends.plan import ForwardPlan


class Backend(ABC):
    """One loaded copy of a model on one device, called on its instance's own thread."""

    device: str  # "cpu" or "cuda:N"
    dtype: str  # "float32", "float16" or "bfloat16"
    head_bias: bool  # whether the reward head has a bias

    supports_shared_prompt: bool = False
    """Whether score_shared_prompt computes a shared prompt once; without it, Rank takes the plain path."""

    packs_batches: bool = False
    """Whether score_batch packs inputs of different lengths into shared rows (see computed_tokens)."""

    @property
    def forward_plan(self) -> ForwardPlan:
        """Return which forward pass serves this model (reported in metadata, logs and metrics).

        The default describes a backend by its class name and its declared packing; built-in backends
        describe their own plan.
        """
        return ForwardPlan("packed" if self.packs_batches else "padded", type(self).__name__)

    @abstractmethod
    def score_batch(self, batch: Sequence[Sequence[int]]) -> list[float]:
        """Return exactly one float32 score per sequence, in order."""

    def computed_tokens(self, lengths: Sequence[int]) -> int:
        """Return the tokens a batch of these lengths computes, padding included.

        The default is rows x longest (a padded batch); a backend that packs counts its packed rows.
        """
        return len(lengths) * max(lengths)

    def score_shared_prompt(self, prefix: Sequence[int], suffixes: Sequence[Sequence[int]]) -> list[float]:
        """Return one score per `prefix + suffix`, the prefix computed once.

        Only backends that declare `supports_shared_prompt` implement it.
        """
        raise NotImplementedError(f"{type(self).__name__} does not declare supports_shared_prompt")

    @abstractmethod
    def close(self) -> None:
        """Free the model's memory."""


# What PyTorch (torch.OutOfMemoryError), onnxruntime (a RuntimeException whose message says it could not
# allocate) and Python raise when a batch does not fit in memory.
_OUT_OF_MEMORY_MESSAGES = ("out of memory", "failed to allocate memory", "bad_alloc")


def is_out_of_memory(error: BaseException) -> bool:
    """Return True when `error` says the device ran out of memory: the batch may fit when split."""
    if isinstance(error, MemoryError):
        return True
    if type(error).__name__ == "OutOfMemoryError":  # torch's, without importing torch here
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and any(m in message for m in _OUT_OF_MEMORY_MESSAGES)
