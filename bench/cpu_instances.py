"""CPU instances and intra-op threads: `mixed` served by one `rm` model under instance_group settings.

    .venv/bin/python -m bench.cpu_instances [--rounds 2] [--settings 1x0,2x0,2x2] [--concurrency 64]

Each setting COUNTxTHREADS (instance_group count, `pytorch { intra_op_threads }`, 0 = unset) is served by
a fresh server process (OpenMP teams outlive the runs that made them, so settings must not share a
process), driven by the suite's load process with the `mixed` workload; rounds alternate the settings.
Prints tokens/s per setting and round, and the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.suite import BENCH_SHAPE, ROOT, SuiteOptions, drive, make_workload
from reward_server.offline.tiny_models import write_tiny_checkpoint
from reward_server.repository.config import RewardDefaults, config_pbtxt
from reward_server.server import build_server
from reward_server.settings import ServerSettings


async def serve_once(count: int, threads: int, concurrency: int, options: SuiteOptions) -> float:
    """tokens/s of one `mixed` run against `rm` served with `count` CPU instances of `threads` threads."""
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "rm"
        model.mkdir()
        text = config_pbtxt(
            "rm",
            RewardDefaults(max_sequence_length=BENCH_SHAPE.max_position_embeddings),
            max_batch_size=64,
            max_queue_delay_us=2000,
            max_queue_size=0,
        )
        text = text.replace("kind: KIND_AUTO count: 1", f"kind: KIND_CPU count: {count}")
        text = text.replace("dynamic_batching {", "dynamic_batching {\n  max_batch_tokens: 1024")
        if threads:
            text += f"\npytorch {{ intra_op_threads: {threads} }}\n"
        (model / "config.pbtxt").write_text(text)
        write_tiny_checkpoint(model / "1", shape=BENCH_SHAPE, seed=0)
        running, port = await build_server(
            ServerSettings(Path(tmp), host="127.0.0.1", port=0, http_port=None)
        )
        try:
            workload = make_workload("mixed", running, options)
            return (await drive(f"127.0.0.1:{port}", "rm", "score", workload, concurrency, options))[
                "tokens_per_s"
            ]
        finally:
            await running.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cpu_instances",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settings", default="1x0,2x0,2x2", help="COUNTxTHREADS, comma-separated")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one setting in this process
    args = parser.parse_args()
    if args.one:
        count, threads = (int(x) for x in args.one.split("x"))
        print(
            json.dumps(
                asyncio.run(serve_once(count, threads, args.concurrency, SuiteOptions(duration_s=6.0)))
            )
        )
        return
    rates: dict[str, list[float]] = {setting: [] for setting in args.settings.split(",")}
    for round_ in range(args.rounds):
        for setting in rates:
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.cpu_instances",
                    "--one",
                    setting,
                    "--concurrency",
                    str(args.concurrency),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            rates[setting].append(json.loads(out.strip().splitlines()[-1]))
            print(f"round {round_}: {setting}: {rates[setting][-1]:.0f} tokens/s", flush=True)
    for setting, values in rates.items():
        print(f"{setting}: median {statistics.median(values):.0f} tokens/s {[round(v) for v in values]}")


if __name__ == "__main__":
    main()
