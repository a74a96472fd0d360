"""Container health check: exit 0 when the running `reward-server serve` answers SERVING for the
readiness health name, 1 otherwise (the image's HEALTHCHECK runs it).

It reads the server's own command line from /proc and parses it with the server's parser, so it
follows --host, --port and --health-port wherever they are set. With TLS on the serving port
(--tls-cert) it needs --health-port (plaintext, health only), as Kubernetes' gRPC probes do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from reward_server.cli import build_parser
from reward_server.server import READY_SERVICE_NAME

ANY_ADDRESS = ("[::]", "::", "0.0.0.0", "")


def server_argv(cmdline: list[str]) -> list[str] | None:
    """The arguments after the program name when `cmdline` runs `reward-server serve`, else None."""
    for i, word in enumerate(cmdline):
        if Path(word).name == "reward-server" or (
            word == "reward_server" and i > 0 and cmdline[i - 1] == "-m"
        ):
            rest = cmdline[i + 1 :]
            return rest if "serve" in rest else None
    return None


def find_server(pid: int | None = None, proc: Path = Path("/proc")) -> list[str] | None:
    """The arguments of process `pid`, or of the first `reward-server serve` process (the container's)."""
    entries = [proc / str(pid)] if pid is not None else sorted(proc.glob("[0-9]*"), key=lambda p: int(p.name))
    for entry in entries:
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
        except OSError:
            continue
        argv = server_argv(cmdline)
        if argv is not None:
            return argv
    return None


def target(argv: list[str]) -> str:
    """Where to ask: the health port if there is one, else the serving port (plaintext only)."""
    args = build_parser().parse_args(argv)
    host = "127.0.0.1" if args.host in ANY_ADDRESS else args.host
    if args.health_port is not None:
        return f"{host}:{args.health_port}"
    if args.tls_cert is not None:
        raise SystemExit("the serving port speaks TLS: start the server with --health-port for health checks")
    return f"{host}:{args.port}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--service", default=READY_SERVICE_NAME, help="health name to ask for (default: %(default)s)"
    )
    parser.add_argument("--timeout", type=float, default=4.0)
    parser.add_argument(
        "--pid", type=int, default=None, help="the server's process (default: the first found)"
    )
    options = parser.parse_args()
    argv = find_server(options.pid)
    if argv is None:
        print("no `reward-server serve` process found", file=sys.stderr)
        return 1
    address = target(argv)
    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=options.service), timeout=options.timeout
            )
        except grpc.RpcError as e:
            print(f"{address}: {e.code().name} {e.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    print(f"{address} {options.service}: {status}")
    return 0 if answer.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
