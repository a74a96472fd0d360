"""The tokenizer's own chat template (the default format).

The template writes the special tokens it wants (BOS and the like), so by default nothing is added
around it: the same ids as transformers' `apply_chat_template(..., tokenize=True)`. The template is
code from the model folder: it runs in a sandbox with a bound on work and output (sandbox.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reward_server.datatypes import Message
from reward_server.errors import LoadError
from reward_server.formats.sandbox import BoundedChatTemplate


class ChatTemplateFormat:
    name = "chat_template"
    default_add_special_tokens = False
    suffix_ids: tuple[int, ...] = ()

    def __init__(self, tokenizer: Any, reward_token_id: int | None = None) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise LoadError(f"prompt_format {self.name!r} needs a chat_template in the tokenizer files")
        # What apply_chat_template(chat, tokenize=False) renders, minus its per-call overhead (a third of
        # the cost of a short input): transformers' environment and variables, compiled once, bounded.
        self._template = BoundedChatTemplate(tokenizer.get_chat_template(), tokenizer.special_tokens_map)

    def render(self, messages: Sequence[Message]) -> str:
        return self._template.render([{"role": m.role, "content": m.content} for m in messages])
