"""Synthetic token ids: what load-time checks (the PyTorch backend's probe batches), warmup batches and
token-budget tuning run a model on before any request arrives. One deterministic generator, so that a
load is reproducible and every check sees the same kind of input."""

from __future__ import annotations

from collections.abc import Sequence


def synthetic_ids(vocab_size: int, length: int, seed: int = 0) -> list[int]:
    """`length` ids in [0, vocab_size), a fixed function of `seed` (different seeds, different rows)."""
    return [(seed + 7 * i) % vocab_size for i in range(length)]


def synthetic_batch(vocab_size: int, lengths: Sequence[int], seed: int = 0) -> list[list[int]]:
    """One row of synthetic ids per length, row r drawn with seed `seed + r`."""
    return [synthetic_ids(vocab_size, length, seed + row) for row, length in enumerate(lengths)]
