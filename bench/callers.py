"""Many callers: served rate and latency of the demo model at 64, 256 and 1024 concurrent callers,
side by side.

    .venv/bin/python -m bench.callers [--callers 64,256,1024] [--rounds 2] [--duration 5]

One server (the ready-to-serve repository's `demo` model, served in this process as the suite serves
its models) and the suite's closed-loop load process (bench/load.py: one channel per caller, one
request at a time, small chats of 8-48 tokens); the caller counts alternate within each round, so a
machine that gets slower or faster during the run moves them all alike. Prints each run, then per
count the median requests/s, p50 and p99 over the rounds, errors, and the CPU the callers used.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from pathlib import Path

from bench.suite import ROOT, SuiteOptions, drive
from bench.workloads import score_workload
from reward_server.server import build_server
from reward_server.settings import ServerSettings

DEMO = ROOT / "model_repository"


async def run(
    callers: tuple[int, ...], rounds: int, options: SuiteOptions, repository: Path
) -> dict[int, list[dict]]:
    running, port = await build_server(ServerSettings(repository, host="127.0.0.1", port=0, http_port=None))
    try:
        encoder = running.repository.resolve("demo", "").encoder
        workload = score_workload("callers", encoder, 256, 8, 48, seed=3)
        runs: dict[int, list[dict]] = {count: [] for count in callers}
        for round_ in range(rounds):
            for count in callers:
                result = await drive(f"127.0.0.1:{port}", "demo", "score", workload, count, options)
                runs[count].append(result)
                print(
                    f"round {round_}: {count:5d} callers: {result['requests_per_s']:7.0f} req/s  "
                    f"p50 {result['latency_p50_ms']:7.1f} ms  p99 {result['latency_p99_ms']:7.1f} ms  "
                    f"errors {result['errors']}  caller cores {result['client_cores']:.2f}",
                    flush=True,
                )
        return runs
    finally:
        await running.stop(0)


def table(runs: dict[int, list[dict]]) -> str:
    lines = [
        "| callers | req/s (median) | p50 ms | p99 ms | errors | req/s per round |",
        "|---|---|---|---|---|---|",
    ]
    for count, results in runs.items():

        def median(key: str, results: list[dict] = results) -> float:
            return statistics.median(r[key] for r in results)

        lines.append(
            f"| {count} | {median('requests_per_s'):.0f} | {median('latency_p50_ms'):.1f} | "
            f"{median('latency_p99_ms'):.1f} | {sum(r['errors'] for r in results)} | "
            f"{', '.join(format(r['requests_per_s'], '.0f') for r in results)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.callers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--callers", default="64,256,1024", help="concurrent callers, comma-separated")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run (after warmup)")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--repository", type=Path, default=DEMO)
    args = parser.parse_args()
    callers = tuple(int(x) for x in args.callers.split(","))
    options = SuiteOptions(warmup_s=args.warmup, duration_s=args.duration)
    runs = asyncio.run(run(callers, args.rounds, options, args.repository))
    print(table(runs))


if __name__ == "__main__":
    main()
