"""Llama-2 chat as the Starling-RM card writes it: `<s>[INST] {user} </s> [/INST] {assistant}</s>`.

The tokenizer adds its own BOS in front, so ids begin with two BOS tokens, as the card's do (this is
what the model was trained on; do not "fix" it). Each user/assistant turn repeats the pattern; a
system message goes inside the first turn as Llama-2's `<<SYS>>\\n{system}\\n<</SYS>>\\n\\n`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reward_server.datatypes import Message


class Llama2Format:
    name = "llama2"
    default_add_special_tokens = True  # the Llama-2 tokenizer adds BOS
    suffix_ids: tuple[int, ...] = ()

    def __init__(self, tokenizer: Any, reward_token_id: int | None = None) -> None:
        pass

    def render(self, messages: Sequence[Message]) -> str:
        parts: list[str] = []
        system = ""
        for m in messages:
            if m.role == "system":
                system += f"<<SYS>>\n{m.content}\n<</SYS>>\n\n"
            elif m.role == "user":
                parts.append(f"<s>[INST] {system}{m.content} </s> [/INST]")
                system = ""
            else:
                parts.append(f" {m.content}</s>")
        return "".join(parts)
