"""Where a client connects and how: one target or several replicas, TLS / mTLS credentials.

Several `host:port` endpoints become one gRPC target (`ipv4:a:p,b:p`) that gRPC's own `round_robin`
policy spreads calls over; `dns:///name:port` is re-resolved by gRPC (a headless Service's pods).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

import grpc

Pem = bytes | str | os.PathLike[str]  # PEM bytes, or the path of a PEM file


def _split_host_port(endpoint: str) -> tuple[str, int]:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"an endpoint in a list is host:port, got {endpoint!r}")
    return host.strip("[]"), int(port)


def _addresses(endpoint: str) -> dict[int, str]:
    """The first IPv4 and IPv6 address of an endpoint, each as gRPC writes it with its port."""
    host, port = _split_host_port(endpoint)
    found: dict[int, str] = {}
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if family == socket.AF_INET:
            found.setdefault(family, f"{sockaddr[0]}:{port}")
        elif family == socket.AF_INET6:
            found.setdefault(family, f"[{sockaddr[0]}]:{port}")
    return found


def channel_target(target: str | Sequence[str]) -> str:
    """A gRPC target for one endpoint or for a list of endpoints.

    One endpoint: any gRPC target string, kept as given. A list of `host:port` endpoints: resolved once,
    now (use `dns:///` for a set that changes).
    """
    if isinstance(target, str):
        return target
    endpoints = list(target)
    if not endpoints:
        raise ValueError("no endpoint given")
    if len(endpoints) == 1:
        return endpoints[0]
    resolved = [_addresses(e) for e in endpoints]
    for family, scheme in ((socket.AF_INET, "ipv4"), (socket.AF_INET6, "ipv6")):
        if all(family in r for r in resolved):
            return f"{scheme}:" + ",".join(r[family] for r in resolved)
    raise ValueError(f"the endpoints {endpoints} do not all resolve to one address family")


def _read_pem(value: Pem | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    with open(value, "rb") as f:
        return f.read()


def tls_credentials(
    *, tls: bool, ca_cert: Pem | None, client_cert: Pem | None, client_key: Pem | None
) -> grpc.ChannelCredentials | None:
    """The channel credentials: None for plaintext.

    TLS when asked for or when any certificate is given (the system's roots when no CA is); mutual TLS
    when the client's own certificate and key are given.
    """
    if (client_cert is None) != (client_key is None):
        raise ValueError("client_cert and client_key go together (mutual TLS)")
    if not (tls or ca_cert is not None or client_cert is not None):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read_pem(ca_cert),
        private_key=_read_pem(client_key),
        certificate_chain=_read_pem(client_cert),
    )
