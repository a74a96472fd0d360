"""What every importer produces, and the strict check it must pass before anything is written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ImportRefused
from ..repository.config import RewardDefaults

MAX_LISTED = 12


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
        raise ImportRefused(f"{where}: num_attention_heads {heads} is not divisible by num_key_value_heads {kv_heads}")


def check_canonical(canonical: Canonical) -> None:
    """Every expected tensor present with its exact shape, nothing unexpected: never a silent strict=False."""
    import torch

    from ..backends.torch_eager import RewardModel

    check_config(canonical.config, f"{canonical.family} config")
    head_bias = "score.bias" in canonical.state
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in RewardModel(canonical.config, head_bias, torch.float32).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in canonical.state.items()}
    missing, unexpected = expected.keys() - got.keys(), got.keys() - expected.keys()
    mismatched = {f"{k} {got[k]} != {expected[k]}" for k in expected.keys() & got.keys() if got[k] != expected[k]}
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_listed(mismatched)}")
    if problems:
        raise ImportRefused(f"the {canonical.family} checkpoint does not map onto its backbone: " + "; ".join(problems))
    if len(canonical.tokenizer) > canonical.config.vocab_size:
        raise ImportRefused(f"the tokenizer has {len(canonical.tokenizer)} tokens, more than the model's "
                            f"vocab_size {canonical.config.vocab_size}")
