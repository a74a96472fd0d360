"""Any transformers `*ForSequenceClassification` with one label (e.g. the Mistral-7B Unified-Feedback
RM): config and weights pass through (backbone `model.*`, head `score.*`), re-saved as safetensors.

The card renders the tokenizer's chat template as text and encodes it with the tokenizer's special
tokens (`encode_plus` defaults), so the ids of Llama/Mistral tokenizers begin with two BOS tokens:
`add_special_tokens: true` reproduces that.
"""

from __future__ import annotations

from typing import Any

from reward_server.errors import ImportRefused
from reward_server.offline.importers.canonical import Canonical, check_config
from reward_server.offline.importers.source import SourceCheckpoint
from reward_server.offline.importers.tokenizer_files import tokenizer_json_or_sentencepiece
from reward_server.repository.config import RewardDefaults

NAME = "sequence-classification"
SANE_MAX_LENGTH = 1_000_000  # tokenizer_config's "no limit" is 1e30


def matches(source: SourceCheckpoint) -> bool:
    return any(str(a).endswith("ForSequenceClassification") for a in source.config.get("architectures") or [])


def _config(source: SourceCheckpoint) -> Any:
    from transformers import AutoConfig

    raw = dict(source.config)
    raw.pop("auto_map", None)  # a pointer to code in the folder; never followed
    model_type = raw.pop("model_type", None)
    try:
        config = AutoConfig.for_model(model_type, **raw)
    except (ValueError, KeyError, TypeError) as e:
        raise ImportRefused(
            f"{source.folder}/config.json: model_type {model_type!r} is not a transformers "
            f"built-in architecture ({e})"
        ) from e
    labels = getattr(config, "num_labels", 1)
    if labels != 1:
        raise ImportRefused(f"{source.folder}/config.json: num_labels is {labels}; a reward model has one")
    check_config(config, f"{source.folder}/config.json")
    return config


def convert(source: SourceCheckpoint) -> Canonical:
    from transformers import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    config = _config(source)
    prefix = getattr(
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING.get(type(config), None), "base_model_prefix", "model"
    )
    state = {
        ("model." + k[len(prefix) + 1 :] if k.startswith(prefix + ".") else k): v
        for k, v in source.load_state().items()
    }
    tokenizer = tokenizer_json_or_sentencepiece(source)
    if not tokenizer.chat_template:
        raise ImportRefused(
            f"{source.folder}: the tokenizer has no chat_template, so conversations cannot be rendered"
        )
    model_max = getattr(tokenizer, "model_max_length", 0) or 0
    max_length = config.max_position_embeddings
    if 0 < model_max < SANE_MAX_LENGTH:
        max_length = min(max_length, model_max)
    reward = RewardDefaults(
        prompt_format="chat_template",
        max_sequence_length=max_length,
        add_special_tokens=True,
        head_bias="score.bias" in state,
    )
    return Canonical(NAME, config, state, tokenizer, reward)
