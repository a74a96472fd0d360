"""Model control mode "poll": rescan the repository every N seconds on a background thread."""

from __future__ import annotations

import logging
import threading

from reward_server.repository.manager import ModelRepository

log = logging.getLogger(__name__)


class RepositoryPoller:
    def __init__(self, repository: ModelRepository, interval_s: float) -> None:
        self._repository = repository
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="repository-poll", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop polling; a load in progress finishes first."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._repository.poll()
            except Exception:  # a poll must never end the polling; the next one tries again
                log.exception("repository poll failed")
