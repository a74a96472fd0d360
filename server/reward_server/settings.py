"""Frozen, validated server settings (built by the CLI or by tests)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerSettings:
    model_repository: Path
    host: str = "[::]"
    port: int = 50051
    # Refuse to start when any model fails to load (Triton's exit-on-error).
    strict: bool = True
    max_items_per_request: int = 4096
    # Bearer token required in `authorization` metadata; None disables auth. Health stays open.
    auth_token: str | None = None
    grace_period_s: float = 30.0
    # Threads that format and tokenize requests off the event loop.
    tokenizer_threads: int = 2
    # TLS: PEM files of the server's certificate chain and key; a client CA makes it mutual TLS.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    # A plaintext port serving only grpc.health.v1 (for probes that cannot speak TLS); None: none.
    health_port: int | None = None
    # Limits against abuse (see transport/limits.py); each over-limit request gets a clear status.
    max_message_bytes: int = 64 * 1024 * 1024
    max_chars_per_message: int = 1_000_000
    max_concurrent_rpcs: int = 1024
    # Let several processes bind the same port (SO_REUSEPORT); the kernel spreads connections.
    reuse_port: bool = False
    # End each client connection after this many seconds (clients reconnect and re-resolve DNS); None: never.
    max_connection_age_s: float | None = None
    # Triton's model control modes: none (all at start), explicit (Load/UnloadModel RPCs), poll (rescan).
    model_control_mode: str = "none"
    repository_poll_s: float = 15.0
    load_models: tuple[str, ...] = ()  # explicit mode: the models to load at start
    # Prometheus /metrics on this port (0 picks one); None: no metrics endpoint.
    metrics_port: int | None = None
    # KServe v2 REST (and /metrics) on this port, same TLS / auth / limits as gRPC (0 picks one); None: off.
    http_port: int | None = None

    def __post_init__(self) -> None:
        if not Path(self.model_repository).is_dir():
            raise ValueError(f"model repository {str(self.model_repository)!r} is not a directory")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.max_items_per_request < 1:
            raise ValueError(f"max_items_per_request must be >= 1, got {self.max_items_per_request}")
        if self.auth_token is not None and not self.auth_token.strip():
            raise ValueError("auth token is empty")
        if self.grace_period_s < 0:
            raise ValueError(f"grace period must be >= 0, got {self.grace_period_s}")
        if self.model_control_mode not in ("none", "explicit", "poll"):
            raise ValueError(f"model control mode must be none, explicit or poll, got {self.model_control_mode!r}")
        if self.repository_poll_s <= 0:
            raise ValueError(f"repository poll interval must be > 0 seconds, got {self.repository_poll_s}")
        if self.load_models and self.model_control_mode != "explicit":
            raise ValueError("--load-model needs --model-control-mode explicit (the other modes load every model)")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics port must be in 0..65535, got {self.metrics_port}")
        if self.http_port is not None and not 0 <= self.http_port <= 65535:
            raise ValueError(f"HTTP port must be in 0..65535, got {self.http_port}")
        if self.tokenizer_threads < 1:
            raise ValueError(f"tokenizer_threads must be >= 1, got {self.tokenizer_threads}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
        if self.health_port is not None and not 0 <= self.health_port <= 65535:
            raise ValueError(f"health port must be in 0..65535, got {self.health_port}")
        for path in (self.tls_cert, self.tls_key, self.tls_client_ca):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"TLS file {str(path)!r} does not exist")
        if self.max_connection_age_s is not None and self.max_connection_age_s <= 0:
            raise ValueError(f"max connection age must be > 0 seconds, got {self.max_connection_age_s}")
        for name in ("max_message_bytes", "max_chars_per_message", "max_concurrent_rpcs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def read_auth_token(path: str | None, env_var: str = "REWARD_SERVER_AUTH_TOKEN") -> str | None:
    """The token from a file (first line), else from the environment, else None."""
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    return os.environ.get(env_var) or None
