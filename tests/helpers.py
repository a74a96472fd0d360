"""Test helpers: a real server on a loopback port, run on its own event-loop thread, and
repositories written into tmp_path."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from reward_server.server import RewardServer, build_server
from reward_server.settings import ServerSettings

CHAT_1 = [
    {"role": "user", "content": "Hello! What's your name?"},
    {"role": "assistant", "content": "My name is InternLM2! A helpful AI assistant. What can I do for you?"},
]
CHAT_2 = [
    {"role": "user", "content": "Hello! What's your name?"},
    {"role": "assistant", "content": "I have no idea."},
]


WORDS = "the reward model reads a conversation and answers with one number 你好 😀 def f(x): return x".split()


def random_chat(rng: random.Random, turns: int = 1) -> list[dict]:
    chat = []
    for _ in range(turns):
        chat.append({"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(1, 12)))})
        chat.append({"role": "assistant", "content": " ".join(rng.choices(WORDS, k=rng.randint(0, 40)))})
    return chat


def config_text(
    name: str,
    *,
    max_batch_size: int = 8,
    delay_us: int = 0,
    queue: int = 0,
    extra: str = "",
    reward: str = "",
    max_batch_tokens: int | None = 0,
) -> str:
    """A config.pbtxt; max_batch_tokens None leaves it unset (tuned at load), 0 = no token budget."""
    budget = "" if max_batch_tokens is None else f"max_batch_tokens: {max_batch_tokens} "
    return (
        f'name: "{name}"\nbackend: "pytorch"\nmax_batch_size: {max_batch_size}\n'
        f"dynamic_batching {{ max_queue_delay_microseconds: {delay_us} {budget}"
        f"default_queue_policy {{ max_queue_size: {queue} }} }}\n"
        f"instance_group [ {{ kind: KIND_CPU count: 1 }} ]\n"
        f'reward {{ prompt_format: "chat_template" dtype: "float32" {reward} }}\n{extra}'
    )


def add_model(
    repo: Path, name: str, checkpoint: Path, config: str | None = None, versions: tuple[int, ...] = (1,)
) -> Path:
    """Copy a checkpoint into `repo/name/<version>` for each version, with a config.pbtxt."""
    model = repo / name
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.pbtxt").write_text(config if config is not None else config_text(name), encoding="utf-8")
    for version in versions:
        shutil.copytree(checkpoint, model / str(version))
    return model


class ServerThread:
    """A real grpc.aio server on 127.0.0.1:<free port>, its event loop on a background thread."""

    def __init__(self, settings: ServerSettings) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        try:
            # a wide window: the load traces and checks every model of the repository, which takes
            # minutes on a busy 2-core machine; a server that cannot start raises long before
            self.server, self.port = self.run(build_server(settings), timeout=300)
        except BaseException:
            self._close_loop()
            raise
        self.target = f"127.0.0.1:{self.port}"

    def run(self, coroutine, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    @property
    def running(self) -> RewardServer:
        return self.server

    def stop(self) -> None:
        self.run(self.server.stop(0))
        self._close_loop()

    def _close_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# The line a started server logs, with its bound port.
SERVING_LINE = re.compile(r"serving \d+ model\(s\) on 127\.0\.0\.1:(\d+)")


def command() -> list[str]:
    exe = shutil.which("reward-server", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "reward_server"]


def serve_repo(repo: Path, **settings) -> ServerThread:
    settings.setdefault("http_port", None)  # HTTP only where a test asks for it (its default port is fixed)
    return ServerThread(ServerSettings(model_repository=repo, host="127.0.0.1", port=0, **settings))


class ServerProcess:
    """`reward-server serve` in a real subprocess on 127.0.0.1; its stderr is drained by a thread
    (a full pipe would block the server) and kept for the test to read."""

    def __init__(self, repo: Path, *extra: str, port: int = 0) -> None:
        # No HTTP port unless asked for: its default (8000) would collide between servers and test runs.
        http = () if "--http-port" in extra else ("--http-port", "-1")
        self.proc = subprocess.Popen(
            [
                *command(),
                "serve",
                "--model-repository",
                str(repo),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *http,
                *extra,
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._started = threading.Event()
        self.port = 0
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            if not self._started.is_set() and (m := SERVING_LINE.search(line)):
                self.port = int(m.group(1))
                self._started.set()
        self._started.set()  # exited: wait_started reports it

    def wait_started(self, timeout: float = 120) -> ServerProcess:
        if not self._started.wait(timeout) or not self.port:
            self.kill()
            raise AssertionError("server did not start:\n" + self.log())
        return self

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float) -> int:
        """The exit code, once the process has ended and its whole log has been read."""
        code = self.proc.wait(timeout)
        self._drainer.join(timeout)
        return code

    def memory_rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")


def start_servers(count: int, repo: Path, *extra: str, timeout: float = 180) -> list[ServerProcess]:
    """`count` server subprocesses started together (they load in parallel); all killed on failure."""
    servers = [ServerProcess(repo, *extra) for _ in range(count)]
    try:
        deadline = time.monotonic() + timeout
        for server in servers:
            server.wait_started(max(1.0, deadline - time.monotonic()))
    except BaseException:
        for server in servers:
            server.kill()
        raise
    return servers


def health_of(target: str, service: str) -> int:
    """The grpc.health.v1 status the server at `target` answers for `service` ("": the process)."""
    with grpc.insecure_channel(target) as channel:
        return (
            health_pb2_grpc.HealthStub(channel)
            .Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            .status
        )


def wait_until(condition: Callable[[], object], timeout: float = 60, step: float = 0.05) -> float:
    """Seconds until `condition()` held; fails after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)
    return time.monotonic() - start


def publish(
    source: Path, model_folder: Path, version: int, break_it: Callable[[Path], None] | None = None
) -> Path:
    """A version folder published as `reward-server import` does (hidden copy, then one rename), broken
    first by `break_it(folder)` when given."""
    staging = model_folder / f".staging-{version}"
    shutil.copytree(source, staging)
    if break_it is not None:
        break_it(staging)
    staging.rename(model_folder / str(version))
    return model_folder / str(version)


def unloadable_weights(folder: Path) -> None:
    """publish's break_it for a version whose weights do not load."""
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")


CLIENT_DIR = Path(__file__).resolve().parent.parent / "client"
# Prepended to run_client_only's script: importing any of BLOCKED (top-level names) raises ImportError.
IMPORT_BLOCKER = """
import importlib.abc, sys

BLOCKED = {blocked!r}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked in this test")
        return None

sys.meta_path.insert(0, Block())
"""


def run_client_only(script: str, *args: str, blocked: set[str], **env: str) -> dict:
    """`python -c script args` in a fresh interpreter with only client/ on PYTHONPATH (plus `env`) and
    the packages `blocked` unimportable (the script sees their names as BLOCKED); asserts that it exits 0
    and returns the JSON object it prints."""
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environ.update(PYTHONPATH=str(CLIENT_DIR), **env)
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_BLOCKER.format(blocked=set(blocked)) + script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


__all__ = [
    "CHAT_1",
    "CHAT_2",
    "WORDS",
    "ServerProcess",
    "ServerThread",
    "add_model",
    "command",
    "config_text",
    "health_of",
    "publish",
    "random_chat",
    "run_client_only",
    "serve_repo",
    "start_servers",
    "unloadable_weights",
    "wait_until",
]


def close(a: object, b: object, rel: float = 1e-6) -> bool:
    """a equals b within `rel` of the larger of 1 and |b| (numpy scalars and floats alike)."""
    return abs(float(a) - float(b)) <= rel * max(1.0, abs(float(b)))  # type: ignore[arg-type]
