"""The character limit (--max-chars-per-message) on the text of BYTES input tensors, as gRPC's guard
applies it to the string fields of RewardService: per text row (`sentences`) and per message content
(`messages`). Body size is aiohttp's client_max_size (413 while reading); items per request, the core's."""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..kserve.tensors import MESSAGES, SENTENCES, InferTensor


def oversized_text(tensors: Sequence[InferTensor], max_chars: int) -> str | None:
    """A description of the first text over `max_chars` characters, or None. Only rows with more bytes
    than the limit are decoded (a string has at least as many UTF-8 bytes as characters)."""
    for tensor in tensors:
        if tensor.name not in (SENTENCES, MESSAGES) or tensor.datatype != "BYTES":
            continue
        for row, value in enumerate(tensor.data.reshape(-1)):
            if not isinstance(value, bytes) or len(value) <= max_chars:
                continue
            text = value.decode("utf-8", "replace")
            if tensor.name == SENTENCES:
                if len(text) > max_chars:
                    return f"input {tensor.name!r} row {row} has {len(text)} characters; at most {max_chars} are allowed"
                continue
            try:
                messages = json.loads(text)
            except ValueError:
                continue  # not JSON: request_inputs says so
            for index, message in enumerate(messages if isinstance(messages, list) else ()):
                content = message.get("content") if isinstance(message, dict) else None
                if isinstance(content, str) and len(content) > max_chars:
                    return (f"input {tensor.name!r} row {row} message {index} has {len(content)} characters; "
                            f"at most {max_chars} are allowed")
    return None
