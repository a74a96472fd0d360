"""Call metadata: reading a key, and the bearer-token check the guard (fronts/grpc/guard.py) applies to
every call of a guarded service (health is not guarded: probes need no secret)."""

from __future__ import annotations

import hmac
from typing import Any

from reward_server.errors import PermissionDenied, Unauthenticated


def metadata_value(metadata: Any, key: str) -> str | None:
    """The value of `key` in a call's invocation metadata (pairs, or None), or None."""
    for k, v in metadata or ():
        if k == key:
            return v
    return None


class BearerToken:
    """Requires `authorization: Bearer <token>`: none -> UNAUTHENTICATED, wrong -> PERMISSION_DENIED."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def check(self, metadata: Any) -> None:
        presented = metadata_value(metadata, "authorization")
        if presented is None:
            raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")
        if not hmac.compare_digest(presented.encode(), self._expected):
            raise PermissionDenied("the bearer token is not valid")
