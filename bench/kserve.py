"""Triton's gRPC protocol (ModelInfer) against our Score, side by side in one run, on one server.

    python -m bench.kserve [--workloads tiny,mixed] [--concurrency 64] [--duration 3] [--rounds 3]
    python -m bench.kserve --perf-analyzer PATH [--protocols grpc] [--perf-concurrency 1,8,64]

The suite's server, models and seeded workloads (bench/suite.py); the clients in a separate process
(`python -m bench.kserve load < spec.json`): bench/load.py's closed loop, C clients, each with its own
channel, one request at a time, one conversation per request. Both protocols are called through their
generated stubs with a request built per call (Score: a `conversation` input; ModelInfer: a `messages`
tensor), so the client does the same work for each and the difference is the server's protocol layer.
Score and ModelInfer alternate, `rounds` pairs per workload; the result is each pair's ratio of request
rates (ModelInfer / Score) and their median. The difference between the two is the protocol layer only:
both reach the same core, batcher and model.

With --perf-analyzer (Triton's load generator, e.g. the `bin/perf_analyzer` of the tritonclient==2.51.0
manylinux wheel, which needs libb64 and libcudart.so.12 on the library path but no GPU), it runs instead
against the `tiny` model, sending one `messages` row per request from an --input-data file, at each
concurrency, and reports its throughput, latency and the server-side statistics it read back.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import math
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import grpc.aio
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from reward_api.v1 import reward_pb2, reward_pb2_grpc
from reward_server.kserve import encode_bytes_raw

from .suite import ROOT, WORKLOAD_MODEL, SuiteOptions, make_workload, write_repository

log = logging.getLogger(__name__)

# A `mixed` request takes ~40 ms of compute on a small CPU: at 64 clients a short window counts few of
# them, so its windows (both protocols) are this many times longer.
MIXED_DURATION_FACTOR = 4.0


def infer_request(model: str, chat: list[dict]) -> pb.ModelInferRequest:
    """One ModelInferRequest: the conversation as one `messages` row, raw (length-prefixed) bytes."""
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="messages", datatype="BYTES", shape=[1, 1])
    request.raw_input_contents.append(encode_bytes_raw([json.dumps(chat)]))
    return request


def score_request(model: str, chat: list[dict]) -> reward_pb2.ScoreRequest:
    conversation = reward_pb2.Conversation(messages=[reward_pb2.Message(role=m["role"], content=m["content"]) for m in chat])
    return reward_pb2.ScoreRequest(model=model, inputs=[reward_pb2.ScoreInput(conversation=conversation)])


async def _infer_tokens(channel: grpc.aio.Channel, model: str, chat: list[dict]) -> int:
    response = await service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(infer_request(model, chat), timeout=600)
    names = [o.name for o in response.outputs]
    return int(np.frombuffer(response.raw_output_contents[names.index("num_tokens")], "<i4").sum())


async def _score_tokens(channel: grpc.aio.Channel, model: str, chat: list[dict]) -> int:
    response = await reward_pb2_grpc.RewardServiceStub(channel).Score(score_request(model, chat), timeout=600)
    return sum(r.num_tokens for r in response.results)


async def run_load(spec: dict) -> dict:
    """bench/load.py's closed loop over one protocol ("score" or "model_infer")."""
    call = {"score": _score_tokens, "model_infer": _infer_tokens}[spec["protocol"]]
    requests = spec["requests"]
    next_index = itertools.count()
    window_start = time.perf_counter() + spec["warmup_s"]
    window_end = window_start + spec["duration_s"]
    latencies: list[float] = []
    errors = tokens = 0

    async def client() -> None:
        nonlocal errors, tokens
        async with grpc.aio.insecure_channel(spec["target"]) as channel:
            while time.perf_counter() < window_end:
                request = requests[next(next_index) % len(requests)]
                start = time.perf_counter()
                try:
                    read = await call(channel, spec["model"], request["chat"])
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                done = time.perf_counter()
                if window_start <= done <= window_end:
                    latencies.append(done - start)
                    tokens += read

    tasks = [asyncio.create_task(client()) for _ in range(spec["concurrency"])]
    await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    duration = spec["duration_s"]
    return {"requests": len(latencies), "errors": errors, "requests_per_s": len(latencies) / duration,
            "tokens_per_s": tokens / duration,
            "latency_mean_ms": 1e3 * sum(latencies) / len(latencies) if latencies else float("nan")}


async def drive_protocol(protocol: str, target: str, model: str, workload, concurrency: int,
                         options: SuiteOptions) -> dict:
    spec = {"protocol": protocol, "target": target, "model": model, "requests": workload.requests, "concurrency": concurrency,
            "warmup_s": options.warmup_s, "duration_s": options.duration_s}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.kserve", "load", cwd=ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate(json.dumps(spec).encode())
    if process.returncode:
        raise RuntimeError(f"load process failed ({process.returncode}): {err.decode()[-2000:]}")
    return json.loads(out)


