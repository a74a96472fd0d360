"""Inputs -> token ids: prompt format, tokenizer, special-token frame, validation and truncation.

A small request is encoded on the event loop (`fits_inline`): handing it to a thread costs more than
tokenizing it, because the woken thread, and then the loop, each wait for the GIL (up to the 5 ms
switch interval while another thread computes). A large request goes to the encode pool, where the
tokenizer encodes its texts in parallel with the GIL released, so the loop is never held for long.

Special-token strings inside content are kept, escaped or refused by the model's
`special_tokens_in_content` (formats/special_tokens.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reward_server.datatypes import Candidates, Conversation, Encoded, Message, ScoreInput, Text, TokenIds
from reward_server.errors import InvalidArgument, LoadError
from reward_server.formats import PromptFormat
from reward_server.formats.special_tokens import ESCAPE, KEEP, REFUSE, ContentSpecialTokens

# Characters (or token ids) in one request up to which it is encoded on the event loop.
INLINE_ENCODE_CHARS = 4096
# What one message costs to render beyond its characters (the template's role markers), counted in
# `fits_inline`: 200,000 empty messages are no small request.
MESSAGE_CHARS = 16


def candidate_conversations(candidates: Candidates) -> tuple[Conversation, ...]:
    """The shared prompt followed by each response as the assistant's turn."""
    return tuple(
        Conversation(candidates.prompt + (Message("assistant", response),))
        for response in candidates.responses
    )


def special_token_frame(tokenizer: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ids the tokenizer puts before and after a text when it adds special tokens (e.g. BOS / EOS)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    framed = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(framed) - len(plain) + 1):
        if framed[start : start + len(plain)] == plain:
            return tuple(framed[:start]), tuple(framed[start + len(plain) :])
    raise LoadError("cannot tell which special tokens the tokenizer adds around a text")


@dataclass(frozen=True)
class InputEncoder:
    format: PromptFormat
    tokenizer: Any  # a transformers fast tokenizer
    vocab_size: int
    max_length: int
    truncation: bool
    truncation_side: str  # "left" keeps the end, where the score is read
    prefix_ids: tuple[int, ...] = ()
    suffix_ids: tuple[int, ...] = ()
    inline_chars: int = INLINE_ENCODE_CHARS
    special_tokens: ContentSpecialTokens | None = None  # None: keep (the tokenizer's own behaviour)
    _backend: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_length <= len(self.prefix_ids) + len(self.suffix_ids):
            raise LoadError(
                f"max_sequence_length {self.max_length} leaves no room for the text between "
                f"{len(self.prefix_ids)} prefix and {len(self.suffix_ids)} suffix tokens"
            )
        # The fast tokenizer's Rust tokenizer, called directly: the ids of tokenizer(texts,
        # add_special_tokens=False) without its Python overhead. A copy, with the truncation and padding
        # that tokenizer.json may carry switched off (transformers switches them off per call).
        backend = self.tokenizer.backend_tokenizer
        backend = type(backend).from_str(backend.to_str())
        backend.no_truncation()
        backend.no_padding()
        object.__setattr__(self, "_backend", backend)

    def fits_inline(self, inputs: Sequence[ScoreInput]) -> bool:
        """Whether the request is small enough to encode on the event loop (see the module docstring)."""
        chars = 0
        for item in inputs:
            if isinstance(item, Conversation):
                chars += sum(len(m.content) for m in item.messages) + MESSAGE_CHARS * len(item.messages)
            elif isinstance(item, Text):
                chars += len(item.text)
            else:
                chars += len(item.ids)
        return chars <= self.inline_chars

    def render(self, item: Conversation | Text) -> str:
        return self.format.render(item.messages) if isinstance(item, Conversation) else item.text

    def _text(self, index: int, item: Conversation | Text) -> tuple[str, bool]:
        """The text to encode, and whether the plain tokenizer encodes it (special tokens escaped)."""
        policy = self.special_tokens
        try:
            if policy is None or policy.mode == KEEP:
                return self.render(item), False
            if isinstance(item, Text):  # pre-rendered by the caller: all of it is content
                contents = [("the text", item.text)]
                if policy.mode == REFUSE:
                    policy.refuse(contents)
                return item.text, policy.mode == ESCAPE and policy.needs_escape(contents)
            contents = [(f"message {number}", m.content) for number, m in enumerate(item.messages)]
            if policy.mode == REFUSE:
                policy.refuse(contents)
            elif policy.needs_escape(contents):
                return policy.render_escaped(self.format.render, item.messages), True
            return self.format.render(item.messages), False
        except InvalidArgument as e:  # the template's bounds and refusals, the special-token policy
            raise InvalidArgument(f"input {index}: {e}") from None

    def _token_ids(self, texts: list[str], parallel: bool) -> list[list[int]]:
        if parallel:  # releases the GIL, encodes the texts on the tokenizer's own threads
            return [e.ids for e in self._backend.encode_batch(texts, add_special_tokens=False)]
        # Keeps the GIL: on the event loop, releasing it would mean waiting to get it back.
        return [self._backend.encode(text, add_special_tokens=False).ids for text in texts]

    def encode(self, inputs: Sequence[ScoreInput], parallel: bool = True) -> list[Encoded]:
        texts = [
            self._text(index, item) for index, item in enumerate(inputs) if not isinstance(item, TokenIds)
        ]
        plain = [text for text, escaped in texts if escaped]
        if plain:  # rare: only content holding special-token strings, in escape mode
            assert self.special_tokens is not None
            plain_ids = iter(self.special_tokens.encode_plain(plain, parallel))
            normal_ids = iter(self._token_ids([text for text, escaped in texts if not escaped], parallel))
            bodies = iter([next(plain_ids) if escaped else next(normal_ids) for _, escaped in texts])
        else:
            bodies = iter(self._token_ids([text for text, _ in texts], parallel) if texts else ())
        out = []
        for index, item in enumerate(inputs):
            if isinstance(item, TokenIds):
                out.append(self._truncated(index, self._checked_ids(index, item.ids), (), ()))
            else:
                out.append(self._truncated(index, tuple(next(bodies)), self.prefix_ids, self.suffix_ids))
        return out

    def _checked_ids(self, index: int, ids: tuple[int, ...]) -> tuple[int, ...]:
        for token in ids:
            if not 0 <= token < self.vocab_size:
                raise InvalidArgument(
                    f"input {index}: token id {token} is outside the vocabulary (0..{self.vocab_size - 1})"
                )
        return ids

    def _truncated(
        self, index: int, body: tuple[int, ...], prefix: tuple[int, ...], suffix: tuple[int, ...]
    ) -> Encoded:
        total = len(prefix) + len(body) + len(suffix)
        if not total:
            raise InvalidArgument(f"input {index} has no tokens to score")
        excess = total - self.max_length
        if excess <= 0:
            return Encoded(prefix + body + suffix, 0)
        if not self.truncation:
            raise InvalidArgument(
                f"input {index} has {total} tokens, more than the model's max_sequence_length "
                f"{self.max_length}, and truncation is disabled"
            )
        kept = body[excess:] if self.truncation_side == "left" else body[: len(body) - excess]
        return Encoded(prefix + kept + suffix, excess)
