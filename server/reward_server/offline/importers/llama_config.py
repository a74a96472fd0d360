"""A transformers LlamaConfig from an original config.json (Llama, Ziya, Starling, InternLM2 field names)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from reward_server.errors import ImportRefused
from reward_server.offline.importers.canonical import check_config


def _rope_scaling(scaling: Any) -> dict | None:
    if not scaling:
        return None
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind not in ("dynamic", "linear"):
        raise ImportRefused(f"config.json: rope_scaling type {kind!r} is not supported (dynamic or linear)")
    return {"rope_type": kind, "factor": float(scaling["factor"])}


def llama_config(c: dict[str, Any], where: str = "config.json") -> Any:
    from transformers import LlamaConfig

    if not isinstance(c.get("hidden_size"), int) or not isinstance(c.get("num_attention_heads"), int):
        raise ImportRefused(f"{where}: hidden_size and num_attention_heads are required integers")
    heads = c["num_attention_heads"]
    check_config(
        SimpleNamespace(
            hidden_size=c["hidden_size"],
            num_attention_heads=heads,
            num_key_value_heads=c.get("num_key_value_heads") or heads,
        ),
        where,
    )
    try:
        config = _build(LlamaConfig, c)
    except KeyError as e:
        raise ImportRefused(f"{where}: field {e} is missing") from e
    return config


def _build(config_class: Any, c: dict[str, Any]) -> Any:
    return config_class(
        vocab_size=c["vocab_size"],
        hidden_size=c["hidden_size"],
        intermediate_size=c["intermediate_size"],
        num_hidden_layers=c["num_hidden_layers"],
        num_attention_heads=c["num_attention_heads"],
        num_key_value_heads=c.get("num_key_value_heads") or c["num_attention_heads"],
        max_position_embeddings=c.get("max_position_embeddings", 2048),
        rope_theta=c.get("rope_theta", 10000.0),
        rope_scaling=_rope_scaling(c.get("rope_scaling")),
        rms_norm_eps=c.get("rms_norm_eps", 1e-6),
        attention_bias=bool(c.get("bias", c.get("attention_bias", False))),
        hidden_act=c.get("hidden_act", "silu"),
        tie_word_embeddings=False,
        pad_token_id=c.get("pad_token_id"),
        bos_token_id=c.get("bos_token_id", 1),
        eos_token_id=c.get("eos_token_id", 2),
    )
