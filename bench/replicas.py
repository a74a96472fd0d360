"""One host, several devices: one server process per device on its own port (the client balances
with round_robin) vs several processes sharing one port with SO_REUSEPORT (the kernel balances).
Measured with CPU processes standing in for devices, side by side in one run.

    .venv/bin/python bench/replicas.py [--processes 2] [--callers 8] [--requests 400] \
        [--out .bench/replicas.json]

Each server process is `reward-server serve` with OMP_NUM_THREADS=1 (one core = one "device") and a
random 4-layer, 256-wide Llama; each request scores one 128-token sequence. For each layout, C callers
(threads) send the same N requests in a closed loop; reported: requests/s, latency p50 / p99, and the
share of CPU time each server process spent (an even spread is 1/P each). The shared-port layout is
measured with one channel, and with one connection per caller (as separate actor processes would have).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from bench_model import SHAPE, write_bench_model  # noqa: E402

from helpers import ServerProcess, start_servers  # noqa: E402
from reward_client import RewardClient  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(clients: list[RewardClient], requests: list[list[int]], callers: int) -> dict:
    queue = list(requests)
    lock = threading.Lock()
    latencies: list[float] = []

    def caller(index: int) -> None:
        client = clients[index % len(clients)]
        while True:
            with lock:
                if not queue:
                    return
                ids = queue.pop()
            start = time.perf_counter()
            client.score([ids])
            with lock:
                latencies.append(time.perf_counter() - start)

    for client in clients:  # connect every channel (and warm every replica it reaches)
        for _ in range(4):
            client.score([requests[0]])
    start = time.perf_counter()
    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "requests_per_s": len(requests) / elapsed,
        "latency_p50_ms": 1e3 * statistics.median(latencies),
        "latency_p99_ms": 1e3 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def measure(
    servers: list[ServerProcess], clients: list[RewardClient], requests: list[list[int]], callers: int
) -> dict:
    before = [cpu_seconds(s.proc.pid) for s in servers]
    result = load(clients, requests, callers)
    used = [cpu_seconds(s.proc.pid) - b for s, b in zip(servers, before)]
    result["cpu_share_per_process"] = [round(u / max(sum(used), 1e-9), 3) for u in used]
    return result


def run(args: argparse.Namespace) -> dict:
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the server processes: one core each
    rng = random.Random(0)
    requests = [[rng.randrange(5, SHAPE.vocab_size) for _ in range(128)] for _ in range(args.requests)]
    results: dict = {
        "processes": args.processes,
        "callers": args.callers,
        "requests": args.requests,
        "model": "llama 4 layers x 256 (random), 128 tokens per request",
        "layouts": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        write_bench_model(repo, "rm")
        layouts = results["layouts"]

        servers = start_servers(1, repo)
        try:
            with RewardClient(servers[0].target, model="rm", chunk_size=None) as client:
                layouts["one process"] = measure(servers, [client], requests, args.callers)
        finally:
            for server in servers:
                server.kill()

        servers = start_servers(args.processes, repo)
        try:
            with RewardClient([s.target for s in servers], model="rm", chunk_size=None) as client:
                layouts["own ports, client round_robin"] = measure(servers, [client], requests, args.callers)
        finally:
            for server in servers:
                server.kill()

        port = free_port()
        servers = [ServerProcess(repo, "--reuse-port", port=port) for _ in range(args.processes)]
        try:
            for server in servers:
                server.wait_started()
            target = f"127.0.0.1:{port}"
            with RewardClient(target, model="rm", chunk_size=None) as client:
                layouts["shared port (SO_REUSEPORT), 1 channel"] = measure(
                    servers, [client], requests, args.callers
                )
            # Channels of one process share one connection unless each has its own subchannel pool:
            # this stands in for callers in separate processes (RL actors), one connection each.
            clients = [
                RewardClient(
                    target, model="rm", chunk_size=None, options=[("grpc.use_local_subchannel_pool", 1)]
                )
                for _ in range(args.callers)
            ]
            try:
                layouts[f"shared port (SO_REUSEPORT), {args.callers} channels"] = measure(
                    servers, clients, requests, args.callers
                )
            finally:
                for client in clients:
                    client.close()
        finally:
            for server in servers:
                server.kill()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--out", type=Path, default=Path(".bench/replicas.json"))
    args = parser.parse_args()
    results = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"{'layout':42} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}  cpu share per process")
    for name, r in results["layouts"].items():
        print(
            f"{name:42} {r['requests_per_s']:7.1f} {r['latency_p50_ms']:7.1f} {r['latency_p99_ms']:7.1f}  "
            f"{r['cpu_share_per_process']}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
