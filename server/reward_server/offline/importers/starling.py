"""Starling-RM (7B-alpha, 34B) -> Llama backbone + reward head.

`GPTRewardModel` holds a causal LM as `model` and its backbone again as `transformer`, so a saved
state dict names each backbone tensor `model.model.*`, `transformer.*`, or both (the same tensor).
Both prefixes map to `model.*`; when both are present they must be equal. `model.lm_head.weight`
is dropped; `v_head.weight` (no bias) is the head and is required. The 7B checkpoint ships weights
only: its config and tokenizer are Llama-2-7b-chat's (pass --base with that folder).
"""

from __future__ import annotations

import re
from typing import Any

from reward_server.errors import ImportRefused
from reward_server.offline.importers.canonical import Canonical
from reward_server.offline.importers.llama_config import llama_config
from reward_server.offline.importers.source import SourceCheckpoint
from reward_server.offline.importers.tokenizer_files import special_token, tokenizer_json_or_sentencepiece
from reward_server.repository.config import RewardDefaults

NAME = "starling"
MAX_LENGTH = 2048  # the card: truncation_side="left", max_length=2048
ALIASES = ("transformer.", "model.model.")
DROPPED = re.compile(r"(^model\.lm_head\.weight$|^lm_head\.weight$|rotary_emb\.inv_freq$)")


def matches(source: SourceCheckpoint) -> bool:
    keys = source.keys
    return "v_head.weight" in keys and any(k.startswith(ALIASES) for k in keys)


def convert(source: SourceCheckpoint) -> Canonical:
    import torch

    config = llama_config(source.config, f"{source.folder}/config.json")
    state: dict[str, Any] = {}
    for key, tensor in source.load_state().items():
        if DROPPED.search(key):
            continue
        if key == "v_head.weight":
            state["score.weight"] = tensor
            continue
        prefix = next((p for p in ALIASES if key.startswith(p)), None)
        name = "model." + key[len(prefix) :] if prefix else key
        if prefix and name in state:
            if not torch.equal(state[name], tensor):
                raise ImportRefused(
                    f"{key} and its alias differ: the checkpoint holds two different backbones"
                )
            continue
        state[name] = tensor
    if "score.weight" not in state:
        raise ImportRefused(f"{source.folder}: v_head.weight is missing")
    tokenizer = tokenizer_json_or_sentencepiece(source, pad_token=special_token(source, "unk_token", "<unk>"))
    reward = RewardDefaults(
        prompt_format="llama2",
        max_sequence_length=min(MAX_LENGTH, config.max_position_embeddings),
        add_special_tokens=True,
        head_bias=False,
    )
    return Canonical(NAME, config, state, tokenizer, reward)
