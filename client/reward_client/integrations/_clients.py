"""Where reward functions send their calls: settings (arguments or environment) and one client per process.

RL frameworks call a reward function many times from many threads (OpenRLHF: `asyncio.to_thread` per
sample; veRL: an executor per sample) or from an event loop (TRL's async loop, veRL's reward loop).
Making a channel per call would pay a connection and its health watch every time, so each process keeps
one `RewardClient` per settings (a gRPC channel is thread-safe) and one `AsyncRewardClient` per settings
and event loop (a grpc.aio channel belongs to the loop it was made on).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._aio import AsyncRewardClient
from .._sync import RewardClient

# The environment variables read when a setting is not passed as an argument.
ENV_ADDRESS = (
    "REWARD_SERVER_ADDRESS"  # "host:port", "dns:///name:port", or "host-a:port,host-b:port" (replicas)
)
ENV_MODEL = "REWARD_SERVER_MODEL"
ENV_VERSION = "REWARD_SERVER_MODEL_VERSION"
ENV_TOKEN = "REWARD_SERVER_TOKEN"
ENV_TLS = "REWARD_SERVER_TLS"  # "1": TLS with the system's roots
ENV_CA_CERT = "REWARD_SERVER_CA_CERT"  # a PEM file: TLS trusting this CA
ENV_TIMEOUT = "REWARD_SERVER_TIMEOUT"  # seconds per call
ENV_CHUNK_SIZE = "REWARD_SERVER_CHUNK_SIZE"  # inputs per Score request; 0 = one request (also as an argument)
ENV_WAIT_FOR_READY = "REWARD_SERVER_WAIT_FOR_READY"  # "0": fail at once while no replica is reachable

DEFAULT_TIMEOUT = 120.0
DEFAULT_CHUNK_SIZE = 64

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _flag(name: str, value: str) -> bool:
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise ValueError(f"{name} must be 1/0 (true/false), got {value!r}")


def _number(name: str, value: str, kind: type) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name} must be a {kind.__name__}, got {value!r}") from None


@dataclass(frozen=True)
class ClientSettings:
    """How to reach the server: the `RewardClient` arguments a reward function uses.

    `target` is one gRPC target or a tuple of "host:port" replicas. Training jobs start while servers may
    still be loading, so calls wait for a reachable replica (within `timeout`) unless `wait_for_ready=False`.
    """

    target: str | Sequence[str]  # kept as "host:port" or a tuple of replicas
    model: str = ""
    version: str | None = None
    token: str | None = None
    tls: bool = False
    ca_cert: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    chunk_size: int | None = DEFAULT_CHUNK_SIZE
    wait_for_ready: bool = True

    def __post_init__(self) -> None:
        # Hashable and in one form ("a:1", or a tuple of replicas): settings key the per-process clients.
        object.__setattr__(self, "target", parse_target(self.target))
        if not self.target:
            raise ValueError(f"no reward server address: pass one, or set {ENV_ADDRESS}=host:port")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {self.chunk_size}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ClientSettings:
        """Settings from REWARD_SERVER_* variables; `overrides` that are not None win over them."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {"target": parse_target(env.get(ENV_ADDRESS, ""))}
        if ENV_MODEL in env:
            values["model"] = env[ENV_MODEL]
        if env.get(ENV_VERSION):
            values["version"] = env[ENV_VERSION]
        if env.get(ENV_TOKEN):
            values["token"] = env[ENV_TOKEN]
        if ENV_TLS in env:
            values["tls"] = _flag(ENV_TLS, env[ENV_TLS])
        if env.get(ENV_CA_CERT):
            values["ca_cert"] = env[ENV_CA_CERT]
        if env.get(ENV_TIMEOUT):
            values["timeout"] = _number(ENV_TIMEOUT, env[ENV_TIMEOUT], float)
        if env.get(ENV_CHUNK_SIZE):
            values["chunk_size"] = _number(ENV_CHUNK_SIZE, env[ENV_CHUNK_SIZE], int)
        if ENV_WAIT_FOR_READY in env:
            values["wait_for_ready"] = _flag(ENV_WAIT_FOR_READY, env[ENV_WAIT_FOR_READY])
        values.update({key: value for key, value in overrides.items() if value is not None})
        if values.get("chunk_size") == 0:  # 0 where None cannot be written (env, Hydra's null = unset)
            values["chunk_size"] = None
        return cls(**values)

    def client_kwargs(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "token": self.token,
            "tls": self.tls,
            "ca_cert": self.ca_cert,
            "timeout": self.timeout,
            "chunk_size": self.chunk_size,
            "wait_for_ready": self.wait_for_ready,
        }

    def client_target(self) -> str | list[str]:
        return self.target if isinstance(self.target, str) else list(self.target)


def parse_target(value: str | Sequence[str]) -> str | tuple[str, ...]:
    """`"a:1"` -> `"a:1"`; `"a:1,b:2"` or `["a:1", "b:2"]` -> `("a:1", "b:2")` (replicas)."""
    parts = (
        [p.strip() for p in value.split(",")] if isinstance(value, str) else [str(p).strip() for p in value]
    )
    parts = [p for p in parts if p]
    if len(parts) == 1:
        return parts[0]
    return tuple(parts)


class _ClientCache:
    """One RewardClient per (process, settings), one AsyncRewardClient per (process, settings, loop).

    Keyed by pid as well: a channel made before a fork (Ray and dataloader workers fork) does not work in
    the child, which then makes its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sync: dict[tuple[int, ClientSettings], RewardClient] = {}
        self._async: dict[asyncio.AbstractEventLoop, dict[tuple[int, ClientSettings], AsyncRewardClient]] = {}

    def sync_client(self, settings: ClientSettings) -> RewardClient:
        key = (os.getpid(), settings)
        with self._lock:
            client = self._sync.get(key)
            if client is None:
                client = RewardClient(settings.client_target(), **settings.client_kwargs())
                self._sync[key] = client
            return client

    def async_client(self, settings: ClientSettings) -> AsyncRewardClient:
        """The calling event loop's client (call from a coroutine)."""
        loop = asyncio.get_running_loop()
        key = (os.getpid(), settings)
        with self._lock:
            # A loop that has closed (asyncio.run per step) cannot run its clients again: drop them, so
            # that they are collected instead of piling up.
            for closed in [other for other in self._async if other.is_closed()]:
                del self._async[closed]
            clients = self._async.setdefault(loop, {})
            client = clients.get(key)
            if client is None:
                client = AsyncRewardClient(settings.client_target(), **settings.client_kwargs())
                clients[key] = client
            return client

    def close(self) -> None:
        """Close the blocking clients of this process (async ones close with their loop)."""
        with self._lock:
            clients, self._sync = list(self._sync.values()), {}
        for client in clients:
            client.close()


CLIENTS = _ClientCache()


def close_clients() -> None:
    """Close this process's cached blocking clients (e.g. at the end of a test or a job)."""
    CLIENTS.close()
