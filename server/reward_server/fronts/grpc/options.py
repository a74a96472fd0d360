"""The gRPC server's channel arguments: message size, port sharing, keepalive and connection age."""

from __future__ import annotations

from typing import Any

from reward_server.settings import ServerSettings

# Clients ping every 30 s while calls are open (reward_client's keepalive); accept pings that often.
MIN_CLIENT_PING_INTERVAL_MS = 20_000


def server_options(settings: ServerSettings) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        # Larger messages get RESOURCE_EXHAUSTED from gRPC itself, before the request is parsed.
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", int(settings.reuse_port)),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
    ]
    if settings.max_connection_age_s is not None:
        # GOAWAY after this age: clients reconnect and re-resolve DNS, and so find replicas added since.
        # Calls in flight on the old connection get the grace period to finish.
        options += [
            ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(settings.grace_period_s * 1000)),
        ]
    return options
