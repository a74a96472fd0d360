"""The server's Python work per one-row request, Score against ModelInfer, timed in one process: the
guard's call (request id, parse, bounds, metrics), the decoding, the servicer, the response and its
serialization. The core's `score` answers a constant instead of computing (the model, batcher and
tokenizer are the same for both protocols; bench.kserve measures them served); the requests are the bytes
bench.kserve's clients send for one `tiny`-sized chat.

    python -m bench.kserve_cost [--calls 2000] [--repeats 40]

Prints each protocol's best per-call time over the repeats (the one least disturbed by other processes)
and their difference: the cost of the protocol layer that bench.kserve's ratio includes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial

import numpy as np
from tritonclient.grpc import service_pb2 as kserve_pb2

from bench.kserve import infer_request, score_request
from reward_api.v1 import reward_pb2
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.kserve_cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--calls", type=int, default=2000, help="calls per timed repeat")
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args(argv)
    timings = asyncio.run(measure(args.calls, args.repeats))
    print(
        f"per one-row call, best of {args.repeats} x {args.calls}: Score {timings['Score']:.1f} us, "
        f"ModelInfer {timings['ModelInfer']:.1f} us (+{timings['ModelInfer'] - timings['Score']:.1f} us)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
