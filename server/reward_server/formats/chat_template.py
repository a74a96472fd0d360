"""The tokenizer's own chat template (the default format).

The template writes the special tokens it wants (BOS and the like), so by default nothing is added
around it: the same ids as transformers' `apply_chat_template(..., tokenize=True)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..datatypes import Message
from ..errors import LoadError


class ChatTemplateFormat:
    name = "chat_template"
    default_add_special_tokens = False
    suffix_ids: tuple[int, ...] = ()

    def __init__(self, tokenizer: Any, reward_token_id: int | None = None) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise LoadError(f"prompt_format {self.name!r} needs a chat_template in the tokenizer files")
        self._tokenizer = tokenizer

    def render(self, messages: Sequence[Message]) -> str:
        chat = [{"role": m.role, "content": m.content} for m in messages]
        return self._tokenizer.apply_chat_template(chat, tokenize=False)
