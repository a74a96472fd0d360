"""What the sync and asyncio clients share: settings, metadata and the verb plans."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from ._calls import CHANNEL_OPTIONS, Planner

Metadata = Sequence[tuple[str, str]]


class ClientBase:
    """Holds the target, default model/version, default deadline and metadata of a client."""

    def __init__(
        self,
        target: str,
        *,
        model: str = "",
        version: str | int | None = None,
        timeout: float | None = 30.0,
        metadata: Metadata = (),
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = target
        self._plan = Planner(model=model, version="" if version is None else str(version))
        self._timeout = timeout
        self._metadata = tuple(metadata) + ((("authorization", f"Bearer {token}"),) if token else ())
        self._credentials = credentials
        self._options = CHANNEL_OPTIONS + tuple(options)

    def _call_args(self, timeout: float | None, metadata: Metadata | None) -> dict[str, Any]:
        return {
            "timeout": self._timeout if timeout is None else timeout,
            "metadata": self._metadata + tuple(metadata or ()),
        }
