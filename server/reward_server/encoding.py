"""Inputs -> token ids: prompt format, tokenizer, validation and truncation. Runs off the event loop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .datatypes import Candidates, Conversation, Encoded, Message, ScoreInput, Text, TokenIds
from .errors import InvalidArgument
from .formats import PromptFormat


def candidate_conversations(candidates: Candidates) -> tuple[Conversation, ...]:
    """The shared prompt followed by each response as the assistant's turn."""
    return tuple(
        Conversation(candidates.prompt + (Message("assistant", response),)) for response in candidates.responses
    )


@dataclass(frozen=True)
class InputEncoder:
    format: PromptFormat
    vocab_size: int
    max_length: int
    truncation: bool
    truncation_side: str  # "left" keeps the end, where the score is read

    def encode(self, inputs: Sequence[ScoreInput]) -> list[Encoded]:
        texts: list[str] = []
        for item in inputs:
            if isinstance(item, Conversation):
                texts.append(self.format.render(item.messages))
            elif isinstance(item, Text):
                texts.append(item.text)
        encoded_texts = iter(self.format.encode_texts(texts))
        out = []
        for index, item in enumerate(inputs):
            if isinstance(item, TokenIds):
                ids = self._checked_ids(index, item.ids)
            else:
                ids = tuple(next(encoded_texts))
            out.append(self._truncated(index, ids))
        return out

    def _checked_ids(self, index: int, ids: tuple[int, ...]) -> tuple[int, ...]:
        for token in ids:
            if not 0 <= token < self.vocab_size:
                raise InvalidArgument(f"input {index}: token id {token} is outside the vocabulary (0..{self.vocab_size - 1})")
        return ids

    def _truncated(self, index: int, ids: tuple[int, ...]) -> Encoded:
        if not ids:
            raise InvalidArgument(f"input {index} has no tokens to score")
        excess = len(ids) - self.max_length
        if excess <= 0:
            return Encoded(ids, 0)
        if not self.truncation:
            raise InvalidArgument(
                f"input {index} has {len(ids)} tokens, more than the model's max_sequence_length "
                f"{self.max_length}, and truncation is disabled"
            )
        kept = ids[excess:] if self.truncation_side == "left" else ids[: self.max_length]
        return Encoded(kept, excess)
