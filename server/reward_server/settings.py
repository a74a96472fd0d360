"""Frozen, validated server settings, and the one declaration of every `serve` option.

Each ServerSettings field declares its option once (`option(...)`: default, help, bounds, flag); from that
declaration come the `serve` command's flags and --help (cli.py), the environment variable of each option
(REWARD_SERVER_<FLAG NAME>), the range checks of __post_init__, and the CLI reference in the docs.
Precedence: a flag on the command line, else its environment variable, else the default.
"""

from __future__ import annotations

import enum
import functools
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "REWARD_SERVER_"
# The token itself (not a file): read when neither --auth-token-file nor its variable is set.
AUTH_TOKEN_ENV = ENV_PREFIX + "AUTH_TOKEN"


class TextEnum(str, enum.Enum):
    """An enum of strings that prints and formats as its value (enum.StrEnum, which Python 3.10 lacks);
    it compares equal to its value, so code and tests that use the plain strings keep working."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class ModelControlMode(TextEnum):
    """Triton's model control modes: what loads when (see repository/manager.py)."""

    NONE = "none"  # every model at start; nothing changes afterwards
    EXPLICIT = "explicit"  # LoadModel / UnloadModel RPCs, and --load-model at start
    POLL = "poll"  # like none at start, then a rescan every --repository-poll-secs


@dataclass(frozen=True)
class Option:
    """How a settings field is set from the command line: what --help says, and the bounds checked."""

    help: str
    flag: str = ""  # default: the field name, "--" and dashes for underscores
    metavar: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False  # `minimum` itself is refused too (a positive duration)
    default_text: str | None = None  # the default as --help shows it, where repr would not read well
    read: Callable[[str], Any] | None = (
        None  # the field's value from the option's text (default: by its type)
    )


def option(default: Any = MISSING, help: str = "", **spec: Any) -> Any:
    """A ServerSettings field that is also a `serve` option (MISSING default: a required option)."""
    return field(default=default, metadata={"option": Option(help, **spec)})


def read_token_file(path: str) -> str:
    """The bearer token in a file (its whole content, surrounding whitespace stripped); an empty file is
    refused."""
    token = Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"auth token file {path!r} is empty (an empty token would turn authentication off)")
    return token


