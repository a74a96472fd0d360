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

    def close(self) -> None:
        """Free the model's memory."""
