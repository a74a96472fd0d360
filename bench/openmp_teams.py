"""A forward beside a second OpenMP team, and without one.

    .venv/bin/python bench/openmp_teams.py [--rounds 2]

Each round starts two fresh processes. Both load the bench's `rm` model and time batch-1 forwards over
`mixed`'s lengths from a worker thread (as a batcher does). In `lingering` the loading thread is the
main thread, which lives on with the OpenMP team it made while loading. In `passing` the model is
loaded on a thread that exits before the forwards: the server's way (reward_server/runtime/openmp.py).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def child(mode: str) -> None:
    from bench_model import SHAPE

    from reward_server.backends.pytorch import PyTorchBackend
    from reward_server.checkpoint import read_checkpoint
    from reward_server.offline.tiny_models import write_tiny_checkpoint
    from reward_server.runtime.openmp import run_on_thread_that_ends

    rng = random.Random(0)
    sequences = [
        [rng.randrange(5, SHAPE.vocab_size) for _ in range(rng.randint(16, 1024))] for _ in range(24)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = read_checkpoint(write_tiny_checkpoint(Path(tmp) / "rm", shape=SHAPE, seed=0))

        def load() -> PyTorchBackend:
            return PyTorchBackend(checkpoint, "cpu", "float32")

        backend = load() if mode == "lingering" else run_on_thread_that_ends(load, name="load")
        rates: list[float] = []

        def forwards() -> None:
            for _ in range(3):
                start = time.perf_counter()
                for ids in sequences:
                    backend.score_batch([ids])
                rates.append(sum(map(len, sequences)) / (time.perf_counter() - start))

        worker = threading.Thread(target=forwards)
        worker.start()
        worker.join()
    print(f"{mode:9s} batch-1 tokens/s from a worker thread: " + ", ".join(f"{r:,.0f}" for r in rates))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=("lingering", "passing"))
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    for _ in range(args.rounds):
        for mode in ("lingering", "passing"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode], capture_output=True, text=True, check=True
            )
            print(out.stdout.strip())


if __name__ == "__main__":
    main()
