"""InternLM2-Reward: the chat template rendered as text, then the reward token.

`<s><|im_start|>user\\n...<|im_end|>\\n<|im_start|>assistant\\n...<|im_end|>\\n` + [reward_token_id]:
the reward token is appended to each input before any padding, and the head reads it.
"""

from __future__ import annotations

from typing import Any

from reward_server.errors import LoadError
from reward_server.formats.chat_template import ChatTemplateFormat


class InternLM2Format(ChatTemplateFormat):
    name = "internlm2"

    def __init__(self, tokenizer: Any, reward_token_id: int | None = None) -> None:
        super().__init__(tokenizer)
        if reward_token_id is None:
            raise LoadError("prompt_format 'internlm2' needs reward { reward_token_id } in config.pbtxt")
        self.suffix_ids = (reward_token_id,)
