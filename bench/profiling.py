"""py-spy over this very process while one served run is measured, summarised as top lines.

py-spy samples every active thread (event loop, encode pool, batcher); the summary gives samples per
thread, and the functions with the most samples: self (the leaf frame) and inclusive (anywhere on the stack).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r" \(([^()]*?):\d+\)$")


def py_spy() -> str | None:
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


async def record(seconds: float, raw_path: Path, rate: int = 100) -> bool:
    """Sample this process for `seconds` into a collapsed-stack file;
    False when py-spy is missing or fails."""
    exe = py_spy()
    if exe is None:
        return False
    process = await asyncio.create_subprocess_exec(
        exe,
        "record",
        "--pid",
        str(os.getpid()),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(rate),
        # --nonblocking: sample without pausing the process (paused 100 times a second, the profiled run
        # lost a good part of its throughput); the stacks may be a little less exact.
        "--threads",
        "--nonblocking",
        "--format",
        "raw",
        "-o",
        str(raw_path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await process.wait() == 0 and raw_path.exists()


def _frame(frame: str) -> str:
    """'name (path/file.py:12)' -> 'name (path/file.py)': lines of one function add up."""
    return _LINE.sub(r" (\1)", frame.strip())


def summarize(raw_path: Path, top: int = 25) -> str:
    threads: Counter = Counter()
    own: Counter = Counter()
    inclusive: Counter = Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = re.sub(r"_\d+$", "", frames[0].partition(": ")[2] or frames[0])  # encode_1 -> encode
        functions = [_frame(f) for f in frames[1:]] or [thread]
        if thread.startswith("asyncio-waitpid"):
            continue  # the suite's own child watchers, blocked in waitpid (py-spy counts them active)
        total += count
        threads[thread] += count
        own[functions[-1]] += count
        for function in set(functions):
            inclusive[function] += count
    lines = [f"{total} samples (active threads only)", "", "samples by thread:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in threads.most_common()]
    lines += ["", f"top {top} by self samples:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", f"top {top} by inclusive samples:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)
