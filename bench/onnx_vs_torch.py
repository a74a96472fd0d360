"""ONNX Runtime (CPU) vs PyTorch eager (CPU): the same model, the same load, side by side in one run.

    .venv/bin/python bench/onnx_vs_torch.py [--requests 96] [--clients 8] [--out .bench/onnx_vs_torch.json]

A random 4-layer, 256-wide Llama reward model is written, exported with `reward-server export`, and
both versions are served by one in-process server. For each backend:
- bare: the backend alone (no server) over the same token sequences, length-sorted, batches of 8;
- served: C concurrent clients in a closed loop over real gRPC, one Score request of token ids each
  (lengths 16..512, seeded), through the dynamic batcher (max_batch_size 8, 2 ms delay).
Reports sequences/s, tokens/s, request latency p50 / p99 and the batcher's padding efficiency (real
tokens / computed tokens); ratios are ORT / PyTorch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from bench_model import SHAPE, write_bench_model

from reward_client import AsyncRewardClient
from reward_server.runtime.openmp import run_on_thread_that_ends
from reward_server.server import build_server
from reward_server.settings import ServerSettings


def workload(n: int, vocab: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(5, vocab) for _ in range(rng.randint(16, 512))] for _ in range(n)]


def bare(backend, sequences: list[list[int]], batch: int = 8) -> dict:
    ordered = sorted(sequences, key=len)
    backend.score_batch(ordered[:batch])  # warm up
    start = time.perf_counter()
    for i in range(0, len(ordered), batch):
        backend.score_batch(ordered[i : i + batch])
    elapsed = time.perf_counter() - start
    return {"sequences_per_s": len(ordered) / elapsed, "tokens_per_s": sum(map(len, ordered)) / elapsed}


async def served(target: str, model: str, sequences: list[list[int]], clients: int) -> dict:
    queue = list(sequences)
    latencies: list[float] = []

    async def client() -> None:
        async with AsyncRewardClient(target, model=model, timeout=120) as rm:
            while queue:
                ids = queue.pop()
                start = time.perf_counter()
                await rm.score([ids])
                latencies.append(time.perf_counter() - start)

    async with AsyncRewardClient(target, model=model) as rm:  # warm up
        await rm.score(sequences[:8])
    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "sequences_per_s": len(sequences) / elapsed,
        "tokens_per_s": sum(map(len, sequences)) / elapsed,
        "latency_p50_ms": 1e3 * statistics.median(latencies),
        "latency_p99_ms": 1e3 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


async def run(args: argparse.Namespace) -> dict:
    from reward_server.backends.ort_session import OnnxRuntimeBackend
    from reward_server.backends.pytorch import PyTorchBackend
    from reward_server.checkpoint import read_checkpoint
    from reward_server.offline.onnx_export import export_version

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        # Torch work before serving runs on threads that end with it: an OpenMP team left on this thread
        # would slow the served forwards beside it (reward_server/runtime/openmp.py).
        run_on_thread_that_ends(
            lambda: (write_bench_model(repo, "rm"), export_version(repo, "rm")), "bench-setup"
        )
        sequences = workload(args.requests, SHAPE.vocab_size)
        torch_ckpt = read_checkpoint(repo / "rm" / "1")
        onnx_ckpt = read_checkpoint(repo / "rm-onnx" / "1")
        results: dict = {
            "model": "llama 4 layers x 256 (random)",
            "requests": args.requests,
            "clients": args.clients,
            "tokens": sum(map(len, sequences)),
        }
        results["bare"] = {
            "pytorch": run_on_thread_that_ends(
                lambda: bare(PyTorchBackend(torch_ckpt, "cpu", "float32"), sequences), "bare-pytorch"
            ),
            "onnxruntime": run_on_thread_that_ends(
                lambda: bare(OnnxRuntimeBackend(onnx_ckpt, "cpu", "float32"), sequences), "bare-onnxruntime"
            ),
        }
        running, port = await build_server(ServerSettings(repo, host="127.0.0.1", port=0, http_port=None))
        try:
            target = f"127.0.0.1:{port}"
            results["served"] = {}
            for backend, model in (("pytorch", "rm"), ("onnxruntime", "rm-onnx")):
                results["served"][backend] = await served(target, model, sequences, args.clients)
                stats = running.repository.resolve(model, "").instances[0].stats
                results["served"][backend]["padding_efficiency"] = stats.padding_efficiency
        finally:
            await running.stop(1)
    for kind in ("bare", "served"):
        results[kind]["ratio_onnxruntime_over_pytorch"] = (
            results[kind]["onnxruntime"]["tokens_per_s"] / results[kind]["pytorch"]["tokens_per_s"]
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path(".bench/onnx_vs_torch.json"))
    args = parser.parse_args()
    results = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"{'':10} {'backend':12} {'seq/s':>8} {'tokens/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'pad eff':>8}")
    for kind in ("bare", "served"):
        for backend in ("pytorch", "onnxruntime"):
            r = results[kind][backend]
            print(
                f"{kind:10} {backend:12} {r['sequences_per_s']:8.1f} {r['tokens_per_s']:10.0f} "
                f"{r.get('latency_p50_ms', float('nan')):8.1f} {r.get('latency_p99_ms', float('nan')):8.1f} "
                f"{r.get('padding_efficiency', float('nan')):8.2f}"
            )
        print(f"{kind:10} ORT / PyTorch tokens/s: {results[kind]['ratio_onnxruntime_over_pytorch']:.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
