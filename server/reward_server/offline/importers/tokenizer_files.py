"""The original tokenizer files of a checkpoint -> a fast tokenizer (no code from the folder runs)."""

from __future__ import annotations

from typing import Any, overload

from reward_server.errors import ImportRefused
from reward_server.offline.importers.sentencepiece_fast import (
    fast_tokenizer_from_sentencepiece,
    verify_against_sentencepiece,
)
from reward_server.offline.importers.source import SourceCheckpoint


def _token_text(value: Any, default: str | None) -> str | None:
    if isinstance(value, dict):
        return value.get("content", default)
    return value if isinstance(value, str) else default


def added_tokens(source: SourceCheckpoint) -> list[tuple[int, str]]:
    """(id, text) of the tokens the original tokenizer adds to its sentencepiece vocabulary."""
    tokens = {
        int(i): t["content"]
        for i, t in source.json_file("tokenizer_config.json").get("added_tokens_decoder", {}).items()
        if isinstance(t, dict) and "content" in t
    }
    tokens.update({int(i): text for text, i in source.json_file("added_tokens.json").items()})
    return sorted(tokens.items())


@overload
def special_token(source: SourceCheckpoint, key: str, default: str) -> str: ...
@overload
def special_token(source: SourceCheckpoint, key: str, default: None) -> str | None: ...
def special_token(source: SourceCheckpoint, key: str, default: str | None) -> str | None:
    """A special token's text from special_tokens_map.json, else tokenizer_config.json, else `default`."""
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        value = _token_text(source.json_file(name).get(key), None)
        if value:
            return value
    return default


def sentencepiece_tokenizer(
    source: SourceCheckpoint,
    *,
    add_bos: bool,
    add_eos: bool,
    pad_token: str | None,
    chat_template: str | None = None,
) -> Any:
    path = source.find("tokenizer.model")
    if path is None:
        raise ImportRefused(
            f"{source.folder}: tokenizer.model is missing (pass --base FOLDER holding the tokenizer)"
        )
    fast = fast_tokenizer_from_sentencepiece(
        path,
        add_bos=add_bos,
        add_eos=add_eos,
        bos_token=special_token(source, "bos_token", "<s>"),
        eos_token=special_token(source, "eos_token", "</s>"),
        unk_token=special_token(source, "unk_token", "<unk>"),
        pad_token=pad_token,
        extra_tokens=added_tokens(source),
        chat_template=chat_template,
    )
    verify_against_sentencepiece(path, fast)
    return fast


def tokenizer_json_or_sentencepiece(source: SourceCheckpoint, *, pad_token: str | None = None) -> Any:
    """A shipped tokenizer.json as is (it is data); else the sentencepiece model, framed as its
    config says."""
    from transformers import PreTrainedTokenizerFast

    path = source.find("tokenizer.json")
    config = source.json_file("tokenizer_config.json")
    if path is None:
        return sentencepiece_tokenizer(
            source,
            add_bos=config.get("add_bos_token", True),
            add_eos=config.get("add_eos_token", False),
            pad_token=pad_token or special_token(source, "pad_token", None),
            chat_template=config.get("chat_template"),
        )
    try:
        fast = PreTrainedTokenizerFast.from_pretrained(path.parent, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ImportRefused(f"{path}: cannot load the tokenizer ({e})") from e
    if pad_token and fast.pad_token is None:
        fast.pad_token = pad_token
    return fast
