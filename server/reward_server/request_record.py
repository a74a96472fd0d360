"""What one RPC did, filled in by the core as it goes and logged / counted by the front when it ends.

A context variable carries it, so the core needs no front types and the guard no core types.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class RequestRecord:
    request_id: str
    method: str
    model: str = ""
    version: str = ""
    items: int = 0  # inputs in the request
    tokens: int = 0  # tokens scored, after truncation
    queue_s: float = 0.0  # longest wait of one of its inputs for a batch
    compute_s: float = 0.0  # longest backend time of one of its batches
    resolved: bool = False  # model and version name a served version (set by the core)

    def log_fields(self) -> str:
        return (
            f"request_id={self.request_id} method={self.method} model={self.model or '-'} "
            f"version={self.version or '-'} items={self.items} tokens={self.tokens} "
            f"queue_ms={self.queue_s * 1e3:.1f} compute_ms={self.compute_s * 1e3:.1f}"
        )


current_request: ContextVar[RequestRecord | None] = ContextVar("current_request", default=None)
