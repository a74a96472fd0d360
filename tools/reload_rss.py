"""Resident memory over unload + load cycles of one model, in this process (explicit control mode).

    python tools/reload_rss.py model_repository demo --cycles 10

Prints the RSS after the first load and after each cycle (after a garbage collection). Memory that
comes back levels off after a few cycles; a leak grows by about the same amount every cycle.
"""

from __future__ import annotations

import argparse
import gc
import logging
from pathlib import Path

from reward_server.repository import ModelRepository


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repository", type=Path)
    parser.add_argument("model")
    parser.add_argument("--cycles", type=int, default=10)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    repository = ModelRepository(args.repository, mode="explicit")
    failures = repository.load_model(args.model)
    if failures:
        raise SystemExit("\n".join(failures))
    gc.collect()
    print(f"first load: {rss_mib():.1f} MiB")
    for cycle in range(1, args.cycles + 1):
        repository.unload_model(args.model)
        repository.load_model(args.model)
        gc.collect()
        print(f"cycle {cycle}: {rss_mib():.1f} MiB", flush=True)
    repository.close()


if __name__ == "__main__":
    main()
