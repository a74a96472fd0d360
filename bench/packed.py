"""Batches of mixed lengths packed, padded, and one input at a time, alternating, in one process.

    .venv/bin/python bench/packed.py [--rounds 3] [--n 48] [--sizes 2,4,8]

The bench's `rm` model (4 layers, 256 wide) scores `n` sequences of 16-1024 tokens (`mixed`'s lengths)
in batches of each size, in arrival order (what a batcher holds at low concurrency, where lengths are
not grouped): packed (as served), padded (packing switched off), and one batch per input. Tokens/s of
the real tokens; "rows" is the share of padded rows that packing computes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_model import bench_backend, mixed_lengths_ids

from reward_server.backends.packing import computed_tokens


def tokens_per_s(score: Callable[[list[list[int]]], object], batches: list[list[list[int]]]) -> float:
    start = time.perf_counter()
    for batch in batches:
        score(batch)
    return sum(len(ids) for batch in batches for ids in batch) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--sizes", default="2,4,8")
    args = parser.parse_args()
    sequences = mixed_lengths_ids(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        backend = bench_backend(Path(tmp))
        packing = backend._packed
        assert packing is not None, "this model does not pack"

        def padded(batch: list[list[int]]) -> object:
            backend._packed = None
            try:
                return backend.score_batch(batch)
            finally:
                backend._packed = packing

        def one_at_a_time(batch: list[list[int]]) -> object:
            return [backend.score_batch([ids]) for ids in batch]

        for size in map(int, args.sizes.split(",")):
            batches = [sequences[i : i + size] for i in range(0, len(sequences), size)]
            rows = sum(computed_tokens([len(s) for s in b]) for b in batches) / sum(
                len(b) * max(map(len, b)) for b in batches
            )
            tokens_per_s(backend.score_batch, batches[:2])  # untimed: first calls at new shapes allocate
            ratios = []
            for _ in range(args.rounds):
                on, off, alone = (
                    tokens_per_s(f, batches) for f in (backend.score_batch, padded, one_at_a_time)
                )
                ratios.append(on / off)
                print(
                    f"batch {size}: packed {on:,.0f} tokens/s, padded {off:,.0f}, "
                    f"one at a time {alone:,.0f}; packed / padded {on / off:.2f}, "
                    f"packed / one at a time {on / alone:.2f} (rows {rows:.2f})"
                )
            print(f"batch {size}: median packed / padded {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
