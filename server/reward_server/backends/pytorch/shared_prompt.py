"""Shared-prompt scoring on the PyTorch backend: N candidates that begin with the same tokens.

The shared prefix runs once; its KV cache is expanded (a view, not a copy and not a recomputation)
to the N candidates, and only each candidate's own tokens (its suffix) run, right-padded, attending
to the prefix cache. Causal attention makes every prefix position's keys and values independent of
what follows, so the scores equal those of the N full sequences (to float rounding). With the
last-position cut (see last_position.py) the last layer computes only the prefix's keys and values
and, for each suffix, the one position the head reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import DynamicCache

from reward_server.backends.padding import right_padded
from reward_server.backends.pytorch.last_position import last_layer_at, rotated_keys_values
from reward_server.backends.pytorch.masks import last_token_positions, padded_causal_mask
from reward_server.backends.pytorch.model import RewardModel
from reward_server.backends.pytorch.scorers import PaddedScorer
from reward_server.backends.pytorch.tensors import on_device


def expanded_cache(cache: DynamicCache, rows: int) -> DynamicCache:
    """The prefix's cache (batch 1) seen as `rows` rows; later updates concatenate onto it."""
    for layer in cache.layers:
        layer.keys = layer.keys.expand(rows, -1, -1, -1)
        layer.values = layer.values.expand(rows, -1, -1, -1)
    return cache


def run_layers(
    backbone: nn.Module,
    layers: Sequence[nn.Module],
    input_ids: torch.Tensor,
    mask: torch.Tensor | None,
    start: int,
    cache: DynamicCache,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`layers` over input_ids at positions start, start + 1, ... after the cache's keys and values
    (to which theirs are appended); mask: [batch, 1, length, start + length], or None for causal
    attention over a cache-less batch of one length. Returns the hidden states and the rotary cos, sin of
    those positions."""
    hidden = backbone.embed_tokens(input_ids)
    positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)[None]
    cos, sin = backbone.rotary_emb(hidden, positions)
    for layer in layers:
        hidden = layer(
            hidden,
            attention_mask=mask,
            position_ids=positions,
            position_embeddings=(cos, sin),
            past_key_values=cache,
            use_cache=True,
        )
    return hidden, cos, sin


@torch.inference_mode()
def shared_prompt_scores(
    model: RewardModel,
    prefix: Sequence[int],
    suffixes: Sequence[Sequence[int]],
    device: str,
    sliding_window: int | None,
    last_position: bool,
) -> list[float]:
    """One score per `prefix + suffix`; every suffix holds at least one token (the score is read there).
    last_position: the backbone's layers are Llama-shaped and the last one runs only where it is read."""
    backbone = model.model
    layers = list(backbone.layers)
    cut = layers.pop() if last_position else None
    cache = DynamicCache()  # every key kept: the mask applies a sliding window
    prefix_ids = torch.tensor([list(prefix)], dtype=torch.long, device=device)
    # One row, no padding: without a mask SDPA attention runs as causal (cheaper), unless a window cuts it;
    # eager attention needs the mask whatever the length.
    windowed = sliding_window and len(prefix) > sliding_window
    prefix_mask = None
    if windowed or not model.runs_causal_unmasked:
        prefix_mask = model.attention_mask(padded_causal_mask(torch.ones_like(prefix_ids), sliding_window))
    hidden, cos, sin = run_layers(backbone, layers, prefix_ids, prefix_mask, 0, cache)
    cut_cache = rotated_keys_values(cut, cut.input_layernorm(hidden), cos, sin) if cut is not None else None

    input_ids, suffix_mask = on_device(right_padded(suffixes), device)
    rows, width = input_ids.shape
    attention_mask = torch.cat(
        [torch.ones(rows, len(prefix), dtype=suffix_mask.dtype, device=device), suffix_mask], 1
    )
    mask = padded_causal_mask(attention_mask, sliding_window, queries=width)
    hidden, cos, sin = run_layers(
        backbone, layers, input_ids, model.attention_mask(mask), len(prefix), expanded_cache(cache, rows)
    )
    row_index, last = torch.arange(rows, device=device), last_token_positions(suffix_mask)
    if cut is None:
        pooled = hidden[row_index, last]
    else:
        pooled = last_layer_at(
            cut, hidden, mask, row_index, last, cos.expand(rows, -1, -1), sin.expand(rows, -1, -1), cut_cache
        )
    return model.score(backbone.norm(pooled)).squeeze(-1).float().cpu().tolist()


def shared_prompt_refusal(full: PaddedScorer, device: str, last_position: bool, tolerance: float) -> str:
    """Why shared_prompt_scores cannot serve this model ("" when it can): it runs the decoder layers one by
    one, so it needs layers that return a tensor, embeddings used as embed_tokens gives them and one mask
    for every layer; checked on a probe (a prefix past any short window, suffixes of different lengths)
    against the full forward of each whole sequence."""
    if full.full_attention_too:
        return "its layers mix windowed and full attention, and the shared prompt gives every layer one mask"
    vocab_size = full.reward_model.model.config.vocab_size
    prefix = [(5 + 7 * i) % vocab_size for i in range(min((full.sliding_window or 12) + 5, 40))]
    suffixes = [[(11 + 3 * i) % vocab_size for i in range(length)] for length in (1, 4, 9)]
    try:
        got = shared_prompt_scores(
            full.reward_model, prefix, suffixes, device, full.sliding_window, last_position
        )
    except Exception as e:  # a layer the loop above cannot drive
        return f"{type(e).__name__}: {e}"
    with torch.inference_mode():
        want = full(*on_device(right_padded([prefix + suffix for suffix in suffixes]), device)).tolist()
    difference = max(abs(a - b) for a, b in zip(got, want))
    return f"its scores differ from the full forward by {difference:.3g}" if difference > tolerance else ""
