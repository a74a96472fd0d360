"""The guard around every RewardService call: the RPC limit, the character limit, the request id and
record, error mapping to gRPC status, metrics and the access log.

It wraps the servicer's methods where they are registered instead of being a grpc.aio interceptor:
each interceptor costs every RPC an awaited Python call in gRPC's handler lookup plus a new method
handler (docs/performance.md has what that cost)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import grpc
import grpc.aio
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from ..errors import InvalidArgument, ResourceExhausted, RewardServerError
from ..metrics import ServerMetrics
from ..request_record import RequestRecord, current_request
from .interceptors import metadata_value
from .limits import oversized_string

log = logging.getLogger(__name__)

REQUEST_ID_KEY = "x-request-id"
Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class RequestIds:
    """Ids for requests that bring none: a random prefix per process (replicas differ) and a counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(4).hex()
        self._counter = itertools.count(1)

    def __call__(self, context: grpc.aio.ServicerContext) -> str:
        given = metadata_value(context.invocation_metadata(), REQUEST_ID_KEY)
        return given or f"{self._prefix}-{next(self._counter):x}"


class RequestGuard:
    """Refuses a call with `max_concurrent_rpcs` others in flight (RESOURCE_EXHAUSTED, at once, nothing
    queued) and one with a string field over `max_chars` characters (INVALID_ARGUMENT); maps
    RewardServerError to its status and anything else to INTERNAL (traceback logged once); sends the
    request id back (from `x-request-id`, or a new one); counts the call in the metrics; logs one DEBUG
    line per call with its model, version, items, tokens, queue and compute time."""

    def __init__(self, metrics: ServerMetrics, max_concurrent_rpcs: int, max_chars: int) -> None:
        self._metrics = metrics
        self._max_rpcs = max_concurrent_rpcs
        self._max_chars = max_chars
        self._request_id = RequestIds()
        self.in_flight = 0  # calls past the guard; only touched on the server's event loop
        self.last_arrival = float("-inf")  # time.monotonic() of the latest call, for the drain's quiet window

    def servicer(self, servicer: Any, service: ServiceDescriptor) -> SimpleNamespace:
        """An object with the servicer's methods of `service`, each wrapped, for add_*Servicer_to_server."""
        return SimpleNamespace(**{m.name: self.wrap(m.name, getattr(servicer, m.name)) for m in service.methods})

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = self.last_arrival = time.monotonic()
            request_id = self._request_id(context)
            context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            record = RequestRecord(request_id, method, model=getattr(request, "model", ""),
                                   version=getattr(request, "version", ""))
            current_request.set(record)
            self._metrics.pending_requests.inc()
            code = grpc.StatusCode.OK
            try:
                self._admit(request)
                self.in_flight += 1
                try:
                    return await behavior(request, context)
                finally:
                    self.in_flight -= 1
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
                self._metrics.pending_requests.dec()
                self._metrics.request_done(*record.metric_labels(), method, code.name, seconds)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("request %s status=%s total_ms=%.1f", record.log_fields(), code.name, seconds * 1e3)

        return guarded

    def _admit(self, request: Any) -> None:
        if self.in_flight >= self._max_rpcs:
            raise ResourceExhausted(f"the server is handling {self.in_flight} requests, its limit "
                                    f"(--max-concurrent-rpcs); retry later or on another replica")
        if isinstance(request, Message) and (found := oversized_string(request, self._max_chars)):
            raise InvalidArgument(f"{found} (--max-chars-per-message)")
