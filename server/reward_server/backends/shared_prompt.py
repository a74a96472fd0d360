"""Shared-prompt scoring on the PyTorch backend: N candidates that begin with the same tokens.

The shared prefix runs once; its KV cache is expanded (a view, not a copy and not a recomputation)
to the N candidates, and only each candidate's own tokens (its suffix) run, right-padded, attending
to the prefix cache. Causal attention makes every prefix position's keys and values independent of
what follows, so the scores equal those of the N full sequences (to float rounding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .masks import last_token_positions
from .padding import right_padded
from .torch_eager import RewardModel


def expanded_cache(cache, rows: int):
    """The prefix's cache (batch 1) seen as `rows` rows; later updates concatenate onto it."""
    for layer in cache.layers:
        layer.keys = layer.keys.expand(rows, -1, -1, -1)
        layer.values = layer.values.expand(rows, -1, -1, -1)
    return cache


@torch.inference_mode()
def shared_prefix_scores(model: RewardModel, prefix: Sequence[int], suffixes: Sequence[Sequence[int]],
                         device: str) -> list[float]:
    """One score per `prefix + suffix`; every suffix holds at least one token (the score is read there)."""
    backbone = model.model
    prefix_ids = torch.tensor([list(prefix)], dtype=torch.long, device=device)
    cache = backbone(input_ids=prefix_ids, use_cache=True).past_key_values
    input_ids, suffix_mask = (torch.from_numpy(a).to(device) for a in right_padded(suffixes))
    rows, width = input_ids.shape
    attention_mask = torch.cat([torch.ones(rows, len(prefix), dtype=suffix_mask.dtype, device=device), suffix_mask], 1)
    position_ids = torch.arange(len(prefix), len(prefix) + width, device=device).expand(rows, -1)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      past_key_values=expanded_cache(cache, rows), use_cache=True).last_hidden_state
    pooled = hidden[torch.arange(rows, device=device), last_token_positions(suffix_mask)]
    return model.score(pooled).squeeze(-1).float().cpu().tolist()
