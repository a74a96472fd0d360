"""Closed-loop load generator, run as its own process (`python -m bench.load < spec.json`), so that
the clients do not share the server's interpreter.

C clients (closed_loop, which bench/'s other load processes share), each with its own channel, send
one request at a time, round-robin over the workload's requests, for warmup_s + duration_s. Only
requests that complete inside the measured window count; what is in flight at the end is cancelled.
With "stamp", each Score call carries its send time.
Prints one JSON object: requests/s, inputs/s, tokens/s (the tokens the server reports having read),
latency mean / p50 / p99, errors, and the CPU the clients used (on a small host they take cores from
the server: the floor runs with no clients).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

from reward_client import AsyncRewardClient, RewardError

S = TypeVar("S")  # what a client's session opens: a channel, a client, an HTTP session

SENT_AT_KEY = "x-bench-sent-at"  # metadata: time.time() when the client sent the call (with "stamp")
ROOT = Path(__file__).resolve().parent.parent


async def run_load_process(module: str, spec: dict, *args: str) -> dict:
    """Runs `python -m <module> <args>` (a load process: closed_loop's clients) with `spec` as JSON on its
    stdin and returns the JSON object its last stdout line holds (what it imports may print before it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(json.dumps(spec).encode())
    if process.returncode:
        raise RuntimeError(f"load process failed ({process.returncode}): {err.decode()[-2000:]}")
    return json.loads(out.decode().strip().splitlines()[-1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def closed_loop(
    items: list,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    session: Callable[[], AbstractAsyncContextManager[S]],
    call: Callable[[S, Any], Awaitable[tuple[int, int]]],
    errors: tuple[type[BaseException], ...],
) -> dict:
    """The closed loop: `concurrency` clients, each inside its own `session()` (a channel, an HTTP session),
    each awaiting `call(session, item)` -> (inputs, tokens) one at a time, round-robin over `items`, for
    warmup_s + duration_s. A call raising one of `errors` counts as an error; only calls that complete
    inside the measured window count; what is in flight at the end is cancelled."""
    next_index = itertools.count()
    window_start = time.perf_counter() + warmup_s
    window_end = window_start + duration_s
    latencies: list[float] = []
    inputs = tokens = failed = 0

    async def client() -> None:
        nonlocal inputs, tokens, failed
        async with session() as opened:
            while time.perf_counter() < window_end:
                item = items[next(next_index) % len(items)]
                start = time.perf_counter()
                try:
                    read_inputs, read_tokens = await call(opened, item)
                except errors:
                    failed += 1
                    continue
                done = time.perf_counter()
                if window_start <= done <= window_end:
                    latencies.append(done - start)
                    inputs += read_inputs
                    tokens += read_tokens

    tasks = [asyncio.create_task(client()) for _ in range(concurrency)]
    await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
    cpu_start = time.process_time()
    await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
    client_cores = (time.process_time() - cpu_start) / duration_s
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "requests": len(latencies),
        "errors": failed,
        "requests_per_s": len(latencies) / duration_s,
        "inputs_per_s": inputs / duration_s,
        "tokens_per_s": tokens / duration_s,
        "latency_mean_ms": 1e3 * sum(latencies) / len(latencies) if latencies else float("nan"),
        "latency_p50_ms": 1e3 * percentile(latencies, 0.5),
        "latency_p99_ms": 1e3 * percentile(latencies, 0.99),
        "client_cores": client_cores,  # CPU the clients themselves used during the window (1.0 = one core)
    }


async def run(spec: dict) -> dict:
    kind, stamp = spec["kind"], spec.get("stamp", False)

    async def call(rm: AsyncRewardClient, request: dict) -> tuple[int, int]:
        if kind == "rank":
            results = (await rm.rank_candidates(request["prompt"], request["responses"])).results
        elif kind == "rank_full":  # the same candidates sent as N whole conversations
            chats = [request["prompt"] + [{"role": "assistant", "content": r}] for r in request["responses"]]
            results = (await rm.rank_conversations(chats)).results
        elif stamp:  # the send time, for the server's side of bench/request_time.py
            results = await rm.score([request["chat"]], metadata=((SENT_AT_KEY, repr(time.time())),))
        else:
            results = await rm.score([request["chat"]])
        return len(results), sum(r.num_tokens for r in results)

    return await closed_loop(
        spec["requests"],
        spec["concurrency"],
        spec["warmup_s"],
        spec["duration_s"],
        lambda: AsyncRewardClient(spec["target"], model=spec["model"], timeout=600),
        call,
        (RewardError,),
    )


def main() -> None:
    print(json.dumps(asyncio.run(run(json.load(sys.stdin)))))


if __name__ == "__main__":
    main()
