"""What a prompt format does: render a conversation to the text the model was trained on.

Tokenization is shared (encoding.InputEncoder): the rendered text is encoded without special tokens,
framed by the tokenizer's own special tokens when `add_special_tokens` is on, and followed by the
format's suffix (InternLM2's reward token). Truncation cuts the rendered text only, never the frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from reward_server.datatypes import Message


class PromptFormat(Protocol):
    name: str
    # Whether the tokenizer's BOS/EOS frame the ids when config.pbtxt does not say.
    default_add_special_tokens: bool
    # Ids after the rendered text, kept through truncation.
    suffix_ids: tuple[int, ...]

    def render(self, messages: Sequence[Message]) -> str:
        """The conversation as the model was trained to read it."""
