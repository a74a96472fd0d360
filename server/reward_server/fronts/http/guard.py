"""The guard around every HTTP request, the HTTP twin of fronts/grpc/guard.py: bearer-token auth (health
open), 503 while draining, the concurrency limit shared with gRPC, the request id, error mapping to
`{"error": ...}` with Triton's status, metrics and the access log.

It shares the gRPC guard's in-flight count and last-arrival time, so `--max-concurrent-rpcs` bounds both
protocols together and the drain in RewardServer.stop waits for HTTP requests as for RPCs."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import grpc
from aiohttp import web

from reward_server.core import RewardCore
from reward_server.errors import (
    PermissionDenied,
    ResourceExhausted,
    RewardServerError,
    Unauthenticated,
    Unavailable,
)
from reward_server.fronts.http.errors import error_response, grpc_code, http_status
from reward_server.metrics import ServerMetrics
from reward_server.request_record import RequestRecord, current_request

if TYPE_CHECKING:  # server.py imports this package: a runtime import would be a cycle
    from reward_server.fronts.grpc.guard import RequestGuard

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The request id travels as gRPC's `x-request-id` metadata key does (fronts/grpc/guard.py), as a header.
REQUEST_ID_KEY = "x-request-id"

# Routes any prober may call: no token, not counted, not refused while draining (readiness says so itself).
OPEN_ROUTES = frozenset({"ServerLive", "ServerReady", "ModelReady", "ModelReadyVersion"})
# Prefix of the method label in metrics and logs: the same counters as gRPC, told apart by method.
METHOD_PREFIX = "http:"


class HttpGuard:
    def __init__(
        self,
        core: RewardCore,
        guard: RequestGuard,
        metrics: ServerMetrics,
        auth_token: str | None,
        max_concurrent: int,
    ) -> None:
        self._core = core
        self._guard = guard
        self._metrics = metrics
        self._expected = f"Bearer {auth_token}".encode() if auth_token else None
        self._max_concurrent = max_concurrent
        self._prefix = os.urandom(4).hex()
        self._counter = itertools.count(1)

    def _request_id(self, request: web.Request) -> str:
        return request.headers.get(REQUEST_ID_KEY) or f"{self._prefix}-h{next(self._counter):x}"

    def _check_auth(self, request: web.Request) -> None:
        if self._expected is None:
            return
        presented = request.headers.get("Authorization")
        if presented is None:
            raise Unauthenticated("missing 'Authorization: Bearer <token>' header")
        if not hmac.compare_digest(presented.encode(), self._expected):
            raise PermissionDenied("the bearer token is not valid")

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name or "Unknown"
        if route in OPEN_ROUTES:
            return await handler(request)
        start = self._guard.last_arrival = time.monotonic()
        request_id = self._request_id(request)
        method = METHOD_PREFIX + route
        record = RequestRecord(
            request_id,
            method,
            model=request.match_info.get("model", ""),
            version=request.match_info.get("version", ""),
        )
        current_request.set(record)
        self._metrics.pending_requests.inc()
        code = grpc.StatusCode.OK
        try:
            response = await self._admitted(request, handler)
            code = grpc_code(response.status)
        except RewardServerError as e:
            code = e.code
            response = error_response(http_status(e.code), str(e))
        except (
            web.HTTPException
        ) as e:  # aiohttp's own: no such route (404), method (405), body too large (413)
            code = grpc_code(e.status)
            response = error_response(
                e.status, e.text or e.reason, {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
            )
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("request %s to %s failed", request_id, method)
            response = error_response(500, f"internal error (request id {request_id})")
        finally:
            seconds = time.monotonic() - start
            self._metrics.pending_requests.dec()
            self._metrics.request_done(*self._guard.labels(record), method, code.name, seconds)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("request %s status=%s total_ms=%.1f", record.log_fields(), code.name, seconds * 1e3)
        response.headers[REQUEST_ID_KEY] = request_id
        return response

    async def _admitted(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self._check_auth(request)
        if self._core.draining:
            raise Unavailable("server is shutting down")
        if self._guard.in_flight >= self._max_concurrent:
            raise ResourceExhausted(
                f"the server is handling {self._guard.in_flight} requests, its limit "
                f"(--max-concurrent-rpcs); retry later or on another replica"
            )
        self._guard.in_flight += 1
        try:
            return await handler(request)
        finally:
            self._guard.in_flight -= 1
