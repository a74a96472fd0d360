"""Independent reference forwards, written from each family's published description, in float64.

InternLM2's attention reads the packed wqkv directly (slot order per kv group: G query heads, then
the key head, then the value head); Llama's reads q/k/v separately. RoPE is rotate-half."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Weights = dict[str, torch.Tensor]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """x: (positions, heads, head_dim)."""
    n, _, d = x.shape
    inv_freq = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.arange(n, dtype=torch.float64)[:, None] * inv_freq[None]
    cos, sin = torch.cat([angles, angles], -1).cos()[:, None], torch.cat([angles, angles], -1).sin()[:, None]
    rotated = torch.cat([-x[..., d // 2 :], x[..., : d // 2]], -1)
    return x * cos + rotated * sin


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q: (n, H, d); k, v: (n, K, d). Query head h reads kv head h // (H/K)."""
    n, heads, d = q.shape
    group = heads // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(d)
    scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(n, heads * d)


def decoder_last_hidden(
    ids: list[int],
    w: Weights,
    layers: int,
    eps: float,
    theta: float,
    qkv: Callable[[int, torch.Tensor], tuple],
    names: dict[str, str],
) -> torch.Tensor:
    x = w[names["embed"]][torch.tensor(ids)]
    for i in range(layers):
        h = rms_norm(x, w[names["attn_norm"].format(i)], eps)
        q, k, v = qkv(i, h)
        x = x + causal_attention(rope(q, theta), rope(k, theta), v) @ w[names["wo"].format(i)].T
        h = rms_norm(x, w[names["ffn_norm"].format(i)], eps)
        gate, up = h @ w[names["gate"].format(i)].T, h @ w[names["up"].format(i)].T
        x = x + (torch.nn.functional.silu(gate) * up) @ w[names["down"].format(i)].T
    return rms_norm(x, w[names["norm"]], eps)[-1]


def internlm2_score(ids: list[int], original: Weights, config: dict) -> float:
    w = {k: v.double() for k, v in original.items()}
    heads, kv_heads, hidden = (
        config["num_attention_heads"],
        config["num_key_value_heads"],
        config["hidden_size"],
    )
    d, group = hidden // heads, heads // kv_heads

    def packed_qkv(i: int, h: torch.Tensor):
        qkv = (h @ w[f"model.layers.{i}.attention.wqkv.weight"].T).view(len(ids), kv_heads, group + 2, d)
        return qkv[:, :, :group].reshape(len(ids), heads, d), qkv[:, :, group], qkv[:, :, group + 1]

    names = {
        "embed": "model.tok_embeddings.weight",
        "norm": "model.norm.weight",
        "attn_norm": "model.layers.{}.attention_norm.weight",
        "ffn_norm": "model.layers.{}.ffn_norm.weight",
        "wo": "model.layers.{}.attention.wo.weight",
        "gate": "model.layers.{}.feed_forward.w1.weight",
        "up": "model.layers.{}.feed_forward.w3.weight",
        "down": "model.layers.{}.feed_forward.w2.weight",
    }
    last = decoder_last_hidden(
        ids, w, config["num_hidden_layers"], config["rms_norm_eps"], config["rope_theta"], packed_qkv, names
    )
    return float(last @ w["v_head.weight"][0])


def llama_score(
    ids: list[int], backbone: Weights, config: dict, head_weight: torch.Tensor, head_bias: float = 0.0
) -> float:
    """`backbone` uses Llama names without a prefix (embed_tokens.weight, layers.N....)."""
    w = {k: v.double() for k, v in backbone.items()}
    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    kv_heads, d = config.get("num_key_value_heads") or heads, hidden // heads

    def split_qkv(i: int, h: torch.Tensor):
        p = f"layers.{i}.self_attn."
        return (
            (h @ w[p + "q_proj.weight"].T).view(len(ids), heads, d),
            (h @ w[p + "k_proj.weight"].T).view(len(ids), kv_heads, d),
            (h @ w[p + "v_proj.weight"].T).view(len(ids), kv_heads, d),
        )

    names = {
        "embed": "embed_tokens.weight",
        "norm": "norm.weight",
        "attn_norm": "layers.{}.input_layernorm.weight",
        "ffn_norm": "layers.{}.post_attention_layernorm.weight",
        "wo": "layers.{}.self_attn.o_proj.weight",
        "gate": "layers.{}.mlp.gate_proj.weight",
        "up": "layers.{}.mlp.up_proj.weight",
        "down": "layers.{}.mlp.down_proj.weight",
    }
    last = decoder_last_hidden(
        ids,
        w,
        config["num_hidden_layers"],
        config["rms_norm_eps"],
        config.get("rope_theta", 10000.0),
        split_qkv,
        names,
    )
    return float(last @ head_weight.double()[0]) + head_bias
