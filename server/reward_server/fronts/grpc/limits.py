"""The character limit per string field, which gRPC does not enforce by itself, and the tighter bounds on
the names a request gives (model, version). (Message size is gRPC's own `max_receive_message_length`:
RESOURCE_EXHAUSTED before the request is parsed; RPCs in flight are counted by the guard; items per
request are checked by the decoders, before anything is built, and again by the core.)"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

# A model name is at most 128 characters (repository/layout.py); anything much longer is refused before it
# is looked up, logged or echoed. A version is a positive 64-bit integer: at most 19 digits.
MAX_NAME_CHARS = 256
MAX_VERSION_CHARS = 19
# The top-level request fields that name a model or a version, in our API and in KServe v2's.
NAME_FIELDS = ("model", "name", "model_name")
VERSION_FIELDS = ("version", "model_version")


def named(message: Message) -> tuple[str, str]:
    """(model, version) that a request names, from its top-level NAME_FIELDS / VERSION_FIELDS; "" if none."""
    fields = message.DESCRIPTOR.fields_by_name

    def first(names: tuple[str, ...]) -> str:
        for name in names:
            field = fields.get(name)
            if field is not None and field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated:
                return getattr(message, name)
        return ""

    return first(NAME_FIELDS), first(VERSION_FIELDS)


def oversized_identifier(message: Message) -> str | None:
    """A description of the first top-level model or version name over its bound, or None. The
    description never quotes the name."""
    fields = message.DESCRIPTOR.fields_by_name
    for names, limit, why in (
        (NAME_FIELDS, MAX_NAME_CHARS, ""),
        (VERSION_FIELDS, MAX_VERSION_CHARS, " (a version is a positive integer)"),
    ):
        for name in names:
            field = fields.get(name)
            if field is None or field.type != FieldDescriptor.TYPE_STRING or field.is_repeated:
                continue
            length = len(getattr(message, name))
            if length > limit:
                return f"{name} has {length} characters; at most {limit} are allowed{why}"
    return None


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
