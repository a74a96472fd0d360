"""`python -m bench run`: the benchmark suite (bench/suite.py): suite.json, suite.png and, with
--profile, py-spy summaries of each workload's served run at the top concurrency
(profile_<workload>_server.txt)."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import platform
import tempfile
from pathlib import Path

from bench.report import plot, table
from bench.suite import SHAPES, SuiteOptions, run_suite


def device_name() -> str:
    """The GPU the bench ran on, or the CPU's architecture and core count."""
    import os

    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.machine()} CPU x{os.cpu_count()}"


def _concurrency(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the suite, write suite.json and suite.png")
    run.add_argument("--workloads", default="mixed,rank,tiny")
    run.add_argument("--systems", default="server,server-full,naive,bare-grpc")
    run.add_argument("--concurrency", type=_concurrency, help="one sweep for every workload, e.g. 1,8,64")
    run.add_argument("--duration", type=float, default=5.0, help="measured seconds per run (after warmup)")
    run.add_argument("--warmup", type=float, default=1.5)
    run.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="the served models' budget (default: unset, so the server tunes it at load)",
    )
    run.add_argument("--no-floor", action="store_true")
    run.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="pairs of (reference, server) run back to back after the sweeps, for the median "
        "server/floor (mixed) and server/bare grpc.aio (tiny) ratios; 0: none",
    )
    run.add_argument("--out", type=Path, default=Path("bench/results"))
    run.add_argument("--profile", action="store_true", help="py-spy each served run at the top concurrency")
    run.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        default="bench",
        help="the `rm` model: bench (4 layers x 256, for a CPU) or internlm2-1.8b (for a GPU)",
    )
    run.add_argument("--dtype", default="float32", help="the `rm` model's dtype (float16 on a GPU)")
    run.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's dense peak at that dtype (H100 / H200 fp16: 989): adds `mixed`'s MFU",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    options = SuiteOptions(
        workloads=tuple(args.workloads.split(",")),
        systems=tuple(args.systems.split(",")),
        warmup_s=args.warmup,
        duration_s=args.duration,
        floor=not args.no_floor,
        max_batch_tokens=args.max_batch_tokens,
        repeats=args.repeats,
        profile_to=args.out if args.profile else None,
        bench_shape=SHAPES[args.shape],
        rm_dtype=args.dtype,
        peak_tflops=args.peak_tflops,
        **(
            {"concurrency": {w: args.concurrency for w in ("mixed", "rank", "tiny")}}
            if args.concurrency
            else {}
        ),
    )
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(run_suite(options, Path(tmp)))
    results["title"] = f"reward-server bench, {device_name()}, {datetime.date.today().isoformat()}"
    (args.out / "suite.json").write_text(json.dumps(results, indent=1))
    print(table(results))
    try:
        plot(results, args.out / "suite.png")
    except ImportError:
        print("matplotlib is not installed (pip install '.[bench]'): no plot")
    print(f"wrote {args.out / 'suite.json'}")


if __name__ == "__main__":
    main()
