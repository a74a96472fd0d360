"""Server interceptors: bearer-token auth, and error mapping with an access log and metrics per request."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from ..errors import PermissionDenied, RewardServerError, Unauthenticated
from ..metrics import ServerMetrics
from ..request_record import RequestRecord, current_request

log = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"
REWARD_PREFIX = "/reward_api.v1.RewardService/"
REQUEST_ID_KEY = "x-request-id"

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def _metadata_value(details: grpc.HandlerCallDetails, key: str) -> str | None:
    for k, v in details.invocation_metadata or ():
        if k == key:
            return v
    return None


def _wrap_unary(handler: grpc.RpcMethodHandler, behavior: Callable[..., Awaitable[Any]]) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps RewardServerError to its status; anything else to INTERNAL, traceback logged once.
    Logs one debug line per request with its id (from `x-request-id`, or a new one sent back), model,
    version, items, tokens, queue and compute time; counts RewardService requests in the metrics."""

    def __init__(self, metrics: ServerMetrics | None = None) -> None:
        self._metrics = metrics

    async def intercept_service(self, continuation: Continuation,
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        behavior = handler.unary_unary
        method = details.method
        request_id = _metadata_value(details, REQUEST_ID_KEY) or uuid.uuid4().hex[:16]
        metrics = self._metrics if method.startswith(REWARD_PREFIX) else None

        async def mapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.monotonic()
            context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            record = RequestRecord(request_id, method.rsplit("/", 1)[-1], model=getattr(request, "model", ""),
                                   version=getattr(request, "version", ""))
            current_request.set(record)
            if metrics:
                metrics.pending_requests.inc()
            code = grpc.StatusCode.OK
            try:
                return await behavior(request, context)
            except RewardServerError as e:
                code = e.code
                await context.abort(e.code, str(e))
            except (asyncio.CancelledError, grpc.aio.AbortError):
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("request %s to %s failed", request_id, method)
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})")
            finally:
                seconds = time.monotonic() - start
                if metrics:
                    metrics.pending_requests.dec()
                    metrics.request_done(*record.metric_labels(), record.method, code.name, seconds)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("request %s status=%s total_ms=%.1f", record.log_fields(), code.name, seconds * 1e3)

        return _wrap_unary(handler, mapped)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires `authorization: Bearer <token>`: none -> UNAUTHENTICATED, wrong -> PERMISSION_DENIED.
    Health checks stay open so that load balancers and Kubernetes probes need no secret."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation: Continuation,
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method.startswith(HEALTH_PREFIX):
            return await continuation(details)
        presented = _metadata_value(details, "authorization")
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
