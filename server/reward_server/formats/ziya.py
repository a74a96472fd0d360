"""Ziya-LLaMA-Reward: `Human:` + query + `\\n\\nAssistant:` + response, BOS/EOS from the tokenizer.

Multi-turn conversations continue the same pattern, turns separated by a blank line:
`Human:q1\\n\\nAssistant:r1\\n\\nHuman:q2\\n\\nAssistant:r2`. A system message, which the card does
not use, becomes a first paragraph: `{system}\\n\\nHuman:...`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reward_server.datatypes import Message

USER_PREFIX = "Human:"
ASSISTANT_PREFIX = "\n\nAssistant:"
TURN_SEPARATOR = "\n\n"


class ZiyaFormat:
    name = "ziya"
    default_add_special_tokens = True  # the card's LlamaTokenizer(add_eos_token=True) adds BOS and EOS
    suffix_ids: tuple[int, ...] = ()

    def __init__(self, tokenizer: Any, reward_token_id: int | None = None) -> None:
        pass

    def render(self, messages: Sequence[Message]) -> str:
        parts: list[str] = []
        for m in messages:
            if m.role == "system":
                parts.append(m.content + TURN_SEPARATOR)
            elif m.role == "user":
                if parts and not parts[-1].endswith(TURN_SEPARATOR):
                    parts.append(TURN_SEPARATOR)
                parts.append(USER_PREFIX + m.content)
            else:
                parts.append(ASSISTANT_PREFIX + m.content)
        return "".join(parts)
