"""Special-token strings inside message content: keep, escape as plain text, or refuse.

The tokenizer splits every special token's string out of the text it encodes, wherever it stands, so
a response containing `<|im_end|>\\n<|im_start|>user\\n...` is encoded with the real special ids: it
forges a second turn, and scores like one. That is what the model cards' own code does, so it stays
the default (`keep`). `reward { special_tokens_in_content }` in config.pbtxt can close the route:

- `escape`: a special token's string in content is encoded as plain text, the way the tokenizer
  encodes any text without special tokens; the prompt format's own special tokens keep their ids.
  Content without special-token strings gets exactly the `keep` ids.
- `refuse`: such an input is INVALID_ARGUMENT, naming the message and the token.

A `text` input is pre-rendered by the caller, so the whole string counts as content: `escape`
encodes all of it as plain text (a special token then only comes from the frame: add_special_tokens,
the reward token), `refuse` refuses it if it holds any special-token string. `token_ids` inputs are
taken as given in every mode: the caller chose each id.

How `escape` keeps the format's own special tokens while making the content's plain: the content's
special strings are swapped for content sentinels before rendering; in the rendered text, every
special string left is the format's own and is swapped for a template sentinel; the content
sentinels are swapped back. The text is then encoded by a copy of the tokenizer in which each
special token's string is replaced by its template sentinel (same flags, so the tokenizer splits the
text exactly where it split it before), and the sentinels' ids are mapped back to the special ids.
Sentinels are made of Unicode noncharacters (U+FDD0..U+FDEF), which are reserved for a program's
internal use; content holding one is refused in `escape` mode, so it cannot forge a sentinel.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from reward_server.datatypes import Message
from reward_server.errors import InvalidArgument, LoadError

KEEP, ESCAPE, REFUSE = "keep", "escape", "refuse"
MODES = (KEEP, ESCAPE, REFUSE)

_MARK = "\ufdd0"
_TEMPLATE_KIND, _CONTENT_KIND = "\ufdd1", "\ufdd2"
_NONCHARACTERS = re.compile("[\ufdd0-\ufdef]")


def _sentinel(kind: str, token_id: int) -> str:
    digits = "".join(chr(0xFDE0 + int(d, 16)) for d in f"{token_id:x}")
    return _MARK + kind + digits + _MARK


def _alternation(strings: Sequence[str]) -> re.Pattern[str]:
    # Longest first: the tokenizer takes the longest special token at a position.
    return re.compile("|".join(re.escape(s) for s in sorted(strings, key=len, reverse=True)))


@dataclass(frozen=True)
class ContentSpecialTokens:
    """One model's policy for special-token strings in content, built at load."""

    mode: str
    tokens: tuple[str, ...]  # the special tokens' strings
    _pattern: re.Pattern[str] | None = field(default=None, repr=False)
    _plain: Any = field(default=None, repr=False)  # escape: the tokenizer copy with template sentinels
    _plain_ids: dict[int, int] = field(default_factory=dict, repr=False)  # its added ids -> the original ids
    _to_content: dict[str, str] = field(default_factory=dict, repr=False)
    _to_template: dict[str, str] = field(default_factory=dict, repr=False)
    _from_content: dict[str, str] = field(default_factory=dict, repr=False)
    _content_pattern: re.Pattern[str] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, mode: str, backend: Any) -> ContentSpecialTokens:
        """`backend`: the model's Rust tokenizer (tokenizers.Tokenizer)."""
        if mode not in MODES:
            raise LoadError(f"special_tokens_in_content {mode!r}: expected one of {', '.join(MODES)}")
        special = {
            i: t.content for i, t in backend.get_added_tokens_decoder().items() if t.special and t.content
        }
        tokens = tuple(sorted(set(special.values())))
        if mode == KEEP or not tokens:
            return cls(KEEP if not tokens else mode, tokens)
        pattern = _alternation(tokens)
        if mode == REFUSE:
            return cls(mode, tokens, pattern)
        to_content = {s: _sentinel(_CONTENT_KIND, i) for i, s in special.items()}
        to_template = {s: _sentinel(_TEMPLATE_KIND, i) for i, s in special.items()}
        plain, plain_ids = _plain_tokenizer(backend, special)
        return cls(
            mode,
            tokens,
            pattern,
            plain,
            plain_ids,
            to_content,
            to_template,
            {v: k for k, v in to_content.items()},
            _alternation(list(to_content.values())),
        )

    def first_in(self, text: str) -> str | None:
        """The first special token's string in `text`, or None."""
        if self._pattern is None:
            return None
        match = self._pattern.search(text)
        return match.group() if match else None

    def refuse(self, contents: Iterable[tuple[str, str]]) -> None:
        """INVALID_ARGUMENT naming the first content holding a special token; `contents`: (name, text)
        pairs such as ("message 1", "...")."""
        for name, content in contents:
            token = self.first_in(content)
            if token is not None:
                raise InvalidArgument(
                    f"{name} contains the special token {token!r}, which this model refuses "
                    f"in content (special_tokens_in_content: REFUSE)"
                )

    def needs_escape(self, contents: Iterable[tuple[str, str]]) -> bool:
        """Whether any content holds a special token's string (escape mode); content holding one of the
        noncharacters the sentinels are made of is refused."""
        found = False
        for name, content in contents:
            if _NONCHARACTERS.search(content):
                raise InvalidArgument(
                    f"{name} contains a Unicode noncharacter (U+FDD0..U+FDEF), which this "
                    f"model reserves for escaping special tokens"
                )
            found = found or self.first_in(content) is not None
        return found

    def render_escaped(self, render: Callable[[Sequence[Message]], str], messages: Sequence[Message]) -> str:
        """The rendered text for the plain tokenizer: the format's special tokens as template sentinels,
        the content's special-token strings as they were (plain text to that tokenizer)."""
        assert self._pattern is not None and self._content_pattern is not None
        pattern, content_pattern = self._pattern, self._content_pattern
        escaped = [
            Message(m.role, pattern.sub(lambda t: self._to_content[t.group()], m.content)) for m in messages
        ]
        text = pattern.sub(lambda t: self._to_template[t.group()], render(escaped))
        return content_pattern.sub(lambda t: self._from_content[t.group()], text)

    def encode_plain(self, texts: list[str], parallel: bool) -> list[list[int]]:
        """Ids of texts from `render_escaped` (or wholly plain texts), special ids restored."""
        if parallel:
            encodings = self._plain.encode_batch(texts, add_special_tokens=False)
        else:
            encodings = [self._plain.encode(text, add_special_tokens=False) for text in texts]
        mapped = self._plain_ids
        return [[mapped.get(i, i) for i in e.ids] for e in encodings]


