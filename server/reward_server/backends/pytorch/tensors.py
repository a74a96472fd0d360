"""A batch of token ids as the PyTorch scorers' input tensors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from reward_server.backends.packing import packed
from reward_server.backends.padding import right_padded

Inputs = Callable[[Sequence[Sequence[int]], str], tuple[torch.Tensor, ...]]  # a batch -> a scorer's inputs


def on_device(arrays: Sequence[Any], device: str) -> tuple[torch.Tensor, ...]:
    """Numpy arrays as tensors on `device`."""
    return tuple(torch.from_numpy(a).to(device) for a in arrays)


def padded_tensors(batch: Sequence[Sequence[int]], device: str) -> tuple[torch.Tensor, ...]:
    """A padded scorer's inputs: input_ids and attention_mask."""
    return on_device(right_padded(batch), device)


def packed_tensors(batch: Sequence[Sequence[int]], device: str) -> tuple[torch.Tensor, ...]:
    """PackedScorer's inputs (the batch must pack)."""
    layout = packed(batch)
    assert layout is not None, "a batch that packs into no fewer rows"
    return on_device(layout.arrays(), device)


def runs_unmasked(batch: Sequence[Sequence[int]], sliding_window: int | None) -> bool:
    """Whether a batch may take the unmasked scorer: rows of one length, inside any sliding window."""
    length = len(batch[0])
    return all(len(row) == length for row in batch) and not (sliding_window and length > sliding_window)
