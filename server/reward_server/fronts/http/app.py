"""The HTTP front: an aiohttp application on the gRPC server's event loop, started and stopped with it.

aiohttp rather than uvicorn + an ASGI framework: it runs on the loop that is already running (no thread,
no second loop, so the core, the batcher's futures and the shared guard counters are used as they are
by gRPC), takes an ssl.SSLContext for TLS and mutual TLS directly, bounds the body while reading it
(client_max_size: 413 before a huge body is buffered), and is one small dependency with C speedups."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from reward_server.core import RewardCore
from reward_server.fronts.http.guard import HttpGuard
from reward_server.fronts.http.rl_routes import RLRoutes
from reward_server.fronts.http.routes import KServeRoutes
from reward_server.fronts.http.tls import server_ssl_context
from reward_server.fronts.kserve.service import KServeCore
from reward_server.metrics import ServerMetrics
from reward_server.settings import ServerSettings

if TYPE_CHECKING:  # server.py imports this package: a runtime import would be a cycle
    from reward_server.fronts.grpc.guard import RequestGuard

log = logging.getLogger(__name__)


def build_app(
    settings: ServerSettings, core: RewardCore, guard: RequestGuard, metrics: ServerMetrics
) -> web.Application:
    http_guard = HttpGuard(core, guard, metrics, settings.auth_token, settings.max_concurrent_rpcs)
    app = web.Application(middlewares=[http_guard.middleware], client_max_size=settings.max_message_bytes)
    kserve = KServeCore(core, settings.max_chars_per_message)
    KServeRoutes(kserve, metrics).add_to(app)
    RLRoutes(kserve).add_to(app)  # OpenRLHF's /get_reward, vLLM's /classify, /pooling, /v1/models
    return app


@dataclass
class HttpFront:
    runner: web.AppRunner
    port: int

    async def stop(self) -> None:
        """Close the port and the connections; a request still running (the drain waited for them
        already) gets at most the grace period."""
        await self.runner.cleanup()


async def start_http(
    settings: ServerSettings, core: RewardCore, guard: RequestGuard, metrics: ServerMetrics
) -> HttpFront:
    """The started front on settings.http_port (0 picks one); OSError when the port cannot be bound."""
    assert settings.http_port is not None
    runner = web.AppRunner(
        build_app(settings, core, guard, metrics),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=settings.grace_period_s,
    )
    await runner.setup()
    host = settings.host.strip("[]")
    site = web.TCPSite(
        runner,
        host,
        settings.http_port,
        ssl_context=server_ssl_context(settings),
        reuse_port=settings.reuse_port or None,
    )
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    port = runner.addresses[0][1]
    log.info("KServe v2 HTTP on %s:%d%s", settings.host, port, " (TLS)" if settings.tls_cert else "")
    return HttpFront(runner, port)