@dataclass(frozen=True)
class ServerSettings:
    model_repository: Path = option(help="path of the Triton-style model repository", metavar="PATH")
    host: str = option("[::]", "address to bind ([::]: every interface)", metavar="ADDRESS")
    port: int = option(50051, "gRPC port (0 picks one)", minimum=0, maximum=65535, metavar="PORT")
    # Refuse to start when a model has no ready version (Triton's exit-on-error); a failed version the
    # version policy can do without does not count.
    strict: bool = option(
        True, "refuse to start when a model has no ready version; --no-strict serves the others"
    )
    max_items_per_request: int = option(4096, "most inputs one Score or Rank request may carry", minimum=1)
    # Bearer token required in `authorization` metadata; None disables auth. Health stays open.
    auth_token: str | None = option(
        None,
        f"require the bearer token in this file (else ${AUTH_TOKEN_ENV}, the token itself, if set; "
        "else no auth)",
        flag="--auth-token-file",
        metavar="PATH",
        read=read_token_file,
    )
    grace_period_s: float = option(
        30.0, "seconds requests in flight may take to finish after SIGTERM", flag="--grace-period", minimum=0
    )
    tokenizer_threads: int = option(
        2, "threads that format and tokenize requests off the event loop", minimum=1
    )
    # TLS: PEM files of the server's certificate chain and key; a client CA makes it mutual TLS.
    tls_cert: Path | None = option(None, "PEM certificate chain of the server (enables TLS)", metavar="PATH")
    tls_key: Path | None = option(None, "PEM private key of the server", metavar="PATH")
    tls_client_ca: Path | None = option(
        None, "PEM CA bundle; clients must present a certificate it signed (mutual TLS)", metavar="PATH"
    )
    health_port: int | None = option(
        None,
        "also serve grpc.health.v1 alone, in plaintext, on this port (for probes that cannot speak TLS; "
        "0 picks one)",
        minimum=0,
        maximum=65535,
        default_text="off",
        metavar="PORT",
    )
    # Limits against abuse (see fronts/grpc/limits.py); each over-limit request gets a clear status.
    max_message_bytes: int = option(
        64 * 1024 * 1024,
        "largest request or response message (larger -> RESOURCE_EXHAUSTED)",
        minimum=1,
        default_text="64 MiB",
    )
    max_chars_per_message: int = option(
        1_000_000, "most characters in one chat message or text input (more -> INVALID_ARGUMENT)", minimum=1
    )
    max_concurrent_rpcs: int = option(
        1024, "most RPCs handled at once, health checks excepted (more -> RESOURCE_EXHAUSTED)", minimum=1
    )
    # Let several processes bind the same port (SO_REUSEPORT); the kernel spreads connections.
    reuse_port: bool = option(False, "let several server processes listen on the same port (SO_REUSEPORT)")
    max_connection_age_s: float | None = option(
        None,
        "end each client connection after this many seconds, so that clients re-resolve DNS and find new "
        "replicas",
        flag="--max-connection-age",
        minimum=0,
        exclusive_minimum=True,
        default_text="never",
    )
    model_control_mode: ModelControlMode = option(
        ModelControlMode.NONE,
        "none: load every model at start; explicit: LoadModel/UnloadModel RPCs and "
        "--load-model; poll: rescan the repository every --repository-poll-secs",
    )
    repository_poll_s: float = option(
        15.0,
        "poll mode: seconds between rescans of the repository",
        flag="--repository-poll-secs",
        minimum=0,
        exclusive_minimum=True,
    )
    load_models: tuple[str, ...] = option(
        (),
        "explicit mode: a model to load at start (repeatable; in the environment, comma-separated)",
        flag="--load-model",
        metavar="NAME",
        default_text="none",
    )
    metrics_port: int | None = option(
        None,
        "serve Prometheus metrics on http://HOST:PORT/metrics (0 picks a port)",
        minimum=0,
        maximum=65535,
        default_text="off",
        metavar="PORT",
    )
    # KServe v2 REST (Triton's HTTP API), the RL routes and /metrics,
    # with the same TLS, auth and limits as gRPC.
    http_port: int | None = option(
        8000,
        "KServe v2 REST (Triton's HTTP API), the RL-framework routes and /metrics on this port (Triton's "
        "default 8000; 0 picks one; -1: no HTTP)",
        minimum=0,
        maximum=65535,
        metavar="PORT",
        read=lambda port: None if port == -1 else port,
    )

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "model_control_mode", ModelControlMode(self.model_control_mode))
        except ValueError:
            modes = ", ".join(m.value for m in ModelControlMode)
            raise ValueError(
                f"model control mode must be one of {modes}, got {self.model_control_mode!r}"
            ) from None
        for opt in serve_options():
            opt.check(getattr(self, opt.name))
        if not Path(self.model_repository).is_dir():
            raise ValueError(f"model repository {str(self.model_repository)!r} is not a directory")
        if self.auth_token is not None and not self.auth_token.strip():
            raise ValueError("auth token is empty")
        if self.load_models and self.model_control_mode != ModelControlMode.EXPLICIT:
            raise ValueError(
                "--load-model needs --model-control-mode explicit (the other modes load every model)"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
        for path in (self.tls_cert, self.tls_key, self.tls_client_ca):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"TLS file {str(path)!r} does not exist")


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class ServeOption:
    """One `serve` option as the declaration of its ServerSettings field gives it."""

    name: str  # the ServerSettings field
    flag: str  # --port
    env: str  # REWARD_SERVER_PORT
    kind: type  # the value's type: int, float, str, bool, Path or an Enum
    repeated: bool  # a tuple: the flag repeats; the variable is comma-separated
    default: Any  # MISSING: required
    spec: Option

    @property
    def dest(self) -> str:
        """The argparse attribute of the flag (--grace-period: grace_period)."""
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def choices(self) -> tuple[str, ...] | None:
        return tuple(m.value for m in self.kind) if issubclass(self.kind, enum.Enum) else None

    def help_text(self) -> str:
        """The help line: what it does, its default, its environment variable."""
        if self.required:
            shown = "required"
        else:
            text = self.spec.default_text
            shown = "default: " + (text if text is not None else _shown(self.default))
        return f"{self.spec.help} ({shown}; env {self.env})"

    def parse(self, text: str) -> Any:
        """One command-line value as the option's type (before `read`)."""
        try:
            return self.kind(text)
        except ValueError:
            wanted = {int: "an integer", float: "a number"}.get(self.kind)
            if wanted is None:
                raise
            raise ValueError(f"expected {wanted}") from None

    def from_env(self, raw: str) -> Any:
        """The option's value from its environment variable; a clear ValueError naming it otherwise."""
        value = raw.strip()
        if not value:
            raise ValueError(f"${self.env} is set but empty: give it a value or unset it")
        try:
            if self.kind is bool:
                if value.lower() not in _TRUE + _FALSE:
                    raise ValueError(f"expected one of {', '.join(_TRUE + _FALSE)}")
                return value.lower() in _TRUE
            if self.repeated:
                return tuple(self.parse(part.strip()) for part in value.split(",") if part.strip())
            if self.choices is not None and value not in self.choices:
                raise ValueError(f"expected one of {', '.join(self.choices)}")
            return self.parse(value)
        except ValueError as e:
            raise ValueError(f"${self.env}={raw!r}: {e}") from None

    def check(self, value: Any) -> None:
        """Refuse a value outside the declared bounds (None, where allowed, is never out of bounds)."""
        spec = self.spec
        if value is None or (spec.minimum is None and spec.maximum is None):
            return
        low_ok = spec.minimum is None or (
            value > spec.minimum if spec.exclusive_minimum else value >= spec.minimum
        )
        high_ok = spec.maximum is None or value <= spec.maximum
        if low_ok and high_ok:
            return
        if spec.minimum is not None and spec.maximum is not None:
            wanted = f"in {_shown(spec.minimum)}..{_shown(spec.maximum)}"
        else:
            wanted = f"{'>' if spec.exclusive_minimum else '>='} {_shown(spec.minimum)}"
        raise ValueError(f"{self.flag} must be {wanted}, got {value}")


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "off"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _kind(hint: Any) -> tuple[type, bool]:
    """(the value type, repeated) of a field's type hint: `int | None`, `tuple[str, ...]`."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return args[0], True
    if len(args) == 1:  # X | None
        return args[0], False
    return hint, False


@functools.cache
def serve_options() -> tuple[ServeOption, ...]:
    """Every `serve` option, in declaration order."""
    hints = typing.get_type_hints(ServerSettings)
    out = []
    for f in fields(ServerSettings):
        spec = f.metadata.get("option")
        if spec is None:
            continue
        flag = spec.flag or "--" + f.name.replace("_", "-")
        kind, repeated = _kind(hints[f.name])
        env = ENV_PREFIX + flag.removeprefix("--").replace("-", "_").upper()
        out.append(ServeOption(f.name, flag, env, kind, repeated, f.default, spec))
    return tuple(out)


@dataclass(frozen=True)
class FromEnv:
    """An option's value still as its environment variable's text: parsed when settings are built, so
    that a bad variable fails `serve` only, with a message naming it."""

    raw: str


def env_defaults(environ: Mapping[str, str]) -> dict[str, FromEnv]:
    """argparse defaults (by dest) for the options whose environment variable is set."""
    return {opt.dest: FromEnv(environ[opt.env]) for opt in serve_options() if opt.env in environ}


def settings_from_options(
    values: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> ServerSettings:
    """ServerSettings from parsed `serve` options (by dest; a FromEnv is parsed here). ValueError or
    OSError (an unreadable token file) when a value is refused."""
    environ = os.environ if environ is None else environ
    kwargs: dict[str, Any] = {}
    for opt in serve_options():
        value = values.get(opt.dest, opt.default)
        if isinstance(value, FromEnv):
            value = opt.from_env(value.raw)
        if value is MISSING:
            raise ValueError(f"{opt.flag} (or ${opt.env}) is required")
        if opt.repeated:
            value = tuple(value)
        elif isinstance(value, str) and opt.kind is not str:
            value = opt.parse(value)  # a path or a choice, kept as typed on the command line
        if value is not None and opt.spec.read is not None:
            value = opt.spec.read(value)
        kwargs[opt.name] = value
    if kwargs["auth_token"] is None:
        kwargs["auth_token"] = read_auth_token(None, environ)
    return ServerSettings(**kwargs)


def read_auth_token(path: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The token from a file (its content, stripped), else from $REWARD_SERVER_AUTH_TOKEN, else None. A file
    or a variable that is empty is refused: an empty token would silently turn authentication off."""
    if path:
        return read_token_file(path)
    environ = os.environ if environ is None else environ
    if AUTH_TOKEN_ENV not in environ:
        return None
    token = environ[AUTH_TOKEN_ENV].strip()
    if not token:
        raise ValueError(
            f"${AUTH_TOKEN_ENV} is set but empty (an empty token would turn authentication off): "
            "set a token or unset it"
        )
    return token
