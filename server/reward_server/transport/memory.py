"""Memory and the garbage collector: giving memory back after large requests, and keeping the cyclic
GC's full collections from scanning the models.

The server holds a million or so long-lived objects (models, tokenizers, modules). A request that
decodes into hundreds of thousands of objects triggers full (generation 2) collections, each of which
scans all of them with the GIL held: 0.5-0.8 s of a stalled event loop per collection, several per such
request. `FrozenHeap` moves what survives startup (and each model change) into the permanent
generation (`gc.freeze()`), so collections scan only the objects of requests.

A burst of large requests (tens of MiB each, parsed, checked and refused) leaves glibc's malloc holding
the freed memory: its mmap threshold rises to the size of the largest block freed, so later large
buffers come from the heap arenas, which keep what they grew to. RSS then stays at the burst's peak
for good. `malloc_trim` hands the free pages of every arena back; it costs milliseconds, so it runs on
a thread, at most once per interval, and only after a large request. Without glibc it does nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import threading
import time

log = logging.getLogger(__name__)

# At most one trim per this many seconds: a stream of large requests trims once per interval.
TRIM_INTERVAL_S = 1.0


def _malloc_trim() -> ctypes._CFuncPtr | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


class AllocatorTrim:
    """`after_large_request()` schedules a malloc_trim(0) on a thread, at most once per TRIM_INTERVAL_S; a
    request that ends while one is scheduled or running joins it."""

    def __init__(self, interval_s: float = TRIM_INTERVAL_S) -> None:
        self._trim = _malloc_trim()
        self._interval = interval_s
        self._lock = threading.Lock()
        self._pending = False
        self._last = float("-inf")

    def after_large_request(self) -> None:
        if self._trim is None:
            return
        with self._lock:
            if self._pending:
                return
            self._pending = True
        threading.Thread(target=self._run, name="malloc-trim", daemon=True).start()

    def _run(self) -> None:
        wait = self._last + self._interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)  # later requests of the same burst end meanwhile: one trim covers them
        with self._lock:
            self._pending = False
        started = time.monotonic()
        assert self._trim is not None
        self._trim(0)
        self._last = time.monotonic()
        log.debug("malloc_trim after large requests: %.1f ms", (self._last - started) * 1e3)


# How long after the latest model state change the heap is collected and frozen again: a load or unload
# changes states several times within a second; one collection covers them.
REFREEZE_DELAY_S = 1.0


class FrozenHeap:
    """`freeze()`: at startup, before serving (loading leaves next to no cyclic garbage, and a full
    collection there would cost every start half a second). `changed()` (a model was loaded or
    unloaded; any thread): unfreeze at once, so that the cycles of an unloaded model are collectable
    again, and once the changes stop for REFREEZE_DELAY_S, collect and freeze again on a thread."""

    def __init__(self, delay_s: float = REFREEZE_DELAY_S) -> None:
        self._delay = delay_s
        self._lock = threading.Lock()
        self._due = 0.0
        self._scheduled = False

    @staticmethod
    def freeze() -> None:
        gc.freeze()

    def changed(self) -> None:
        gc.unfreeze()
        with self._lock:
            self._due = time.monotonic() + self._delay
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
