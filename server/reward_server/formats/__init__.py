"""Prompt formats, one module each, selected by `reward { prompt_format }` in config.pbtxt."""

from __future__ import annotations

from typing import Any

from reward_server.formats.base import PromptFormat
from reward_server.formats.chat_template import ChatTemplateFormat
from reward_server.formats.internlm2 import InternLM2Format
from reward_server.formats.llama2 import Llama2Format
from reward_server.formats.ziya import ZiyaFormat

FORMATS: dict[str, type] = {
    cls.name: cls for cls in (ChatTemplateFormat, InternLM2Format, ZiyaFormat, Llama2Format)
}


def make_format(name: str, tokenizer: Any, reward_token_id: int | None = None) -> PromptFormat:
    return FORMATS[name](tokenizer, reward_token_id)


__all__ = ["FORMATS", "PromptFormat", "make_format"]
