"""What the protocol layer costs ModelInfer against Score per one-row request, two ways steadier than
bench.kserve's rates on a shared host:

    python -m bench.kserve_cost [--calls 2000] [--repeats 40]
    python -m bench.kserve_cost --served 1000

In one process (the default): the server's Python work per call, the guard's call (request id, parse,
bounds, metrics), the decoding, the servicer, the response and its serialization, with the core's
`score` answering a constant instead of computing (the model, batcher and tokenizer are the same for both
protocols); the requests are the bytes bench.kserve's clients send for one `tiny`-sized chat. Prints each
protocol's best per-call time over the repeats (the one least disturbed by other processes).

Served (--served PAIRS): the bench suite's `tiny` model on a real server, one client alternating the two
RPCs on one channel (which goes first alternates too), each request built per call from the `tiny`
workload's chats as bench.kserve's clients build them. Prints each protocol's median latency, the median
difference within pairs, and the difference of the server's mean time per call (the guard's view,
received to answered; between calls the loop waits out a forward, so each call starts colder than in the
tight loop of the default mode).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import grpc.aio
import numpy as np
from tritonclient.grpc import service_pb2 as kserve_pb2
from tritonclient.grpc import service_pb2_grpc

from bench.kserve import infer_request, score_request
from bench.suite import SuiteOptions, make_workload, write_repository
from reward_api.v1 import reward_pb2, reward_pb2_grpc
from reward_server.datatypes import ScoreRequest, ScoreResponse, ScoreResult
from reward_server.fronts.grpc import codec
from reward_server.fronts.grpc.guard import GuardedMethod, RequestGuard
from reward_server.fronts.grpc.servicer import RewardServicer
from reward_server.fronts.kserve.grpc_front import KServeServicer
from reward_server.fronts.kserve.service import KServeCore
from reward_server.metrics import ServerMetrics

MODEL = "tiny"
# A chat of the size of the `tiny` workload's (a few words, then a reply of a few dozen tokens).
CHAT = [
    {"role": "user", "content": "which river is the longest"},
    {
        "role": "assistant",
        "content": "The Nile is usually given as the longest river, at about 6,650 km, "
        "though some measurements put the Amazon ahead of it.",
    },
]
RESULT = ScoreResult(score=0.25, num_tokens=40, num_truncated_tokens=0)
MAX_ITEMS = 1024


class FixedCore:
    """What the servicers call on RewardCore, answering one constant result per input."""

    repository = None
    draining = False

    async def score(self, request: ScoreRequest, deadline: float | None) -> ScoreResponse:
        return ScoreResponse(request.model, 1, (RESULT,) * len(request.inputs))


class Context:
    """The parts of grpc.aio.ServicerContext the guard and the servicers use on a successful call."""

    def invocation_metadata(self) -> tuple:
        return ()

    def set_trailing_metadata(self, metadata: tuple) -> None:
        pass

    def time_remaining(self) -> float | None:
        return None

    async def abort(self, code: object, details: str) -> None:
        raise RuntimeError(f"the call failed: {code} {details}")


def calls() -> dict[str, tuple[Callable[[], Awaitable[bytes]], Callable[[bytes], float]]]:
    """protocol -> (one guarded call returning the serialized response, the reward read from it)."""
    core = FixedCore()
    guard = RequestGuard(ServerMetrics(), max_concurrent_rpcs=1000, max_chars=100_000)
    score = guard.wrap(
        GuardedMethod("Score", reward_pb2.ScoreRequest, partial(codec.decode_score, max_items=MAX_ITEMS)),
        RewardServicer(core, MAX_ITEMS).Score,
    )
    infer = guard.wrap(
        GuardedMethod("ModelInfer", kserve_pb2.ModelInferRequest, None),
        KServeServicer(KServeCore(core)).ModelInfer,
    )
    score_raw = score_request(MODEL, CHAT).SerializeToString()
    infer_raw = infer_request(MODEL, CHAT).SerializeToString()
    context = Context()

    async def score_call() -> bytes:
        return (await score(score_raw, context)).SerializeToString()

    async def infer_call() -> bytes:
        return (await infer(infer_raw, context)).SerializeToString()

    def score_reward(data: bytes) -> float:
        return reward_pb2.ScoreResponse.FromString(data).results[0].score

    def infer_reward(data: bytes) -> float:
        response = kserve_pb2.ModelInferResponse.FromString(data)
        names = [o.name for o in response.outputs]
        return float(np.frombuffer(response.raw_output_contents[names.index("rewards")], "<f4")[0])

    return {"Score": (score_call, score_reward), "ModelInfer": (infer_call, infer_reward)}


async def best_us(call: Callable[[], Awaitable[bytes]], count: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(count):
            await call()
        best = min(best, (time.perf_counter() - start) / count)
    return best * 1e6


async def measure(count: int, repeats: int) -> dict[str, float]:
    """protocol -> best microseconds per call; RuntimeError unless both answer the constant reward."""
    timings = {}
    for protocol, (call, reward) in calls().items():
        if reward(await call()) != RESULT.score:
            raise RuntimeError(f"{protocol} did not answer the core's reward")
        timings[protocol] = await best_us(call, count, repeats)
    return timings


# Pairs before the measured ones (connection, first batches, caches of the server's first calls).
WARMUP_PAIRS = 50


def _server_totals(metrics, method: str) -> tuple[float, float]:
    """(seconds, calls) of `method` so far in the server's request-duration histogram."""
    totals = {"_sum": 0.0, "_count": 0.0}
    for metric in metrics.request_duration.collect():
        for sample in metric.samples:
            for suffix in totals:
                if sample.name.endswith(suffix) and sample.labels.get("method") == method:
                    totals[suffix] += sample.value
    return totals["_sum"], totals["_count"]


