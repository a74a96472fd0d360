"""What every importer produces, and the strict check it must pass before anything is written."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reward_server.checkpoint import SHARD_INDEX, SINGLE_FILE
from reward_server.errors import ImportRefused
from reward_server.repository.config import ModelConfig, RewardDefaults, conflict_with

MAX_LISTED = 12
SHARD_BYTES = 4 * 1024**3


@dataclass
class Canonical:
    family: str
    config: Any  # a transformers PretrainedConfig of a built-in architecture
    state: dict[str, Any]  # `model.*` backbone, `score.weight` [1, hidden], optional `score.bias` [1]
    tokenizer: Any  # a transformers PreTrainedTokenizerFast
    reward: RewardDefaults


def _listed(names: set[str]) -> str:
    ordered = sorted(names)
    more = f" and {len(ordered) - MAX_LISTED} more" if len(ordered) > MAX_LISTED else ""
    return ", ".join(ordered[:MAX_LISTED]) + more


def check_config(config: Any, where: str) -> None:
    hidden, heads = config.hidden_size, config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    if heads <= 0 or hidden % heads:
        raise ImportRefused(f"{where}: hidden_size {hidden} is not divisible by num_attention_heads {heads}")
    if kv_heads <= 0 or heads % kv_heads:
        raise ImportRefused(
            f"{where}: num_attention_heads {heads} is not divisible by num_key_value_heads {kv_heads}"
        )


def check_canonical(canonical: Canonical) -> None:
    """Every expected tensor present with its exact shape, nothing unexpected: never a silent strict=False."""
    import torch

    from reward_server.backends.pytorch.model import RewardModel

    check_config(canonical.config, f"{canonical.family} config")
    head_bias = "score.bias" in canonical.state
    with torch.device("meta"):
        expected = {
            k: tuple(v.shape)
            for k, v in RewardModel(canonical.config, head_bias, torch.float32).state_dict().items()
        }
    got = {k: tuple(v.shape) for k, v in canonical.state.items()}
    missing, unexpected = expected.keys() - got.keys(), got.keys() - expected.keys()
    mismatched = {
        f"{k} {got[k]} != {expected[k]}" for k in expected.keys() & got.keys() if got[k] != expected[k]
    }
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_listed(mismatched)}")
    if problems:
        raise ImportRefused(
            f"the {canonical.family} checkpoint does not map onto its backbone: " + "; ".join(problems)
        )
    if len(canonical.tokenizer) > canonical.config.vocab_size:
        raise ImportRefused(
            f"the tokenizer has {len(canonical.tokenizer)} tokens, more than the model's "
            f"vocab_size {canonical.config.vocab_size}"
        )


def accept_under(existing: ModelConfig, canonical: Canonical) -> None:
    """A new version must be servable under the model's existing config.pbtxt."""
    reward = canonical.reward
    wanted = {
        f: getattr(reward, f) for f in ("prompt_format", "reward_token_id", "add_special_tokens", "head_bias")
    }
    if reason := conflict_with(existing, "pytorch", wanted):
        raise ImportRefused(f"{reason}; import this {canonical.family} checkpoint under another --name")


def save_weights(state: dict[str, Any], folder: Path, shard_bytes: int = SHARD_BYTES) -> list[str]:
    """safetensors, sharded with an index past `shard_bytes`. Returns the file names written."""
    from safetensors.torch import save_file

    shards: list[dict[str, Any]] = [{}]
    size = 0
    for name in sorted(state):
        tensor = state[name]
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    if len(shards) == 1:
        names = [SINGLE_FILE]
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
        weight_map = {key: file for file, shard in zip(names, shards) for key in shard}
        index = {
            "metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
            "weight_map": weight_map,
        }
        (folder / SHARD_INDEX).write_text(json.dumps(index, indent=2), encoding="utf-8")
    for file, shard in zip(names, shards):
        # clone: split views (InternLM2's wqkv) share storage, which safetensors refuses
        save_file(
            {k: v.detach().contiguous().clone() for k, v in shard.items()},
            str(folder / file),
            metadata={"format": "pt"},
        )
    return names


def write_canonical(folder: Path, canonical: Canonical) -> None:
    """config.json, safetensors weights and the fast tokenizer into an empty folder."""
    config = canonical.config
    config.architectures = None
    config.save_pretrained(folder)
    save_weights(canonical.state, folder)
    canonical.tokenizer.save_pretrained(folder)
