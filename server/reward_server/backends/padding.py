"""One batch of token-id sequences -> right-padded int64 arrays, shared by the backends."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def right_padded(batch: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), both [batch, longest]. The pad id (0) is irrelevant under the mask."""
    width = max(len(ids) for ids in batch)
    input_ids = np.zeros((len(batch), width), dtype=np.int64)
    attention_mask = np.zeros((len(batch), width), dtype=np.int64)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask
