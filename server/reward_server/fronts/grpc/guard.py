"""The guard around every call of a protobuf service we serve (all but health): the bearer token, the
RPC limit, parsing the request bytes (a message that does not parse is INVALID_ARGUMENT "malformed
request"), the bounds on names and characters, the request id and record, error mapping to gRPC
status, metrics and the access log.

It registers the service itself, as a generic handler that takes the request as bytes, instead of
being a grpc.aio interceptor over the generated handlers: gRPC would otherwise parse the request
before any of our code runs (so before the token is checked) and answer UNKNOWN, with a traceback in
the log, to bytes that do not parse; and each interceptor costs every RPC an awaited Python call in
gRPC's handler lookup plus a new method handler (docs/performance.md has what that cost).

Large requests are parsed and decoded on a thread of the guard's own, so that one client's
300,000-item request does not hold the event loop (and every other client, health checks included)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from reward_server.errors import InvalidArgument, ResourceExhausted, RewardServerError
from reward_server.fronts.grpc.auth import BearerToken, metadata_value
from reward_server.fronts.grpc.limits import named, oversized_identifier, oversized_string
from reward_server.metrics import ServerMetrics
from reward_server.request_record import RequestRecord, current_request
from reward_server.runtime.memory import AllocatorTrim

log = logging.getLogger(__name__)

REQUEST_ID_KEY = "x-request-id"
Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
# A streaming method's behaviour: (decoded requests, context) -> responses (an async generator).
StreamBehavior = Callable[[AsyncIterable[Any], grpc.aio.ServicerContext], AsyncIterable[Any]]
# A method's structural decoding: the parsed protobuf request -> what its behaviour takes (frozen
# dataclasses), raising InvalidArgument. Cheap limits (item counts) come first in it.
Decoder = Callable[[Any], Any]

# Requests up to this many bytes are parsed and decoded on the event loop: a thread hop costs more than
# that work. Larger ones (up to tens of ms of work per 64 KiB of tiny items) go to the decode threads.
INLINE_DECODE_BYTES = 64 * 1024
# Threads that parse and decode large requests: at most this many such requests use CPU for it at once;
# more wait their turn without holding the event loop. (A module constant rather than a setting.)
DECODE_THREADS = 2
# Status details carry at most this many characters: gRPC refuses trailing metadata over 16 KiB, and no
# message should echo a client's megabytes back.
MAX_DETAILS_CHARS = 1024
# At most one log line per this many seconds about requests that do not parse: a client sending
# garbage must not be able to fill the log.
MALFORMED_LOG_INTERVAL_S = 10.0
MALFORMED = "malformed request: the message does not parse as {}"


class RequestIds:
    """Ids for requests that bring none: a random prefix per process (replicas differ) and a counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(4).hex()
        self._counter = itertools.count(1)

    def __call__(self, context: grpc.aio.ServicerContext) -> str:
        given = metadata_value(context.invocation_metadata(), REQUEST_ID_KEY)
        return given or f"{self._prefix}-{next(self._counter):x}"


