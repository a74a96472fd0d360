"""Prompt formats, one module each, selected by `reward { prompt_format }` in config.pbtxt."""

from __future__ import annotations

from typing import Any

from .base import PromptFormat
from .chat_template import ChatTemplateFormat

FORMATS = {
    ChatTemplateFormat.name: ChatTemplateFormat,
}


def make_format(name: str, tokenizer: Any) -> PromptFormat:
    return FORMATS[name](tokenizer)


__all__ = ["FORMATS", "PromptFormat", "make_format"]
