"""Limits against abuse that gRPC does not enforce by itself: characters per string field and RPCs
in flight. (Message size is gRPC's own `max_receive_message_length`: RESOURCE_EXHAUSTED before the
request is parsed; items per request are checked by the core.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from ..errors import InvalidArgument, ResourceExhausted
from .interceptors import HEALTH_PREFIX, Continuation, _wrap_unary


def oversized_string(message: Message, max_chars: int, path: str = "") -> str | None:
    """A description of the first string field longer than `max_chars` characters, or None."""
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


class LimitsInterceptor(grpc.aio.ServerInterceptor):
    """Refuses a request with more than `max_concurrent_rpcs` others in flight (RESOURCE_EXHAUSTED,
    at once, nothing queued), and one with a string field over `max_chars` (INVALID_ARGUMENT).
    Health checks are neither counted nor refused, so probes keep working under load."""

    def __init__(self, max_concurrent_rpcs: int, max_chars: int) -> None:
        self._max_rpcs = max_concurrent_rpcs
        self._max_chars = max_chars
        self.in_flight = 0  # only touched on the server's event loop

    async def intercept_service(self, continuation: Continuation,
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None or details.method.startswith(HEALTH_PREFIX):
            return handler
        behavior: Callable[..., Awaitable[Any]] = handler.unary_unary

        async def limited(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if self.in_flight >= self._max_rpcs:
                raise ResourceExhausted(f"the server is handling {self.in_flight} requests, its limit "
                                        f"(--max-concurrent-rpcs); retry later or on another replica")
            self.in_flight += 1
            try:
                if isinstance(request, Message) and (found := oversized_string(request, self._max_chars)):
                    raise InvalidArgument(f"{found} (--max-chars-per-message)")
                return await behavior(request, context)
            finally:
                self.in_flight -= 1

        return _wrap_unary(handler, limited)
