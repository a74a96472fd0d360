"""Framework messages -> the client's chats ({"role", "content": str} only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _content(content: Any, where: str) -> str:
    """A message's text: a string, None (an assistant turn with only tool calls) or text parts.

    Multimodal datasets write content as parts ([{"type": "text", "text": ...}, {"type": "image"}]); a
    text reward model reads the text parts only, so any other part is an error rather than dropped.
    """
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, Sequence):
        texts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            else:
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise ValueError(f"{where}: a text reward model reads text parts only, got a {kind!r} part")
        return "".join(texts)
    raise TypeError(
        f"{where}: message content must be a string or a list of text parts, got {type(content).__name__}"
    )


def to_messages(messages: Any, where: str) -> list[dict[str, str]]:
    """A framework's message list as plain {"role", "content"} dicts.

    Extra keys such as tool_calls are dropped.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError(
            f"{where}: expected a list of {{'role', 'content'}} messages, got {type(messages).__name__}"
        )
    out = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise TypeError(f"{where}[{index}]: a message is a mapping with 'role' and 'content'")
        out.append(
            {"role": str(message["role"]), "content": _content(message.get("content"), f"{where}[{index}]")}
        )
    return out


def is_conversational(value: Any) -> bool:
    """TRL's test (trl.data_utils.is_conversational): a list whose items are role/content mappings."""
    return (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and (len(value) == 0 or isinstance(value[0], Mapping))
    )
