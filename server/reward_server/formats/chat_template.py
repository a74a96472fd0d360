"""The tokenizer's own chat template (the default format).

The template writes the special tokens it wants (BOS and the like), so the rendered text is encoded
without adding any more: the same as transformers' `apply_chat_template(..., tokenize=True)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..datatypes import Message
from ..errors import LoadError


class ChatTemplateFormat:
    name = "chat_template"

    def __init__(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise LoadError("prompt_format 'chat_template' needs a chat_template in tokenizer_config.json")
        self._tokenizer = tokenizer

    def render(self, messages: Sequence[Message]) -> str:
        chat = [{"role": m.role, "content": m.content} for m in messages]
        return self._tokenizer.apply_chat_template(chat, tokenize=False)

    def encode_texts(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return self._tokenizer(texts, add_special_tokens=False)["input_ids"]
