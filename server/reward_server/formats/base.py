"""What a prompt format does: render messages to text, and text to token ids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..datatypes import Message


class PromptFormat(Protocol):
    name: str

    def render(self, messages: Sequence[Message]) -> str:
        """The conversation as the model was trained to read it."""

    def encode_texts(self, texts: list[str]) -> list[list[int]]:
        """Token ids of rendered texts, in one batched tokenizer call."""
