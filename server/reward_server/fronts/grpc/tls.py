"""Server TLS credentials from the settings' PEM files: TLS, or mutual TLS when a client CA is given."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc

from reward_server.settings import ServerSettings

log = logging.getLogger(__name__)


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """None without --tls-cert (plaintext). With --tls-client-ca, clients must present a certificate
    signed by that CA or the handshake fails before any RPC is seen."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    chain = Path(settings.tls_cert).read_bytes()
    key = Path(settings.tls_key).read_bytes()
    client_ca = Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca is not None else None
    log.info(
        "TLS on (%s)", "mutual: client certificates required" if client_ca else "server certificate only"
    )
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
