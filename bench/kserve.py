"""KServe v2 (Triton's protocol: ModelInfer over gRPC, /infer over HTTP) against our Score, side by side
in one run, on one server.

    python -m bench.kserve [--protocols grpc,http] [--workloads tiny,mixed] [--concurrency 64] [--duration 3]
                           [--rounds 3]
    python -m bench.kserve --perf-analyzer PATH [--protocols grpc] [--perf-concurrency 1,8,64]

The suite's server, models and seeded workloads (bench/suite.py); the clients in a separate process
(`python -m bench.kserve load < spec.json`): bench/load.py's closed loop, C clients, each with its own
channel and stubs (gRPC) or aiohttp session (HTTP), one request at a time, one conversation per request, each
request built per call: Score, a `conversation` input on its generated stub; ModelInfer, a `messages`
tensor (raw bytes) on Triton's generated stub; /infer, the same tensor in the binary tensor extension
(a JSON header, then the raw bytes; the rewards come back raw too). So the client does the same work for
each, and the difference is the server's protocol layer: all reach the same core, batcher and model.
Before measuring, one chat per workload is scored by each protocol and the rewards must agree.
Per round the protocols run one after another (Score first); the result is each round's ratio of request
rates (protocol / Score) and their median, with each run's p50 / p99 latency.

With --perf-analyzer (Triton's load generator, e.g. the `bin/perf_analyzer` of the tritonclient==2.51.0
manylinux wheel, which needs libb64 and libcudart.so.12 on the library path but no GPU), it runs instead
against the `tiny` model, sending one `messages` row per request from an --input-data file, at each
concurrency, and reports its throughput, latency and the server-side statistics it read back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import grpc.aio
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from bench.load import closed_loop, run_load_process
from bench.suite import WORKLOAD_MODEL, SuiteOptions, make_workload, write_repository
from reward_api.v1 import reward_pb2, reward_pb2_grpc
from reward_server.fronts.kserve import encode_bytes_raw

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
    conversation = reward_pb2.Conversation(
        messages=[reward_pb2.Message(role=m["role"], content=m["content"]) for m in chat]
    )
    return reward_pb2.ScoreRequest(model=model, inputs=[reward_pb2.ScoreInput(conversation=conversation)])


# --protocols: the KServe protocols measured against Score (perf_analyzer's -i values).
PROTOCOLS = {"grpc": "model_infer", "http": "http_infer"}
LABELS = {"score": "Score", "model_infer": "ModelInfer (gRPC)", "http_infer": "/infer (HTTP, binary)"}
HEADER_LENGTH = "Inference-Header-Content-Length"  # the binary extension's JSON header size, both ways
RAW_DTYPES = {"FP32": "<f4", "INT32": "<i4"}  # the outputs read here: rewards, num_tokens


def http_infer_body(chat: list[dict]) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of one /infer request in the binary tensor extension: a JSON header describing the
    `messages` row and asking for raw outputs, then the row as raw (length-prefixed) bytes."""
    raw = encode_bytes_raw([json.dumps(chat)])
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "messages",
                    "datatype": "BYTES",
                    "shape": [1, 1],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [
                {"name": name, "parameters": {"binary_data": True}} for name in ("rewards", "num_tokens")
            ],
        }
    ).encode()
    return header + raw, {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"}


def http_infer_outputs(body: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    """The outputs of an /infer response: raw ones in the order the JSON header lists them,
    else its `data`."""
    length = len(body) if header_length is None else int(header_length)
    offset, outputs = length, {}
    for output in json.loads(body[:length])["outputs"]:
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            outputs[output["name"]] = np.asarray(output["data"])
        else:
            outputs[output["name"]] = np.frombuffer(
                body[offset : offset + size], RAW_DTYPES[output["datatype"]]
            )
            offset += size
    return outputs


class GrpcClient:
    """One client's channel and its two stubs, built once per client as an application keeps its stub
    (Triton's stub has some twenty methods: building it per call would bill ModelInfer for it)."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        self.kserve = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)
        self.reward = reward_pb2_grpc.RewardServiceStub(self.channel)

    async def __aenter__(self) -> GrpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()


async def _model_infer(client: GrpcClient, model: str, chat: list[dict]) -> tuple[float, int]:
    response = await client.kserve.ModelInfer(infer_request(model, chat), timeout=600)
    names = [o.name for o in response.outputs]
    raw = response.raw_output_contents
    return (
        float(np.frombuffer(raw[names.index("rewards")], "<f4")[0]),
        int(np.frombuffer(raw[names.index("num_tokens")], "<i4").sum()),
    )


async def _score(client: GrpcClient, model: str, chat: list[dict]) -> tuple[float, int]:
    response = await client.reward.Score(score_request(model, chat), timeout=600)
    return response.results[0].score, sum(r.num_tokens for r in response.results)


async def _http_infer(session: aiohttp.ClientSession, model: str, chat: list[dict]) -> tuple[float, int]:
    body, headers = http_infer_body(chat)
    async with session.post(f"/v2/models/{model}/infer", data=body, headers=headers) as response:
        response.raise_for_status()
        outputs = http_infer_outputs(await response.read(), response.headers.get(HEADER_LENGTH))
    return float(outputs["rewards"][0]), int(outputs["num_tokens"].sum())


# Each protocol's call: (session, model, chat) -> (reward, tokens read).
CALLS: dict[str, Callable[[Any, str, list[dict]], Awaitable[tuple[float, int]]]] = {
    "score": _score,
    "model_infer": _model_infer,
    "http_infer": _http_infer,
}


def _session(protocol: str, target: str, http_target: str | None):
    """What one client opens: a gRPC channel with its stubs, or an aiohttp session on the HTTP port."""
    if protocol == "http_infer":
        return aiohttp.ClientSession(f"http://{http_target}", timeout=aiohttp.ClientTimeout(total=600))
    return GrpcClient(target)


async def run_load(spec: dict) -> dict:
    """bench/load.py's closed loop over one protocol ("score", "model_infer" or "http_infer")."""
    protocol, model = spec["protocol"], spec["model"]

    async def call(session, request: dict) -> tuple[int, int]:
        return 1, (await CALLS[protocol](session, model, request["chat"]))[1]

    return await closed_loop(
        spec["requests"],
        spec["concurrency"],
        spec["warmup_s"],
        spec["duration_s"],
        lambda: _session(protocol, spec["target"], spec.get("http_target")),
        call,
        (grpc.aio.AioRpcError, aiohttp.ClientError),
    )


async def same_rewards(
    protocols: tuple[str, ...], target: str, http_target: str | None, model: str, chat: list[dict]
) -> dict[str, float]:
    """One chat's reward by each protocol; RuntimeError unless all equal Score's (the same core computes
    them one at a time, so they agree to float rounding)."""
    rewards = {}
    for protocol in protocols:
        async with _session(protocol, target, http_target) as session:
            rewards[protocol] = (await CALLS[protocol](session, model, chat))[0]
    if not all(math.isclose(r, rewards["score"], rel_tol=1e-5, abs_tol=1e-5) for r in rewards.values()):
        raise RuntimeError(f"the protocols disagree on one chat's reward ({model}): {rewards}")
    return rewards


async def drive_protocol(
    protocol: str,
    target: str,
    http_target: str | None,
    model: str,
    workload,
    concurrency: int,
    options: SuiteOptions,
) -> dict:
    spec = {
        "protocol": protocol,
        "target": target,
        "http_target": http_target,
        "model": model,
        "requests": workload.requests,
        "concurrency": concurrency,
        "warmup_s": options.warmup_s,
        "duration_s": options.duration_s,
    }
    return await run_load_process("bench.kserve", spec, "load")


async def side_by_side(
    options: SuiteOptions,
    repo: Path,
    workloads: tuple[str, ...],
    concurrency: int,
    rounds: int,
    protocols: tuple[str, ...] = ("grpc", "http"),
) -> dict:
    """`rounds` rounds per workload of Score then each of `protocols` (keys of PROTOCOLS)."""
    from reward_server.server import build_server
    from reward_server.settings import ServerSettings

    measured = tuple(PROTOCOLS[p] for p in protocols)
    write_repository(repo, options)
    running, port = await build_server(
        ServerSettings(
            model_repository=repo, host="127.0.0.1", port=0, http_port=0 if "http_infer" in measured else None
        )
    )
    target = f"127.0.0.1:{port}"
    http_target = f"127.0.0.1:{running.http.port}" if running.http is not None else None
    results: dict = {
        "concurrency": concurrency,
        "duration_s": options.duration_s,
        "protocols": list(measured),
        "workloads": {},
    }
    try:
        for name in workloads:
            workload, model = make_workload(name, running, options), WORKLOAD_MODEL[name]
            rewards = await same_rewards(
                ("score", *measured), target, http_target, model, workload.requests[0]["chat"]
            )
            log.info("%s: one chat's reward by each protocol: %s", name, rewards)
            factor = MIXED_DURATION_FACTOR if name == "mixed" else 1.0
            windows = replace(
                options, duration_s=options.duration_s * factor, warmup_s=options.warmup_s * factor
            )
            runs = []
            for index in range(rounds):
                run = {
                    p: await drive_protocol(p, target, http_target, model, workload, concurrency, windows)
                    for p in ("score", *measured)
                }
                score_rate = run["score"]["requests_per_s"]
                run["ratios"] = {
                    p: run[p]["requests_per_s"] / score_rate if score_rate else float("nan") for p in measured
                }
                log.info(
                    "%s round %d: %s",
                    name,
                    index + 1,
                    "; ".join(
                        f"{LABELS[p]} {run[p]['requests_per_s']:.1f} req/s ({run[p]['errors']} errors)"
                        + (f" {run['ratios'][p]:.3f}x" if p != "score" else "")
                        for p in ("score", *measured)
                    ),
                )
                runs.append(run)
            medians = {}
            for p in measured:
                finite = [r["ratios"][p] for r in runs if math.isfinite(r["ratios"][p])]
                medians[p] = statistics.median(finite) if finite else float("nan")
            results["workloads"][name] = {"rewards": rewards, "rounds": runs, "median_ratios": medians}
    finally:
        await running.stop(0)
    return results


# The targets, as a fraction of Score's request rate (the protocol layer's cost).
TARGETS = {"model_infer": 0.9, "http_infer": 0.7}


def _rate(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def summary(results: dict) -> str:
    """Per workload and protocol: the request rates and p50 / p99 latencies of each round, the ratios to
    Score and their median."""
    lines = []
    for name, entry in results["workloads"].items():
        lines.append(f"{name} at {results['concurrency']} clients, {len(entry['rounds'])} rounds:")
        for p in ("score", *results["protocols"]):
            rates = ", ".join(_rate(r[p]["requests_per_s"]) for r in entry["rounds"])
            latency = ", ".join(
                f"{r[p]['latency_p50_ms']:.0f}/{r[p]['latency_p99_ms']:.0f}" for r in entry["rounds"]
            )
            errors = sum(r[p]["errors"] for r in entry["rounds"])
            line = f"  {LABELS[p]:<22} req/s {rates}; p50/p99 ms {latency}; {errors} errors"
            if p != "score":
                ratios = ", ".join(f"{r['ratios'][p]:.3f}" for r in entry["rounds"])
                line += (
                    f"; / Score {ratios}; median {entry['median_ratios'][p]:.3f}x (target >= {TARGETS[p]}x)"
                )
            lines.append(line)
    return "\n".join(lines)


PERF_LINE_KEYS = (
    "Throughput:",
    "Avg latency:",
    "p99 latency:",
    "Inference count:",
    "Execution count:",
    "Successful request count:",
    "Avg request latency:",
)


def perf_analyzer_input(path: Path, chat: list[dict]) -> Path:
    """perf_analyzer's --input-data: one `messages` row (a BYTES element of shape [1])."""
    path.write_text(json.dumps({"data": [{"messages": {"content": [json.dumps(chat)], "shape": [1]}}]}))
    return path


async def perf_analyzer_runs(
    binary: str,
    options: SuiteOptions,
    repo: Path,
    protocols: tuple[str, ...],
    concurrency: tuple[int, ...],
    window_ms: int,
) -> list[dict]:
    from reward_server.server import build_server
    from reward_server.settings import ServerSettings

    write_repository(repo, options)
    running, port = await build_server(
        ServerSettings(model_repository=repo, host="127.0.0.1", port=0, http_port=None)
    )
    workload = make_workload("tiny", running, options)
    data = perf_analyzer_input(repo / "input.json", workload.requests[0]["chat"])
    runs = []
    try:
        for protocol in protocols:
            for level in concurrency:
                command = [
                    binary,
                    "-m",
                    "tiny",
                    "-i",
                    protocol,
                    "-u",
                    f"127.0.0.1:{port}",
                    "--input-data",
                    str(data),
                    "--concurrency-range",
                    str(level),
                    "--measurement-interval",
                    str(window_ms),
                    "--stability-percentage",
                    "100",
                    "--max-trials",
                    "4",
                ]
                done = await asyncio.to_thread(
                    subprocess.run, command, capture_output=True, text=True, timeout=300
                )
                lines = [
                    line.strip()
                    for line in done.stdout.splitlines()
                    if line.strip().startswith(PERF_LINE_KEYS)
                ]
                errors = [
                    line
                    for line in (done.stdout + done.stderr).splitlines()
                    if "rror" in line or "Failed" in line
                ]
                runs.append(
                    {
                        "protocol": protocol,
                        "concurrency": level,
                        "returncode": done.returncode,
                        "lines": lines,
                        "errors": errors,
                        "command": " ".join(command),
                    }
                )
                log.info(
                    "perf_analyzer -i %s, concurrency %d: exit %d\n  %s",
                    protocol,
                    level,
                    done.returncode,
                    "\n  ".join(lines + errors),
                )
    finally:
        await running.stop(0)
    return runs


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["load"]:
        print(json.dumps(asyncio.run(run_load(json.load(sys.stdin)))))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench.kserve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workloads", default="tiny,mixed")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per run (after warmup)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds (Score, then each protocol) per workload"
    )
    parser.add_argument("--mixed-requests", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument(
        "--perf-analyzer", default=None, metavar="PATH", help="run Triton's perf_analyzer instead"
    )
    parser.add_argument(
        "--protocols",
        default=None,
        help="grpc (ModelInfer), http (/infer, binary): measured against Score (default grpc,http); "
        "with --perf-analyzer, its -i values (default grpc)",
    )
    parser.add_argument("--perf-concurrency", default="1,8,64")
    parser.add_argument("--perf-window-ms", type=int, default=3000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = SuiteOptions(warmup_s=args.warmup, duration_s=args.duration, mixed_requests=args.mixed_requests)
    if args.perf_analyzer:
        with tempfile.TemporaryDirectory() as tmp:
            runs = asyncio.run(
                perf_analyzer_runs(
                    args.perf_analyzer,
                    options,
                    Path(tmp),
                    tuple((args.protocols or "grpc").split(",")),
                    tuple(int(c) for c in args.perf_concurrency.split(",")),
                    args.perf_window_ms,
                )
            )
        if args.out:
            args.out.write_text(json.dumps(runs, indent=1))
        return 0 if all(r["returncode"] == 0 for r in runs) else 1
    protocols = tuple((args.protocols or "grpc,http").split(","))
    if not set(protocols) <= set(PROTOCOLS):
        parser.error(f"--protocols: choose from {', '.join(PROTOCOLS)}, got {args.protocols!r}")
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(
            side_by_side(
                options, Path(tmp), tuple(args.workloads.split(",")), args.concurrency, args.rounds, protocols
            )
        )
    print(summary(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