async def side_by_side(options: SuiteOptions, repo: Path, workloads: tuple[str, ...], concurrency: int,
                       rounds: int) -> dict:
    from reward_server.settings import ServerSettings
    from reward_server.transport import build_server

    write_repository(repo, options)
    running, port = await build_server(ServerSettings(model_repository=repo, host="127.0.0.1", port=0, http_port=None))
    target = f"127.0.0.1:{port}"
    results: dict = {"concurrency": concurrency, "duration_s": options.duration_s, "workloads": {}}
    try:
        for name in workloads:
            workload, model = make_workload(name, running, options), WORKLOAD_MODEL[name]
            factor = MIXED_DURATION_FACTOR if name == "mixed" else 1.0
            windows = replace(options, duration_s=options.duration_s * factor, warmup_s=options.warmup_s * factor)
            pairs, ratios = [], []
            for index in range(rounds):
                score = await drive_protocol("score", target, model, workload, concurrency, windows)
                infer = await drive_protocol("model_infer", target, model, workload, concurrency, windows)
                ratio = infer["requests_per_s"] / score["requests_per_s"] if score["requests_per_s"] else float("nan")
                log.info("%s round %d: Score %.1f req/s (%d errors), ModelInfer %.1f req/s (%d errors): %.3fx", name,
                         index + 1, score["requests_per_s"], score["errors"], infer["requests_per_s"], infer["errors"],
                         ratio)
                pairs.append({"score": score, "model_infer": infer, "ratio": ratio})
                ratios.append(ratio)
            finite = [r for r in ratios if math.isfinite(r)]
            results["workloads"][name] = {"pairs": pairs,
                                          "median_ratio": statistics.median(finite) if finite else float("nan")}
    finally:
        await running.stop(0)
    return results


PERF_LINE_KEYS = ("Throughput:", "Avg latency:", "p99 latency:", "Inference count:", "Execution count:",
                  "Successful request count:", "Avg request latency:")


def perf_analyzer_input(path: Path, chat: list[dict]) -> Path:
    """perf_analyzer's --input-data: one `messages` row (a BYTES element of shape [1])."""
    path.write_text(json.dumps({"data": [{"messages": {"content": [json.dumps(chat)], "shape": [1]}}]}))
    return path


async def perf_analyzer_runs(binary: str, options: SuiteOptions, repo: Path, protocols: tuple[str, ...],
                             concurrency: tuple[int, ...], window_ms: int) -> list[dict]:
    from reward_server.settings import ServerSettings
    from reward_server.transport import build_server

    write_repository(repo, options)
    running, port = await build_server(ServerSettings(model_repository=repo, host="127.0.0.1", port=0, http_port=None))
    workload = make_workload("tiny", running, options)
    data = perf_analyzer_input(repo / "input.json", workload.requests[0]["chat"])
    runs = []
    try:
        for protocol in protocols:
            for level in concurrency:
                command = [binary, "-m", "tiny", "-i", protocol, "-u", f"127.0.0.1:{port}", "--input-data", str(data),
                           "--concurrency-range", str(level), "--measurement-interval", str(window_ms),
                           "--stability-percentage", "100", "--max-trials", "4"]
                done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=300)
                lines = [line.strip() for line in done.stdout.splitlines() if line.strip().startswith(PERF_LINE_KEYS)]
                errors = [line for line in (done.stdout + done.stderr).splitlines()
                          if "rror" in line or "Failed" in line]
                runs.append({"protocol": protocol, "concurrency": level, "returncode": done.returncode,
                             "lines": lines, "errors": errors, "command": " ".join(command)})
                log.info("perf_analyzer -i %s, concurrency %d: exit %d\n  %s", protocol, level, done.returncode,
                         "\n  ".join(lines + errors))
    finally:
        await running.stop(0)
    return runs


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["load"]:
        print(json.dumps(asyncio.run(run_load(json.load(sys.stdin)))))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.kserve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="tiny,mixed")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per run (after warmup)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3, help="(Score, ModelInfer) pairs per workload")
    parser.add_argument("--mixed-requests", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--perf-analyzer", default=None, metavar="PATH", help="run Triton's perf_analyzer instead")
    parser.add_argument("--protocols", default="grpc", help="perf_analyzer's -i values, e.g. grpc,http")
    parser.add_argument("--perf-concurrency", default="1,8,64")
    parser.add_argument("--perf-window-ms", type=int, default=3000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = SuiteOptions(warmup_s=args.warmup, duration_s=args.duration, mixed_requests=args.mixed_requests)
    if args.perf_analyzer:
        with tempfile.TemporaryDirectory() as tmp:
            runs = asyncio.run(perf_analyzer_runs(
                args.perf_analyzer, options, Path(tmp), tuple(args.protocols.split(",")),
                tuple(int(c) for c in args.perf_concurrency.split(",")), args.perf_window_ms))
        if args.out:
            args.out.write_text(json.dumps(runs, indent=1))
        return 0 if all(r["returncode"] == 0 for r in runs) else 1
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(side_by_side(options, Path(tmp), tuple(args.workloads.split(",")), args.concurrency,
                                           args.rounds))
    for name, entry in results["workloads"].items():
        rates = ", ".join(f"{p['model_infer']['requests_per_s']:.0f}/{p['score']['requests_per_s']:.0f}"
                          for p in entry["pairs"])
        print(f"{name} at {args.concurrency} clients: ModelInfer/Score req/s {rates}; median ratio "
              f"{entry['median_ratio']:.3f}x")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
