"""Memory and the garbage collector: giving memory back after large requests, and keeping the cyclic
GC's full collections from scanning the models.

The server holds a million or so long-lived objects (models, tokenizers, modules). A request that
decodes into hundreds of thousands of objects triggers full (generation 2) collections, each of which
scans all of them with the GIL held: 0.5-0.8 s of a stalled event loop per collection, several per such
request. `FrozenHeap` moves what survives startup (and each model change) into the permanent
generation (`gc.freeze()`), so collections scan only the objects of requests.

A burst of large requests (MiBs each, parsed, checked and refused) left RSS at the burst's peak for good
(64 x 8 MiB requests: +600 MiB per burst, growing over bursts). Two things held it: the request's
buffers (its bytes, the parsed message, copies of its strings) stay reachable from reference cycles
(an error's traceback through gRPC's handler frames and tasks) until a collection of the young
generations, which an idle server may not run for a long time; and glibc's malloc keeps the freed
memory in its per-thread arenas. `AllocatorTrim` does, after large requests: a collection (cheap with
the heap frozen, below), then `malloc_trim(0)`, which hands the free pages of every arena back. It
runs on a thread, at most once per interval. Without glibc, only the collection runs."""

from __future__ import annotations

import ctypes
import gc
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# At most one trim per this many seconds: a stream of large requests trims once per interval.
TRIM_INTERVAL_S = 1.0
# A trim waits this long after the latest large request ended: the request's own buffers (its bytes,
# gRPC's receive buffers, the handler's frames) are freed only after the guard has seen it end, and a
# trim that ran before they were would leave them in malloc's arenas until the next large request.
SETTLE_S = 0.2


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, from the symbols already loaded into the process; None elsewhere."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim), or no dlopen(NULL)
        return None


class AllocatorTrim:
    """`after_large_request()` schedules gc.collect() and malloc_trim(0) on a thread: SETTLE_S after the
    latest large request ended (a burst is trimmed once, after its last request), at most TRIM_INTERVAL_S
    after the first one (a steady stream of large requests is trimmed once per interval), and never twice
    within TRIM_INTERVAL_S."""

    def __init__(self) -> None:
        self._trim = _malloc_trim()
        self._lock = threading.Lock()
        self._pending = False
        self._first = self._due = float("-inf")
        self._last = float("-inf")

    def after_large_request(self) -> None:
        with self._lock:
            now = time.monotonic()
            self._due = now + SETTLE_S
            if self._pending:
                return
            self._pending = True
            self._first = now
        threading.Thread(target=self._run, name="malloc-trim", daemon=True).start()

    def _run_at(self) -> float:
        return max(min(self._due, self._first + TRIM_INTERVAL_S), self._last + TRIM_INTERVAL_S)

    def _run(self) -> None:
        while True:
            with self._lock:
                wait = self._run_at() - time.monotonic()
                if wait <= 0:
                    self._pending = False  # a request ending from now on schedules the next trim
                    break
            time.sleep(wait)
        started = time.monotonic()
        gc.collect()
        if self._trim is not None:
            self._trim(0)
        self._last = time.monotonic()
        log.debug("collection and malloc_trim after large requests: %.1f ms", (self._last - started) * 1e3)


# How long after the latest model state change the heap is collected and frozen again: a load or unload
# changes states several times within a second; one collection covers them.
REFREEZE_DELAY_S = 1.0


class FrozenHeap:
    """`freeze()`: at startup, before serving (loading leaves next to no cyclic garbage, and a full
    collection there would cost every start half a second). `changed()` (a model was loaded or
    unloaded; any thread): unfreeze at once, so that the cycles of an unloaded model are collectable
    again, and once the changes stop for REFREEZE_DELAY_S, collect and freeze again on a thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due = 0.0
        self._scheduled = False

    @staticmethod
    def freeze() -> None:
        gc.freeze()

    def changed(self) -> None:
        gc.unfreeze()
        with self._lock:
            self._due = time.monotonic() + REFREEZE_DELAY_S
            if self._scheduled:
                return
            self._scheduled = True
        threading.Thread(target=self._settle_later, name="gc-freeze", daemon=True).start()

    def _settle_later(self) -> None:
        while True:
            with self._lock:
                wait = self._due - time.monotonic()
                if wait <= 0:
                    self._scheduled = False
                    break
            time.sleep(wait)
        gc.collect()
        gc.freeze()