def bounded(text: str, limit: int = MAX_DETAILS_CHARS) -> str:
    """`text` cut to `limit` characters, saying how much was cut."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


class ThrottledLog:
    """At most one line per `interval_s`, with the count of the events since the last line."""

    def __init__(self, logger: logging.Logger, interval_s: float) -> None:
        self._log = logger
        self._interval = interval_s
        self._next = float("-inf")
        self._count = 0

    def event(self, message: str, *args: object) -> None:
        self._count += 1
        now = time.monotonic()
        if now < self._next:
            return
        self._log.warning("%d in the last %.0f s: " + message, self._count, self._interval, *args)
        self._count = 0
        self._next = now + self._interval


def status_of(error: BaseException) -> grpc.StatusCode:
    """The status a call ending with `error` gets
    (CANCELLED: the client went away or the call was aborted)."""
    if isinstance(error, RewardServerError):
        return error.code
    if isinstance(error, (asyncio.CancelledError, grpc.aio.AbortError)) or not isinstance(error, Exception):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.INTERNAL


def _serialize(response: Message) -> bytes:
    return response.SerializeToString()


@dataclass(frozen=True)
class GuardedMethod:
    """One method as the guard serves it: its name, request class and how its request is decoded."""

    name: str
    request_class: type[Message]
    decode: Decoder | None


class RequestGuard:
    """Refuses a call without the bearer token `auth_token` (when set; UNAUTHENTICATED / PERMISSION_DENIED,
    before anything else), one with `max_concurrent_rpcs` others in flight (RESOURCE_EXHAUSTED, at once,
    nothing queued), one whose bytes do not parse, whose model or version name is over its bound, or with a
    string field over `max_chars` characters (INVALID_ARGUMENT); maps RewardServerError to its status and
    anything else to INTERNAL (traceback logged once); sends the request id back (from `x-request-id`, or a
    new one); counts the call in the metrics; logs one DEBUG line per call with its model, version, items,
    tokens, queue and compute time.

    `known_model` says whether a name is one of the server's models: a call refused before its model was
    resolved is counted under that name if so, else under "" (client-chosen names add no series)."""

    def __init__(
        self,
        metrics: ServerMetrics,
        max_concurrent_rpcs: int,
        max_chars: int,
        known_model: Callable[[str], bool] = lambda name: False,
        auth_token: str | None = None,
    ) -> None:
        self._metrics = metrics
        self._token = BearerToken(auth_token) if auth_token else None
        self._max_rpcs = max_concurrent_rpcs
        self._max_chars = max_chars
        self._known_model = known_model
        self._request_id = RequestIds()
        self._decode_pool = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="decode")
        self._malformed = ThrottledLog(log, MALFORMED_LOG_INTERVAL_S)
        self._trim = AllocatorTrim()
        self.in_flight = 0  # calls past the guard; only touched on the server's event loop
        self.last_arrival = float("-inf")  # time.monotonic() of the latest call, for the drain's quiet window

    def add_service(
        self,
        server: grpc.aio.Server,
        service: ServiceDescriptor,
        servicer: object,
        decoders: Mapping[str, Decoder] | None = None,
    ) -> None:
        """Serve every method of `service` with `servicer`'s method of the same name, guarded: unary-unary
        and stream-stream methods (each message of the stream parsed and checked as a unary request is).
        `decoders` maps a method's name to its decoder; its behaviour then takes the decoded value instead
        of the protobuf request."""
        decoders = decoders or {}
        unknown = set(decoders) - {m.name for m in service.methods}
        if unknown:
            raise ValueError(f"decoders for methods {sorted(unknown)} that {service.full_name} does not have")
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for m in service.methods:
            method = GuardedMethod(
                m.name, message_factory.GetMessageClass(m.input_type), decoders.get(m.name)
            )
            behavior = getattr(servicer, m.name)
            # Requests as bytes (parsed by the guard, see the module docstring).
            if not m.client_streaming and not m.server_streaming:
                handlers[m.name] = grpc.unary_unary_rpc_method_handler(
                    self.wrap(method, behavior), request_deserializer=None, response_serializer=_serialize
                )
            elif m.client_streaming and m.server_streaming:
                handlers[m.name] = grpc.stream_stream_rpc_method_handler(
                    self.wrap_stream(method, behavior),
                    request_deserializer=None,
                    response_serializer=_serialize,
                )
            else:
                raise ValueError(
                    f"{service.full_name}.{m.name}: the guard serves unary and bidirectional methods"
                )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))

    def close(self) -> None:
        self._decode_pool.shutdown(wait=False, cancel_futures=True)

    def wrap(
        self, method: GuardedMethod, behavior: Behavior
    ) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Any]]:
        async def guarded(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            record, start = self._begin(method, context)
            code = grpc.StatusCode.OK
            try:
                self._admit(context)
                self.in_flight += 1
                try:
                    return await behavior(await self._decoded(method, raw, record), context)
                finally:
                    self.in_flight -= 1
            except BaseException as e:
                code = status_of(e)
                await self._refuse(e, context, record)
            finally:
                self._end(method, record, start, code, large=len(raw) > INLINE_DECODE_BYTES)

        return guarded

    def wrap_stream(
        self, method: GuardedMethod, behavior: StreamBehavior
    ) -> Callable[[AsyncIterable[bytes], grpc.aio.ServicerContext], AsyncIterator[Any]]:
        async def guarded(
            raw_requests: AsyncIterable[bytes], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            record, start = self._begin(method, context)
            code = grpc.StatusCode.OK
            large = False
            try:
                self._admit(context)
                self.in_flight += 1
                try:

                    async def requests() -> AsyncIterator[Any]:
                        nonlocal large
                        async for raw in raw_requests:
                            large = large or len(raw) > INLINE_DECODE_BYTES
                            yield await self._decoded(method, raw, record)

                    async for response in behavior(requests(), context):
                        yield response
                finally:
                    self.in_flight -= 1
            except BaseException as e:
                code = status_of(e)
                await self._refuse(e, context, record)
            finally:
                self._end(method, record, start, code, large)

        return guarded

    def _begin(self, method: GuardedMethod, context: grpc.aio.ServicerContext) -> tuple[RequestRecord, float]:
        start = self.last_arrival = time.monotonic()
        request_id = self._request_id(context)
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        record = RequestRecord(request_id, method.name)
        current_request.set(record)
        self._metrics.pending_requests.inc()
        return record, start

    @staticmethod
    async def _refuse(error: BaseException, context: grpc.aio.ServicerContext, record: RequestRecord) -> None:
        """Answers `error` with its status (abort raises), or re-raises cancellation and aborts. Anything
        but a RewardServerError is a bug: INTERNAL, with its traceback logged once."""
        if isinstance(error, RewardServerError):
            await context.abort(error.code, bounded(str(error)))
        if status_of(error) != grpc.StatusCode.INTERNAL:
            raise error
        log.error("request %s to %s failed", record.request_id, record.method, exc_info=error)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {record.request_id})")

    def _end(
        self, method: GuardedMethod, record: RequestRecord, start: float, code: grpc.StatusCode, large: bool
    ) -> None:
        seconds = time.monotonic() - start
        self._metrics.pending_requests.dec()
        self._metrics.request_done(*self.labels(record), method.name, code.name, seconds)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("request %s status=%s total_ms=%.1f", record.log_fields(), code.name, seconds * 1e3)
        if large:
            self._trim.after_large_request()

    async def _decoded(self, method: GuardedMethod, raw: bytes, record: RequestRecord) -> Any:
        if len(raw) <= INLINE_DECODE_BYTES:
            return self._decode(method, raw, record)
        return await asyncio.get_running_loop().run_in_executor(
            self._decode_pool, self._decode, method, raw, record
        )

    def _admit(self, context: grpc.aio.ServicerContext) -> None:
        if self._token is not None:
            self._token.check(context.invocation_metadata())
        if self.in_flight >= self._max_rpcs:
            raise ResourceExhausted(
                f"the server is handling {self.in_flight} requests, its limit "
                f"(--max-concurrent-rpcs); retry later or on another replica"
            )

    def _decode(self, method: GuardedMethod, raw: bytes, record: RequestRecord) -> Any:
        """Parse, check the bounds, decode: cheap checks first. Runs on the loop or on a decode thread."""
        try:
            request = method.request_class.FromString(raw)
        except (DecodeError, RecursionError, ValueError):
            # No detail of the parser's (it names our classes, and the bytes are the client's): a short,
            # throttled line for the operator, a fixed message for the client.
            self._malformed.event(
                "refused malformed requests (latest: %s, %d bytes, request id %s)",
                method.name,
                len(raw),
                record.request_id,
            )
            raise InvalidArgument(MALFORMED.format(method.request_class.DESCRIPTOR.full_name)) from None
        if found := oversized_identifier(request):
            raise InvalidArgument(found)
        record.model, record.version = named(request)
        decoded = method.decode(request) if method.decode is not None else request
        if found := oversized_string(request, self._max_chars):
            raise InvalidArgument(f"{found} (--max-chars-per-message)")
        return decoded

    def labels(self, record: RequestRecord) -> tuple[str, str]:
        """(model, version) of the call's metrics: those it was served by; for a call refused before that,
        the requested model if it is one of ours (no version), else ("", "")."""
        if record.resolved:
            return record.model, record.version
        return (record.model, "") if record.model and self._known_model(record.model) else ("", "")
