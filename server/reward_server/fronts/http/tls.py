"""The HTTP port's TLS context, from the same PEM files as the gRPC port (fronts/grpc/tls.py)."""

from __future__ import annotations

import ssl

from reward_server.settings import ServerSettings


def server_ssl_context(settings: ServerSettings) -> ssl.SSLContext | None:
    """None without --tls-cert (plaintext). With --tls-client-ca, the handshake fails for a client
    without a certificate signed by that CA, before any request is read (as on the gRPC port)."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    if settings.tls_client_ca is not None:
        context.load_verify_locations(cafile=str(settings.tls_client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context
