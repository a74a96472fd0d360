"""The character limit per string field, which gRPC does not enforce by itself. (Message size is gRPC's
own `max_receive_message_length`: RESOURCE_EXHAUSTED before the request is parsed; RPCs in flight are
counted by the guard; items per request are checked by the core.)"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message


def oversized_string(message: Message, max_chars: int, path: str = "") -> str | None:
    """A description of the first string field longer than `max_chars` characters, or None."""
    if not path and message.ByteSize() <= max_chars:
        return None  # a string has at least as many UTF-8 bytes as characters: none can be over
    for field, value in message.ListFields():
        name = f"{path}.{field.name}" if path else field.name
        items = list(enumerate(value)) if field.is_repeated else [(None, value)]
        for index, item in items:
            where = name if index is None else f"{name}[{index}]"
            if field.type == FieldDescriptor.TYPE_STRING and len(item) > max_chars:
                return f"{where} has {len(item)} characters; at most {max_chars} are allowed"
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                found = oversized_string(item, max_chars, where)
                if found:
                    return found
    return None