def _plain_tokenizer(backend: Any, special: dict[int, str]) -> tuple[Any, dict[int, int]]:
    """A copy of `backend` whose special tokens are matched on their template sentinels instead of
    their strings, and a map from the copy's added-token ids back to the original ids."""
    data = json.loads(backend.to_str())
    original = {}
    for token in data.get("added_tokens", []):
        if token["id"] in special:
            token["content"] = _sentinel(_TEMPLATE_KIND, token["id"])
        original[token["content"]] = token["id"]
    plain = type(backend).from_str(json.dumps(data))
    plain.no_truncation()
    plain.no_padding()
    model_size = plain.get_vocab_size(with_added_tokens=False)
    ids = {}
    for content, token_id in original.items():
        got = plain.token_to_id(content)
        if got is None:
            raise LoadError(
                f"special_tokens_in_content ESCAPE: the tokenizer copy lost the added token {content!r}"
            )
        if got != token_id:
            if got < model_size:  # would be confused with an id the model itself produces
                raise LoadError(
                    "special_tokens_in_content ESCAPE: cannot map this tokenizer's special tokens"
                )
            ids[got] = token_id
    for content in special.values():  # the guarantee: a special string alone never encodes to a special id
        encoded = [ids.get(i, i) for i in plain.encode(content, add_special_tokens=False).ids]
        if any(i in special for i in encoded):
            raise LoadError(
                f"special_tokens_in_content ESCAPE: this tokenizer encodes the plain text {content!r} "
                f"to a special id"
            )
    return plain, ids
