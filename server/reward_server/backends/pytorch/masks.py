"""Masks and positions of a right-padded batch, shared by the PyTorch scorers."""

from __future__ import annotations

import torch


def last_token_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last position whose mask is 1, per row (works for left or right padding)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask).argmax(dim=1)


def padded_causal_mask(
    attention_mask: torch.Tensor, sliding_window: int | None = None, queries: int | None = None
) -> torch.Tensor:
    """[batch, 1, queries, L] bool, True where a query may attend a key: causal, inside the key's row
    length and, for sliding-window models, inside the window: the booleans transformers builds from a 2D
    mask, with a few tensor ops instead of its element-wise vmap (which costs more than a small model's
    forward). The queries are the last `queries` of the L positions (all of them by default; fewer when
    the first keys come from a cache)."""
    keys = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    query_positions = keys[-queries:] if queries else keys
    allowed = keys[None, :] <= query_positions[:, None]  # [query, key]
    if sliding_window:
        allowed &= keys[None, :] > query_positions[:, None] - sliding_window
    return allowed[None, None] & attention_mask.bool()[:, None, None, :]


def packed_causal_mask(
    segments: torch.Tensor, positions: torch.Tensor, sliding_window: int | None = None
) -> torch.Tensor:
    """[rows, 1, width, width] bool for packed rows (see packing.py): a query may attend the keys of its
    own sequence up to itself (inside any window of positions). Padding (segment 0) attends padding, so
    that no row of the mask is empty (an empty one gives NaN, and a NaN value poisons every query)."""
    columns = torch.arange(segments.shape[1], device=segments.device)
    allowed = (segments[:, :, None] == segments[:, None, :]) & (
        columns[None, None, :] <= columns[None, :, None]
    )
    if sliding_window:
        allowed &= positions[:, None, :] > positions[:, :, None] - sliding_window
    return allowed[:, None]


def attention_bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask (True: may attend) as eager attention takes it, added to the attention logits:
    0 where a query may attend, the dtype's minimum where not (what transformers' eager_mask builds).
    A query with no key to attend (a padding query of a padded batch) attends every key instead: its
    output is never read, and a row of minimums plus negative logits overflows to -inf in half precision,
    whose softmax is NaN, which would reach the real queries through the values (0 * NaN)."""
    allowed = allowed | ~allowed.any(dim=-1, keepdim=True)
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )
