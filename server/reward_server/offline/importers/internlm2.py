"""InternLM2-Reward (1.8B / 7B / 20B) -> Llama backbone + reward head.

Packed `wqkv` rows are ordered (kv group g in K, slot s in G+2, dim j in d), G = H/K query heads per
group: slots 0..G-1 are the group's query heads, slot G its key head, slot G+1 its value head.
Query head h = g*G + s uses kv head h // G, which is what Llama's repeat_kv does, so `wo` maps onto
`o_proj` unchanged. MLP: w1 = gate_proj, w3 = up_proj, w2 = down_proj.
"""

from __future__ import annotations

import re
from typing import Any

from reward_server.errors import ImportRefused
from reward_server.offline.importers.canonical import Canonical
from reward_server.offline.importers.llama_config import llama_config
from reward_server.offline.importers.source import SourceCheckpoint
from reward_server.offline.importers.tokenizer_files import sentencepiece_tokenizer
from reward_server.repository.config import RewardDefaults

NAME = "internlm2"

# The InternLM2 chat format, for tokenizer folders that carry no template of their own.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
)

RENAMES = [
    (r"^model\.tok_embeddings\.weight$", "model.embed_tokens.weight"),
    (r"^model\.layers\.(\d+)\.attention\.wo\.(weight|bias)$", r"model.layers.\1.self_attn.o_proj.\2"),
    (r"^model\.layers\.(\d+)\.feed_forward\.w1\.weight$", r"model.layers.\1.mlp.gate_proj.weight"),
    (r"^model\.layers\.(\d+)\.feed_forward\.w3\.weight$", r"model.layers.\1.mlp.up_proj.weight"),
    (r"^model\.layers\.(\d+)\.feed_forward\.w2\.weight$", r"model.layers.\1.mlp.down_proj.weight"),
    (r"^model\.layers\.(\d+)\.attention_norm\.weight$", r"model.layers.\1.input_layernorm.weight"),
    (r"^model\.layers\.(\d+)\.ffn_norm\.weight$", r"model.layers.\1.post_attention_layernorm.weight"),
    (r"^model\.norm\.weight$", "model.norm.weight"),
    (r"^v_head\.weight$", "score.weight"),
]
WQKV = re.compile(r"^model\.layers\.(\d+)\.attention\.wqkv\.(weight|bias)$")
DROPPED = re.compile(r"rotary_emb\.inv_freq$")


def matches(source: SourceCheckpoint) -> bool:
    config = source.config
    return config.get("model_type") == "internlm2" or "InternLM2ForRewardModel" in (
        config.get("architectures") or []
    )


def split_wqkv(packed: Any, kv_heads: int, group: int, head_dim: int, key: str) -> tuple[Any, Any, Any]:
    """Packed [(K*(G+2))*d, ...] -> q [K*G*d, ...], k [K*d, ...], v [K*d, ...]."""
    rows = kv_heads * (group + 2) * head_dim
    if packed.shape[0] != rows:
        raise ImportRefused(
            f"{key}: shape {tuple(packed.shape)}, expected {rows} rows "
            f"(({kv_heads} kv groups x ({group} + 2) slots) x head dim {head_dim})"
        )
    rest = tuple(packed.shape[1:])
    grouped = packed.reshape(kv_heads, group + 2, head_dim, *rest)
    q = grouped[:, :group].reshape(kv_heads * group * head_dim, *rest)
    k = grouped[:, group].reshape(kv_heads * head_dim, *rest)
    v = grouped[:, group + 1].reshape(kv_heads * head_dim, *rest)
    return q, k, v


def convert(source: SourceCheckpoint) -> Canonical:
    c = source.config
    config = llama_config(c, f"{source.folder}/config.json")
    reward_token_id = c.get("reward_token_id")
    if not isinstance(reward_token_id, int):
        raise ImportRefused(f"{source.folder}/config.json: reward_token_id is missing")
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = config.hidden_size // heads
    state: dict[str, Any] = {}
    for key, tensor in source.load_state().items():
        if DROPPED.search(key):
            continue
        if m := WQKV.match(key):
            layer, kind = m.groups()
            q, k, v = split_wqkv(tensor, kv_heads, heads // kv_heads, head_dim, key)
            for proj, part in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
                state[f"model.layers.{layer}.self_attn.{proj}.{kind}"] = part
            continue
        for pattern, replacement in RENAMES:
            if re.match(pattern, key):
                key = re.sub(pattern, replacement, key)
                break
        state[key] = tensor  # an unknown key stays as is and is reported by check_canonical
    tokenizer_config = source.json_file("tokenizer_config.json")
    tokenizer = sentencepiece_tokenizer(
        source,
        add_bos=tokenizer_config.get("add_bos_token", True),
        add_eos=tokenizer_config.get("add_eos_token", False),
        pad_token="</s>",
        chat_template=tokenizer_config.get("chat_template") or CHAT_TEMPLATE,
    )
    reward = RewardDefaults(
        prompt_format="internlm2",
        max_sequence_length=config.max_position_embeddings,
        reward_token_id=reward_token_id,
        add_special_tokens=False,
        head_bias=False,
    )
    return Canonical(NAME, config, state, tokenizer, reward)
