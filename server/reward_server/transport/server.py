"""Server lifecycle: build (load models, register services), serve, drain on SIGTERM, stop.

`build_server(settings)` returns the started server and its bound port (port 0 picks a free one).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from reward_api.v1 import reward_pb2, reward_pb2_grpc

from ..dispatch import RewardCore
from ..repository import ModelRepository
from ..settings import ServerSettings
from .interceptors import ErrorInterceptor, TokenAuthInterceptor
from .limits import LimitsInterceptor
from .servicer import RewardServicer
from .tls import server_credentials

log = logging.getLogger(__name__)

SERVICE_NAME = reward_pb2.DESCRIPTOR.services_by_name["RewardService"].full_name
# Clients ping every 30 s while calls are open (reward_client's keepalive); accept pings that often.
MIN_CLIENT_PING_INTERVAL_MS = 20_000


class StartupError(Exception):
    """The server refused to start (a model failed to load in strict mode, the port is taken)."""


@dataclass
class RewardServer:
    server: grpc.aio.Server
    port: int
    core: RewardCore
    repository: ModelRepository
    health: health.aio.HealthServicer
    encode_pool: ThreadPoolExecutor
    limits: LimitsInterceptor

    async def _set_health(self, status: int) -> None:
        """Overall and service health get `status`; each model is SERVING only if it has a ready version."""
        await self.health.set("", status)
        await self.health.set(SERVICE_NAME, status)
        for model in self.repository.list_models():
            ready = any(v.state == "READY" for v in model.versions)
            await self.health.set(model.name, status if ready else health_pb2.HealthCheckResponse.NOT_SERVING)

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING, refuse new work, let requests in flight finish within `grace`, release models."""
        self.core.draining = True
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace)
        await asyncio.to_thread(self.repository.close)
        self.encode_pool.shutdown(wait=False)


async def build_server(settings: ServerSettings) -> tuple[RewardServer, int]:
    repository = ModelRepository(settings.model_repository)
    failures = await asyncio.to_thread(repository.load_all)
    if failures and settings.strict:
        await asyncio.to_thread(repository.close)
        raise StartupError("models failed to load (use --no-strict to serve the others):\n  " + "\n  ".join(failures))

    encode_pool = ThreadPoolExecutor(settings.tokenizer_threads, thread_name_prefix="encode")
    core = RewardCore(repository, encode_pool, settings.max_items_per_request)
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if settings.auth_token:
        interceptors.append(TokenAuthInterceptor(settings.auth_token))
    interceptors.append(ErrorInterceptor())
    limits = LimitsInterceptor(settings.max_concurrent_rpcs, settings.max_chars_per_message)
    interceptors.append(limits)
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", int(settings.reuse_port)),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
            ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
        ],
    )
    reward_pb2_grpc.add_RewardServiceServicer_to_server(RewardServicer(core), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    address = f"{settings.host}:{settings.port}"
    credentials = server_credentials(settings)
    try:
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError as e:
        port = 0
        log.debug("bind failed: %s", e)
    if port == 0 and settings.port != 0:
        await asyncio.to_thread(repository.close)
        raise StartupError(f"cannot listen on {address}")
    await server.start()
    running = RewardServer(server, port, core, repository, health_servicer, encode_pool, limits)
    await running._set_health(health_pb2.HealthCheckResponse.SERVING)
    log.info("serving %d model(s) on %s:%d", len(repository.list_models()), settings.host, port)
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
