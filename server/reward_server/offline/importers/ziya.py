"""Ziya-LLaMA-7B-Reward -> Llama backbone + reward head with its bias.

The original `LlamaRewardModel` is `model = LlamaModel` + `value_head = Linear(hidden, 1)` with a
bias, saved as sharded fp32 pickles. The bias is kept (it shifts scores, not rankings); stale
`rotary_emb.inv_freq` buffers are dropped. Tokenizer: LlamaTokenizer with BOS and EOS added.
"""

from __future__ import annotations

import re
from typing import Any

from reward_server.offline.importers.canonical import Canonical
from reward_server.offline.importers.llama_config import llama_config
from reward_server.offline.importers.source import SourceCheckpoint
from reward_server.offline.importers.tokenizer_files import sentencepiece_tokenizer, special_token
from reward_server.repository.config import RewardDefaults

NAME = "ziya"
MAX_LENGTH = 1024  # the card tokenizes with truncation=True, max_length=1024
DROPPED = re.compile(r"rotary_emb\.inv_freq$")
HEAD = {"value_head.weight": "score.weight", "value_head.bias": "score.bias"}


def matches(source: SourceCheckpoint) -> bool:
    return (
        "LlamaRewardModel" in (source.config.get("architectures") or []) or "value_head.weight" in source.keys
    )


def convert(source: SourceCheckpoint) -> Canonical:
    config = llama_config(source.config, f"{source.folder}/config.json")
    state: dict[str, Any] = {}
    for key, tensor in source.load_state().items():
        if not DROPPED.search(key):
            state[HEAD.get(key, key)] = tensor
    tokenizer = sentencepiece_tokenizer(
        source, add_bos=True, add_eos=True, pad_token=special_token(source, "pad_token", None)
    )
    reward = RewardDefaults(
        prompt_format="ziya",
        max_sequence_length=min(MAX_LENGTH, config.max_position_embeddings),
        add_special_tokens=True,
        head_bias="score.bias" in state,
    )
    return Canonical(NAME, config, state, tokenizer, reward)
