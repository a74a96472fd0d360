"""Where a `tiny` request's time goes: before our handler starts, in it, and after it, side by side
with bare grpc.aio (whose handler takes no time), at one concurrency, in alternating rounds.

    .venv/bin/python -m bench.request_time [--rounds 3] [--concurrency 64] [--duration 5]

The clients (bench/load.py, their own process) stamp each call with its send time (time.time(), one
clock for both processes on one host); the server records when each call's handler starts and ends.
Per system: RPC/s, the mean client latency = before + handler + after, and for our server the batcher's
mean batch size. Before = the call's way through the client, gRPC and the event loop to the handler;
after = the response's way back. Runs the suite's repository and `tiny` workload (bench/suite.py).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench.load import SENT_AT_KEY
from bench.peers import BareServicer, start_grpc
from bench.suite import SuiteOptions, drive, make_workload, write_repository
from reward_server.fronts.grpc.servicer import RewardServicer
from reward_server.server import build_server
from reward_server.settings import ServerSettings

# (sent_at, handler start, handler end) of every stamped Score call, both servers.
CALLS: list[tuple[float, float, float]] = []


def handler_timed(score):
    """A servicer's Score that records its start and end for stamped calls."""

    async def timed(self, request, context):
        start = time.time()
        try:
            return await score(self, request, context)
        finally:
            sent = dict(context.invocation_metadata()).get(SENT_AT_KEY)
            if sent is not None:
                CALLS.append((float(sent), start, time.time()))

    return timed


def split(run: dict, window: tuple[float, float]) -> dict:
    """The run's mean latency split into before / handler / after, over calls sent inside the window."""
    calls = [c for c in CALLS if window[0] <= c[0] <= window[1]]
    before = 1e3 * statistics.mean(start - sent for sent, start, _ in calls)
    handler = 1e3 * statistics.mean(end - start for _, start, end in calls)
    return {
        "rpc_per_s": run["requests_per_s"],
        "latency_ms": run["latency_mean_ms"],
        "before_ms": before,
        "handler_ms": handler,
        "after_ms": run["latency_mean_ms"] - before - handler,
    }


async def measure(rounds: int, concurrency: int, options: SuiteOptions) -> dict[str, list[dict]]:
    RewardServicer.Score = handler_timed(RewardServicer.Score)  # before the server wraps its methods
    BareServicer.Score = handler_timed(BareServicer.Score)
    with tempfile.TemporaryDirectory() as tmp:
        running, port = await build_server(
            ServerSettings(write_repository(Path(tmp), options), host="127.0.0.1", port=0, http_port=None)
        )
        bare, bare_port = await start_grpc(BareServicer())
        workload = make_workload("tiny", running, options)
        instance = running.repository.resolve("tiny", "").instances[0]
        out: dict[str, list[dict]] = {"bare-grpc": [], "server": []}
        try:
            for _ in range(rounds):
                for system, target in (("bare-grpc", bare_port), ("server", port)):
                    CALLS.clear()
                    batches, computed = instance.stats.batches, instance.stats.computed
                    run = await drive(
                        f"127.0.0.1:{target}", "tiny", "score", workload, concurrency, options, stamp=True
                    )
                    end = time.time()
                    row = split(run, (end - options.duration_s, end))
                    if system == "server":
                        row["mean_batch"] = (instance.stats.computed - computed) / max(
                            1, instance.stats.batches - batches
                        )
                    out[system].append(row)
                    print(system, {k: round(v, 1) for k, v in row.items()}, flush=True)
        finally:
            await bare.stop(0)
            await running.stop(0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.request_time",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    results = asyncio.run(measure(args.rounds, args.concurrency, SuiteOptions(duration_s=args.duration)))
    print(f"\nmedians over {args.rounds} rounds, tiny, {args.concurrency} clients:")
    for system, rows in results.items():
        print(
            f"  {system:9s}",
            "  ".join(f"{key} {statistics.median(r[key] for r in rows):.1f}" for key in rows[0]),
        )
    ratios = [s["rpc_per_s"] / b["rpc_per_s"] for s, b in zip(results["server"], results["bare-grpc"])]
    print(
        f"  server / bare grpc.aio RPC/s: median {statistics.median(ratios):.2f} "
        f"{[round(r, 2) for r in ratios]}"
    )


if __name__ == "__main__":
    main()
