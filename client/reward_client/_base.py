"""What the sync and asyncio clients share: settings, channel arguments, metadata and the verb plans."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from ._calls import CHANNEL_OPTIONS, Call, Planner, split_request
from ._channel import Pem, channel_target, tls_credentials

Metadata = Sequence[tuple[str, str]]

DEFAULT_CHUNK_SIZE = 64


class ClientBase:
    """Holds the target(s), default model/version, default deadline, credentials and metadata of a client.

    `target`: one gRPC target ("host:port", "dns:///reward.svc:50051") or a list of "host:port" replicas.
    `chunk_size`: Score calls with more inputs are split into requests of at most this many inputs, sent
    concurrently (so one call uses every replica) and put back in order; None sends one request.
    `wait_for_ready`: calls wait for a replica to be reachable (within the deadline) instead of failing fast.
    """

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        model: str = "",
        version: str | int | None = None,
        timeout: float | None = 30.0,
        metadata: Metadata = (),
        token: str | None = None,
        tls: bool = False,
        ca_cert: Pem | None = None,
        client_cert: Pem | None = None,
        client_key: Pem | None = None,
        tls_server_name: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        wait_for_ready: bool = False,
        chunk_size: int | None = DEFAULT_CHUNK_SIZE,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
        self.target = channel_target(target)
        self._plan = Planner(model=model, version="" if version is None else str(version))
        self._timeout = timeout
        self._metadata = tuple(metadata) + ((("authorization", f"Bearer {token}"),) if token else ())
        self._credentials = credentials or tls_credentials(
            tls=tls, ca_cert=ca_cert, client_cert=client_cert, client_key=client_key
        )
        self._wait_for_ready = wait_for_ready
        self._chunk_size = chunk_size
        extra: list[tuple[str, Any]] = []
        if not isinstance(target, str) and len(target) > 1:
            # The authority (and the TLS name checked) of a list is its first endpoint, not the address list.
            extra.append(("grpc.default_authority", target[0]))
        if tls_server_name:
            extra.append(("grpc.ssl_target_name_override", tls_server_name))
        self._options = CHANNEL_OPTIONS + tuple(extra) + tuple(options)

    def _call_args(self, timeout: float | None, metadata: Metadata | None) -> dict[str, Any]:
        return {
            "timeout": self._timeout if timeout is None else timeout,
            "metadata": self._metadata + tuple(metadata or ()),
            "wait_for_ready": self._wait_for_ready,
        }

    def _requests(self, call: Call[Any]) -> list[Any]:
        return split_request(call, self._chunk_size)