async def served(pairs: int, repo: Path, options: SuiteOptions | None = None) -> dict[str, float]:
    """Score and ModelInfer alternating on one channel to the suite's `tiny` model (its repository written
    to `repo` with `options`): medians in µs."""
    from reward_server.server import build_server
    from reward_server.settings import ServerSettings

    options = options or SuiteOptions()
    write_repository(repo, options)
    running, port = await build_server(
        ServerSettings(model_repository=repo, host="127.0.0.1", port=0, http_port=None)
    )
    try:
        chats = [r["chat"] for r in make_workload("tiny", running, options).requests]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            score_stub = reward_pb2_grpc.RewardServiceStub(channel)
            infer_stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            rpcs = {
                "Score": lambda chat: score_stub.Score(score_request(MODEL, chat), timeout=600),
                "ModelInfer": lambda chat: infer_stub.ModelInfer(infer_request(MODEL, chat), timeout=600),
            }
            latency: dict[str, list[float]] = {name: [] for name in rpcs}
            before: dict[str, tuple[float, float]] = {}
            for index in range(WARMUP_PAIRS + pairs):
                if index == WARMUP_PAIRS:
                    before = {name: _server_totals(running.metrics, name) for name in rpcs}
                order = list(rpcs) if index % 2 else list(reversed(rpcs))
                for name in order:
                    start = time.perf_counter()
                    await rpcs[name](chats[index % len(chats)])
                    if index >= WARMUP_PAIRS:
                        latency[name].append(time.perf_counter() - start)
            server = {}
            for name in rpcs:
                seconds, count = _server_totals(running.metrics, name)
                server[name] = (seconds - before[name][0]) / (count - before[name][1])
    finally:
        await running.stop(0)
    differences = [a - b for a, b in zip(latency["ModelInfer"], latency["Score"])]
    return {
        "score_us": statistics.median(latency["Score"]) * 1e6,
        "infer_us": statistics.median(latency["ModelInfer"]) * 1e6,
        "pair_difference_us": statistics.median(differences) * 1e6,
        "server_difference_us": (server["ModelInfer"] - server["Score"]) * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.kserve_cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--calls", type=int, default=2000, help="calls per timed repeat")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument(
        "--served", type=int, default=0, metavar="PAIRS", help="alternate PAIRS pairs on a served model"
    )
    args = parser.parse_args(argv)
    if args.served:
        with tempfile.TemporaryDirectory() as tmp:
            result = asyncio.run(served(args.served, Path(tmp)))
        print(
            f"served, {args.served} alternating pairs: median latency Score {result['score_us']:.0f} us, "
            f"ModelInfer {result['infer_us']:.0f} us; median pair difference "
            f"{result['pair_difference_us']:.0f} us; server time per call "
            f"+{result['server_difference_us']:.0f} us"
        )
        return 0
    timings = asyncio.run(measure(args.calls, args.repeats))
    print(
        f"per one-row call, best of {args.repeats} x {args.calls}: Score {timings['Score']:.1f} us, "
        f"ModelInfer {timings['ModelInfer']:.1f} us (+{timings['ModelInfer'] - timings['Score']:.1f} us)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
