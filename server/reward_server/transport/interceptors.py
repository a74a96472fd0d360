"""The bearer-token auth interceptor (the other per-call checks are the guard, transport/guard.py)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from ..errors import PermissionDenied, RewardServerError, Unauthenticated

HEALTH_PREFIX = "/grpc.health.v1.Health/"

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def metadata_value(metadata: Any, key: str) -> str | None:
    """The value of `key` in a call's invocation metadata (pairs, or None), or None."""
    for k, v in metadata or ():
        if k == key:
            return v
    return None


def _wrap_unary(handler: grpc.RpcMethodHandler, behavior: Callable[..., Awaitable[Any]]) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires `authorization: Bearer <token>`: none -> UNAUTHENTICATED, wrong -> PERMISSION_DENIED.
    Health checks stay open so that load balancers and Kubernetes probes need no secret."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation: Continuation,
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method.startswith(HEALTH_PREFIX):
            return await continuation(details)
        presented = metadata_value(details.invocation_metadata, "authorization")
        if presented is None:
            error: RewardServerError = Unauthenticated("missing 'authorization: Bearer <token>' metadata")
        elif not hmac.compare_digest(presented.encode(), self._expected):
            error = PermissionDenied("the bearer token is not valid")
        else:
            return await continuation(details)
        handler = await continuation(details)
        if handler is None:
            return None

        async def refuse(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(error.code, str(error))

        if handler.unary_unary is not None:
            return _wrap_unary(handler, refuse)
        # Server reflection, the only streaming service besides health.
        return grpc.stream_stream_rpc_method_handler(
            refuse,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
