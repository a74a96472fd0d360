"""Measure how far half-precision scores drift from fp32, and how much batching changes a score.

    python bench/precision.py [--device cpu|cuda] [--n 48]

For each dtype it scores the same conversations through the server's PyTorch backend, alone and in
mixed-length batches of 16, and prints the median and max relative difference
|a - b| / max(1, |b|) against fp32-alone, and batched against alone in the same dtype. float32 runs
twice: as served by default (last layer at the read position only) and with every layer at every
position (`pytorch { last_position_only: false }`).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
from pathlib import Path

import torch
from bench_model import SHAPE

from reward_server.backends.pytorch import PyTorchBackend
from reward_server.backends.settings import PyTorchSettings
from reward_server.checkpoint import read_checkpoint
from reward_server.offline.tiny_models import write_tiny_checkpoint

# (label, dtype, last_position_only); the first is the reference
RUNS = [
    ("float32", "float32", True),
    ("float32, full last layer", "float32", False),
    ("bfloat16", "bfloat16", True),
    ("float16", "float16", True),
]


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(1.0, abs(b))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=48)
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = read_checkpoint(write_tiny_checkpoint(Path(tmp) / "m", shape=SHAPE, seed=0))
        sequences = [
            [rng.randrange(5, SHAPE.vocab_size) for _ in range(rng.randint(16, 512))] for _ in range(args.n)
        ]
        results = {}
        for label, dtype, last_position_only in RUNS:
            config = PyTorchSettings(
                torchscript=True, intra_op_threads=0, last_position_only=last_position_only
            )
            backend = PyTorchBackend(checkpoint, args.device, dtype, config)
            alone = [backend.score_batch([s])[0] for s in sequences]
            batched = [
                x for i in range(0, len(sequences), 16) for x in backend.score_batch(sequences[i : i + 16])
            ]
            results[label] = (alone, batched)
            backend.close()
    reference = results["float32"][0]
    report = {"device": args.device, "inputs": args.n, "lengths": "16..512 tokens", "model": "4 layers x 256"}
    for label, (alone, batched) in results.items():
        vs_fp32 = [rel(a, r) for a, r in zip(alone, reference)]
        batch_effect = [rel(b, a) for b, a in zip(batched, alone)]
        report[label] = {
            "vs_fp32_median": f"{statistics.median(vs_fp32):.2e}",
            "vs_fp32_max": f"{max(vs_fp32):.2e}",
            "batched_vs_alone_median": f"{statistics.median(batch_effect):.2e}",
            "batched_vs_alone_max": f"{max(batch_effect):.2e}",
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
