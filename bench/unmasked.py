"""Batches of one row with and without the unmasked forward, alternating, in one process.

    .venv/bin/python bench/unmasked.py [--rounds 3] [--n 48]

The bench's `rm` model (4 layers, 256 wide) scores `n` single sequences of 16-1024 tokens (`mixed`'s
lengths) one per batch, first as served (a batch of one length takes the unmasked trace: causal
attention), then with that trace switched off (every batch through the masked trace), `rounds` times.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_model import bench_backend, mixed_lengths_ids

from reward_server.backends.pytorch import PyTorchBackend


def tokens_per_s(backend: PyTorchBackend, sequences: list[list[int]]) -> float:
    start = time.perf_counter()
    for ids in sequences:
        backend.score_batch([ids])
    return sum(map(len, sequences)) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=48)
    args = parser.parse_args()
    sequences = mixed_lengths_ids(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        backend = bench_backend(Path(tmp))
        assert backend.unmasked_causal, "this model has no unmasked trace"
        unmasked = backend._unmasked
        tokens_per_s(backend, sequences[:4])  # untimed: first calls at new shapes allocate
        for _ in range(args.rounds):
            on = tokens_per_s(backend, sequences)
            backend._unmasked = None  # every batch through the masked trace
            off = tokens_per_s(backend, sequences)
            backend._unmasked = unmasked
            print(
                f"batch 1, {sum(map(len, sequences))} tokens: unmasked {on:,.0f} tokens/s, "
                f"masked {off:,.0f} tokens/s, unmasked / masked {on / off:.2f}"
            )


if __name__ == "__main__":
    main()
