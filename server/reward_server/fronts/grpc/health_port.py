"""A second, plaintext port serving only grpc.health.v1: for probes that cannot speak TLS (kubelet's
native gRPC probes, load balancers) when the serving port requires it. It reports the same statuses
as the serving port, since both share one HealthServicer, and carries nothing else."""

from __future__ import annotations

import grpc.aio
from grpc_health.v1 import health, health_pb2_grpc


async def start_health_port(
    servicer: health.aio.HealthServicer, host: str, port: int
) -> tuple[grpc.aio.Server, int]:
    """The started health-only server and its bound port; OSError when the port cannot be bound."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as e:
        raise OSError(f"cannot listen on {host}:{port}: {e}") from e
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    return server, bound
