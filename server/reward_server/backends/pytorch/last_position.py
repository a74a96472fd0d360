"""The reward head reads one position per row, so the last decoder layer needs only that position:
its query, attention output, MLP and the final norm run on one row per sequence, against keys and
values of every position. The layers before it run as transformers runs them.

Saved: the last layer's work for all other positions (docs/pytorch-backend.md has the numbers). Only
for the Llama-shaped decoder layers named below (Llama and Mistral, the backbones every seed family
imports to); the backend checks its scores against the full forward at load and keeps the full
forward when they differ.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from reward_server.backends.pytorch.masks import last_token_positions, packed_causal_mask, padded_causal_mask

# Pre-norm layers with input_layernorm -> self_attn (q/k/v/o_proj, rotate-half RoPE) -> residual,
# post_attention_layernorm -> mlp -> residual: what the code below computes for one query per row.
LLAMA_SHAPED_LAYERS = ("LlamaDecoderLayer", "MistralDecoderLayer")


def supports_last_position(backbone: nn.Module) -> bool:
    layers = getattr(backbone, "layers", None)
    return (
        bool(layers)
        and all(type(layer).__name__ in LLAMA_SHAPED_LAYERS for layer in layers)
        and hasattr(backbone, "rotary_emb")
        and hasattr(backbone, "norm")
    )


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotated_keys_values(
    layer: nn.Module, normed: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's keys (rotary embedding applied) and values of `normed` [batch, L, hidden], the
    input after input_layernorm: each [batch, kv heads, L, head_dim], as transformers caches them."""
    attention = layer.self_attn
    batch, length = normed.shape[:2]
    key = attention.k_proj(normed).view(batch, length, -1, attention.head_dim).transpose(1, 2)
    value = attention.v_proj(normed).view(batch, length, -1, attention.head_dim).transpose(1, 2)
    return key * cos[:, None] + _rotate_half(key) * sin[:, None], value


def last_layer_at(
    layer: nn.Module,
    hidden: torch.Tensor,
    mask: torch.Tensor | None,
    rows: torch.Tensor,
    last: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    cached: tuple[torch.Tensor, torch.Tensor] | None = None,
    packed: bool = False,
) -> torch.Tensor:
    """The decoder layer's output at position `last[i]` of row `rows[i]` of `hidden`, for each input i:
    [inputs, hidden].

    hidden: [batch, L, hidden], the layer's input; cos, sin: [batch, L, head_dim], the rotary embedding of
    its positions (an expanded view when rows share positions); cached: keys and values of the C
    positions before them (a shared prefix), or None; mask: [batch, 1, L, C + L] bool (True: may attend),
    or None when every row reads its last position and may attend every key (no padding, no window);
    packed: rows repeat (a row holds several inputs), so each input's keys and values are its row's."""
    attention = layer.self_attn
    inputs = rows.shape[0]
    normed = layer.input_layernorm(hidden)
    query = attention.q_proj(normed[rows, last]).view(inputs, 1, -1, attention.head_dim).transpose(1, 2)
    query_cos, query_sin = cos[rows, last][:, None, None], sin[rows, last][:, None, None]
    query = query * query_cos + _rotate_half(query) * query_sin  # [inputs, heads, 1, d]
    key, value = rotated_keys_values(layer, normed, cos, sin)
    if packed:
        key, value = key[rows], value[rows]
    if cached is not None:
        key, value = (
            torch.cat([c.expand(inputs, -1, -1, -1), x], dim=2) for c, x in zip(cached, (key, value))
        )
    groups = attention.num_key_value_groups
    if groups > 1:  # grouped-query attention: each key/value head serves `groups` query heads
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    row_mask = None if mask is None else mask[rows, :, last][:, :, None]
    out = nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=row_mask, scale=attention.scaling
    )
    residual = hidden[rows, last] + attention.o_proj(out.transpose(1, 2).reshape(inputs, -1))
    return residual + layer.mlp(layer.post_attention_layernorm(residual))


def scores_at_last_positions(
    reward_model: Any,
    input_ids: torch.Tensor,
    mask: torch.Tensor | None,
    positions: torch.Tensor,
    rows: torch.Tensor,
    last: torch.Tensor,
    packed: bool = False,
) -> torch.Tensor:
    """The reward head's score of each input i, read at position last[i] of row rows[i]: every decoder
    layer but the last on all positions, the last one only there (last_layer_at). positions: [rows, L],
    or [1, L] when every row has the same positions (padded)."""
    backbone = reward_model.model
    hidden = backbone.embed_tokens(input_ids)
    cos, sin = backbone.rotary_emb(hidden, positions)
    for layer in backbone.layers[:-1]:
        hidden = layer(hidden, attention_mask=mask, position_ids=positions, position_embeddings=(cos, sin))
    batch = input_ids.shape[0]
    hidden = last_layer_at(
        backbone.layers[-1],
        hidden,
        mask,
        rows,
        last,
        cos.expand(batch, -1, -1),
        sin.expand(batch, -1, -1),
        packed=packed,
    )
    return reward_model.score(backbone.norm(hidden)).squeeze(-1).float()


class LastPositionScorer(nn.Module):
    """Scores of a right-padded batch given its 4D mask (like PaddedScorer), the last layer computed
    only at each row's last real position.

    unmasked: for batches whose rows all have the same length, shorter than any sliding window (every
    batch of one row, on most models). No mask is built and attention runs as causal (transformers'
    SDPA path with no mask), which lets the attention kernel skip the blocks above the diagonal
    instead of masking them (docs/pytorch-backend.md, "Unmasked batches of one length").
    """

    def __init__(self, reward_model: Any, sliding_window: int | None, unmasked: bool = False) -> None:
        super().__init__()
        self.reward_model = reward_model
        self.sliding_window = sliding_window
        self.unmasked = unmasked

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = None if self.unmasked else padded_causal_mask(attention_mask, self.sliding_window)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]  # shared by every row
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        return scores_at_last_positions(
            self.reward_model, input_ids, mask, positions, rows, last_token_positions(attention_mask)
        )


class PackedScorer(nn.Module):
    """Scores of a packed batch (see packing.py), the last layer computed only at each input's last
    token: the layers run on rows x width tokens under a block-diagonal causal mask, with positions
    that restart for each sequence."""

    def __init__(self, reward_model: Any, sliding_window: int | None) -> None:
        super().__init__()
        self.reward_model = reward_model
        self.sliding_window = sliding_window

    def forward(
        self,
        input_ids: torch.Tensor,
        segments: torch.Tensor,
        positions: torch.Tensor,
        rows: torch.Tensor,
        last: torch.Tensor,
    ) -> torch.Tensor:
        mask = packed_causal_mask(segments, positions, self.sliding_window)
        return scores_at_last_positions(
            self.reward_model, input_ids, mask, positions, rows, last, packed=True
        )
