"""Server lifecycle: build (load models, register services), serve, drain on SIGTERM, stop.

`build_server(settings)` returns the started server and its bound port (port 0 picks a free one).
Health (grpc.health.v1): "" and the RewardService are SERVING until a drain starts; each model's
name is SERVING while it has a ready (loaded and warmed up) version, updated on every load / unload;
READY_SERVICE_NAME is SERVING while the server is ready (RewardCore.ready, the rule KServe's ServerReady
follows too).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from reward_server.core import RewardCore
from reward_server.errors import RewardServerError
from reward_server.fronts.grpc.guard import RequestGuard
from reward_server.fronts.grpc.health_port import start_health_port
from reward_server.fronts.grpc.options import server_options
from reward_server.fronts.grpc.servicer import SERVICE, RewardServicer
from reward_server.fronts.grpc.tls import server_credentials
from reward_server.fronts.http import HttpFront, start_http
from reward_server.fronts.kserve import KServeCore
from reward_server.fronts.kserve.grpc_front import SERVICE_NAME as KSERVE_SERVICE_NAME
from reward_server.fronts.kserve.grpc_front import add_kserve_service
from reward_server.metrics import ServerMetrics
from reward_server.repository import ModelRepository, RepositoryPoller
from reward_server.repository.layout import scan_models
from reward_server.runtime.memory import FrozenHeap
from reward_server.settings import ServerSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

SERVICE_NAME = SERVICE.full_name
REFLECTION_SERVICE = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]
# "Send requests here": the Kubernetes readiness probe and the client's health watch ask for it. It is
# SERVING while RewardCore.ready() holds: not draining, and every model the repository requires has a
# ready version (ModelRepository: a model is required from its first ready version until it is unloaded
# by request or removed from the repository). A model that never loaded does not gate it: one that failed
# at a --no-strict start, or one being copied onto a shared volume, must not take every replica out.
READY_SERVICE_NAME = "reward.ready"


class StartupError(Exception):
    """The server refused to start (a model has no ready version in strict mode, the port is taken)."""


# How long no call may arrive before a draining server closes its port (see RewardServer.stop).
DRAIN_QUIET_S = 0.5

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class RewardServer:
    server: grpc.aio.Server
    port: int
    core: RewardCore
    repository: ModelRepository
    health: health.aio.HealthServicer
    encode_pool: ThreadPoolExecutor
    metrics: ServerMetrics
    guard: RequestGuard
    metrics_port: int | None = None
    poller: RepositoryPoller | None = None
    health_server: grpc.aio.Server | None = None  # --health-port: plaintext, health only
    health_port: int | None = None
    http: HttpFront | None = None  # --http-port: KServe v2 REST, same core, guard and drain

    async def stop(self, grace: float | None = None, quiet_s: float = DRAIN_QUIET_S) -> None:
        """NOT_SERVING and UNAVAILABLE for new requests at once; the requests in flight get at most
        `grace` seconds to finish, and the port stays open until no call has come for `quiet_s` (within
        the grace); then the port closes and the models are released."""
        self.core.draining = True
        await self.health.set("", _NOT_SERVING)
        await self.health.set(SERVICE_NAME, _NOT_SERVING)
        await _report_ready(self.health, self.metrics, False)
        for model in self.repository.list_models():
            await self.health.set(model.name, _NOT_SERVING)
        deadline = time.monotonic() + (grace or 0.0)
        # gRPC answers CANCELLED, which no client retries, to calls that reached the port but no handler
        # yet when the server stops (grpc/grpc#41785). So the port stays open, answering UNAVAILABLE, until
        # nothing is in flight and no call came for quiet_s: clients that watch health have heard
        # NOT_SERVING by then and send elsewhere.
        while time.monotonic() < deadline and (
            self.guard.in_flight or time.monotonic() - self.guard.last_arrival < quiet_s
        ):
            await asyncio.sleep(0.02)
        if self.poller is not None:
            await asyncio.to_thread(self.poller.stop)
        await self.server.stop(max(0.0, deadline - time.monotonic()))
        if self.http is not None:
            await self.http.stop()
        if self.health_server is not None:
            await self.health_server.stop(0)
        await asyncio.to_thread(self.repository.close)
        self.encode_pool.shutdown(wait=False)
        self.guard.close()
        self.metrics.close()


async def _report_ready(
    health_servicer: health.aio.HealthServicer, metrics: ServerMetrics, ready: bool
) -> None:
    """Server readiness, wherever it is reported: the READY_SERVICE_NAME health name and the
    reward_server_ready gauge say the same."""
    metrics.set_ready(ready)
    await health_servicer.set(READY_SERVICE_NAME, _SERVING if ready else _NOT_SERVING)


class _HealthUpdater:
    """Called by the repository (on any thread) when a model's state changes: sets its health and the
    server's readiness, and has the frozen heap (runtime/memory.py) follow the change."""

    def __init__(
        self,
        health_servicer: health.aio.HealthServicer,
        metrics: ServerMetrics,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._health = health_servicer
        self._metrics = metrics
        self._loop = loop
        self.repository: ModelRepository | None = None
        self.core: RewardCore | None = None
        self.heap: FrozenHeap | None = None  # set once the server serves
        self.started = False  # READY_SERVICE_NAME is set from the end of build_server on

    def __call__(self, model: str) -> None:
        if self.heap is not None:
            self.heap.changed()
        asyncio.run_coroutine_threadsafe(self._update(model), self._loop)

    async def _update(self, model: str) -> None:
        assert self.repository is not None
        ready = self.repository.model_ready(model)
        draining = self.core is not None and self.core.draining
        await self._health.set(model, _SERVING if ready and not draining else _NOT_SERVING)
        await self.update_ready()

    async def start_ready(self) -> None:
        self.started = True
        await self.update_ready()

    async def update_ready(self) -> None:
        if self.core is None or not self.started:
            return
        await _report_ready(self._health, self._metrics, self.core.ready())


def _initial_load(repository: ModelRepository, settings: ServerSettings) -> tuple[list[str], list[str]]:
    """Load what the server starts with: every model of the repository, or in explicit mode those of
    --load-model. Returns (one line per failure, the models left with no ready version)."""
    if settings.model_control_mode != "explicit":
        names = [folder.name for folder in scan_models(repository.root)]
        failures = repository.load_all()
    else:
        names, failures = list(settings.load_models), []
        for name in names:
            try:
                failures += repository.load_model(name)
            except RewardServerError as e:
                failures.append(f"{name}: {e}")
    return failures, [name for name in names if not repository.model_ready(name)]


def _register_services(
    server: grpc.aio.Server,
    core: RewardCore,
    guard: RequestGuard,
    health_servicer: health.aio.HealthServicer,
    settings: ServerSettings,
) -> None:
    servicer = RewardServicer(core, settings.max_items_per_request)
    guard.add_service(server, SERVICE, servicer, servicer.decoders())
    # Triton's KServe v2 protocol on the same port, behind the same guard (fronts/kserve/grpc_front.py).
    add_kserve_service(server, KServeCore(core, settings.max_chars_per_message), guard)
    # Reflection through the guard too: the token applies to it, as to every service but health.
    guard.add_service(
        server,
        REFLECTION_SERVICE,
        reflection.aio.ReflectionServicer(
            (SERVICE_NAME, KSERVE_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
        ),
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)


def _bind(server: grpc.aio.Server, settings: ServerSettings) -> int:
    address = f"{settings.host}:{settings.port}"
    credentials = server_credentials(settings)
    try:
        port = (
            server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        )
    except RuntimeError as e:
        port = 0
        log.debug("bind failed: %s", e)
    if port == 0 and settings.port != 0:
        raise StartupError(f"cannot listen on {address}")
    return port


async def _started(what: str, port: int | None, start: Callable[[], Awaitable[T]]) -> T:
    """`start()`, with an OSError (a port taken) as the StartupError that names the port."""
    try:
        return await start()
    except OSError as e:
        raise StartupError(f"cannot serve {what} on port {port}: {e}") from e


async def build_server(settings: ServerSettings) -> tuple[RewardServer, int]:
    metrics = ServerMetrics()
    health_servicer = health.aio.HealthServicer()
    on_change = _HealthUpdater(health_servicer, metrics, asyncio.get_running_loop())
    repository = ModelRepository(
        settings.model_repository, mode=settings.model_control_mode, metrics=metrics, on_change=on_change
    )
    on_change.repository = repository
    failures, unready = await asyncio.to_thread(_initial_load, repository, settings)
    # Strict: every model has a ready version. A failed version the policy can do without (a bad new
    # version next to one that loads) does not stop a start: it is logged and in the repository index.
    if unready and settings.strict:
        await asyncio.to_thread(repository.close)
        raise StartupError(
            f"models with no ready version: {', '.join(unready)} (use --no-strict to serve the others):\n  "
            + "\n  ".join(failures)
        )

    encode_pool = ThreadPoolExecutor(settings.tokenizer_threads, thread_name_prefix="encode")
    core = RewardCore(repository, encode_pool, settings.max_items_per_request)
    on_change.core = core
    server = grpc.aio.server(options=server_options(settings))
    guard = RequestGuard(
        metrics,
        settings.max_concurrent_rpcs,
        settings.max_chars_per_message,
        known_model=repository.knows,
        auth_token=settings.auth_token,
    )
    _register_services(server, core, guard, health_servicer, settings)

    # What a failed start undoes, last started first.
    undo: list[Callable[[], Awaitable[object]]] = [lambda: asyncio.to_thread(repository.close)]
    try:
        port = _bind(server, settings)
        metrics_port = None
        if (wanted := settings.metrics_port) is not None:
            metrics_port = await _started(
                "metrics",
                wanted,
                partial(asyncio.to_thread, metrics.serve_http, settings.host.strip("[]"), wanted),
            )
        undo.append(lambda: asyncio.to_thread(metrics.close))
        health_server, health_port = None, None
        if (wanted := settings.health_port) is not None:
            health_server, health_port = await _started(
                "health checks", wanted, partial(start_health_port, health_servicer, settings.host, wanted)
            )
            undo.append(lambda: health_server.stop(0))
        heap = FrozenHeap()
        heap.freeze()
        on_change.heap = heap
        await server.start()
        undo.append(lambda: server.stop(0))
        http = None
        if settings.http_port is not None:
            http = await _started(
                "HTTP", settings.http_port, lambda: start_http(settings, core, guard, metrics)
            )
    except StartupError:
        for step in reversed(undo):
            await step()
        raise
    poller = None
    if settings.model_control_mode == "poll":
        poller = RepositoryPoller(repository, settings.repository_poll_s)
        poller.start()
    running = RewardServer(
        server,
        port,
        core,
        repository,
        health_servicer,
        encode_pool,
        metrics,
        guard,
        metrics_port,
        poller,
        health_server,
        health_port,
        http,
    )
    await health_servicer.set("", _SERVING)
    await health_servicer.set(SERVICE_NAME, _SERVING)
    await on_change.start_ready()
    for model in repository.index():
        await on_change._update(model.name)
    log.info(
        "serving %d model(s) on %s:%d, model control mode %s%s",
        len(repository.list_models()),
        settings.host,
        port,
        settings.model_control_mode,
        f", metrics on port {metrics_port}" if metrics_port is not None else "",
    )
    if health_port is not None:
        log.info("plaintext health checks on %s:%d", settings.host, health_port)
    return running, port


async def serve(settings: ServerSettings) -> None:
    """Run until SIGTERM or SIGINT, then drain for at most the grace period and return."""
    running, _ = await build_server(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: draining for at most %.1f s", settings.grace_period_s)
    await running.stop(settings.grace_period_s)
    log.info("stopped")
