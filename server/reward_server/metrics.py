"""Prometheus metrics: request outcomes (from the guard), batch execution (from each batcher), server
readiness and the repository's version states and failed loads (from its change notifications), and the
process (resident memory, CPU seconds, open fds, start time: prometheus_client's standard names).

Names follow Triton's meaning where Triton has a counterpart (docs/operations.md, "Metrics", has the mapping);
Triton exports cumulative microsecond counters, these are histograms in seconds, as Prometheus
prefers. Each server has its own registry, so several servers can live in one process (tests).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_SIZES = tuple(float(2**i) for i in range(11))  # 1 .. 1024
_TOKENS = tuple(float(2**i) for i in range(4, 21))  # 16 .. 1M

_MODEL = ("model", "version")


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # process_resident_memory_bytes, process_cpu_seconds_total, process_open_fds,
        # process_start_time_seconds (from /proc: Linux only; elsewhere it exports nothing).
        ProcessCollector(registry=r)
        # Per RPC (Score, Rank, ...): the guard's view. A call refused before its model was resolved counts
        # under the model it named when that is one of ours (version ""), else under model "".
        self.request_success = Counter(
            "reward_request_success", "RPCs answered OK", [*_MODEL, "method"], registry=r
        )
        self.request_failure = Counter(
            "reward_request_failure",
            "RPCs answered with an error status",
            [*_MODEL, "method", "code"],
            registry=r,
        )
        self.request_duration = Histogram(
            "reward_request_duration_seconds",
            "RPC time, received to answered",
            [*_MODEL, "method"],
            buckets=_SECONDS,
            registry=r,
        )
        # Labels never come from a name a client made up: bounded series.
        self.pending_requests = Gauge(
            "reward_pending_requests", "RPCs received and not answered yet", registry=r
        )
        # Per batch a model instance computes: the batcher's view.
        self.inference_count = Counter("reward_inference_count", "inputs computed", _MODEL, registry=r)
        self.execution_count = Counter("reward_execution_count", "batches computed", _MODEL, registry=r)
        self.execution_failure = Counter(
            "reward_execution_failure", "batches the backend failed on", _MODEL, registry=r
        )
        self.queue_duration = Histogram(
            "reward_queue_duration_seconds",
            "time an input waited for its batch",
            _MODEL,
            buckets=_SECONDS,
            registry=r,
        )
        self.compute_duration = Histogram(
            "reward_compute_duration_seconds",
            "backend time of one batch",
            _MODEL,
            buckets=_SECONDS,
            registry=r,
        )
        self.batch_size = Histogram(
            "reward_batch_size", "inputs per batch", _MODEL, buckets=_BATCH_SIZES, registry=r
        )
        self.batch_tokens = Histogram(
            "reward_batch_tokens",
            "tokens computed per batch, padding included",
            _MODEL,
            buckets=_TOKENS,
            registry=r,
        )
        self.real_tokens = Counter("reward_real_tokens", "tokens of the inputs computed", _MODEL, registry=r)
        self.computed_tokens = Counter(
            "reward_computed_tokens", "tokens computed, padding included", _MODEL, registry=r
        )
        self.padding_efficiency = Gauge(
            "reward_padding_efficiency", "real tokens / computed tokens, since load", _MODEL, registry=r
        )
        self.queued_inputs = Gauge(
            "reward_queued_inputs", "inputs waiting in the batch queues", _MODEL, registry=r
        )
        self.model_forward_info = Gauge(
            "reward_model_forward_info",
            "1 for the forward pass serving a loaded version",
            [*_MODEL, "forward"],
            registry=r,
        )
        # Readiness and the repository's table. Series exist for the models and versions the repository
        # knows only; a version or model it forgets takes its state series along.
        self.server_ready = Gauge(
            "reward_server_ready", "1 while the server is ready (the reward.ready health name)", registry=r
        )
        self.model_version_state = Gauge(
            "reward_model_version_state",
            "1 for the current state of each version the repository knows",
            [*_MODEL, "state"],
            registry=r,
        )
        # Counted under the model folder's name: a model of the repository, never a name from a request.
        self.model_load_failures = Counter(
            "reward_model_load_failures", "version loads that failed", ["model"], registry=r
        )
        self._forwards: dict[tuple[str, str], str] = {}
        self._states: dict[str, dict[str, str]] = {}  # model -> version -> the state its series says
        self._states_lock = threading.Lock()  # the repository notifies from any thread
        self._http: WSGIServer | None = None

    def request_done(self, model: str, version: str, method: str, code: str, seconds: float) -> None:
        if code == "OK":
            self.request_success.labels(model, version, method).inc()
        else:
            self.request_failure.labels(model, version, method, code).inc()
        self.request_duration.labels(model, version, method).observe(seconds)

    def observer(self, model: str, version: int, queued: Callable[[], int]) -> BatchMetrics:
        """The BatchObserver of one model version's instances; `queued` counts their waiting inputs."""
        self.queued_inputs.labels(model, str(version)).set_function(queued)
        return BatchMetrics(self, model, str(version))

    def forward_served(self, model: str, version: int, forward: str) -> None:
        """A version is loaded and `forward` (a ForwardPlan's short form) serves it."""
        self._forwards[model, str(version)] = forward
        self.model_forward_info.labels(model, str(version), forward).set(1)

    def forget(self, model: str, version: int) -> None:
        """Stop sampling an unloaded version's queue (the counters keep their totals)."""
        forward = self._forwards.pop((model, str(version)), None)
        if forward is not None:
            self.model_forward_info.remove(model, str(version), forward)
        try:
            self.queued_inputs.remove(model, str(version))
        except KeyError:
            pass

    def set_ready(self, ready: bool) -> None:
        self.server_ready.set(1 if ready else 0)

    def model_known(self, model: str) -> None:
        """A model the repository knows: its failure counter exists from 0, so the first failure is an
        increase Prometheus can see."""
        self.model_load_failures.labels(model)

    def load_failed(self, model: str) -> None:
        self.model_load_failures.labels(model).inc()

    def version_states(self, model: str, states: Mapping[int, str]) -> None:
        """The repository's versions of `model` and their states now (empty: it no longer knows the model).
        One series per (model, version), its current state's; the series of a state left or a version
        forgotten go."""
        wanted = {str(version): state for version, state in states.items()}
        with self._states_lock:
            shown = self._states.pop(model, {})
            for version, state in shown.items():
                if wanted.get(version) != state:
                    self.model_version_state.remove(model, version, state)
            for version, state in wanted.items():
                self.model_version_state.labels(model, version, state).set(1)
            if wanted:
                self._states[model] = wanted

    def serve_http(self, host: str, port: int) -> int:
        """`/metrics` on host:port (0 picks a free port); returns the port."""
        self._http, _ = start_http_server(port, host, self.registry)
        return self._http.server_port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class BatchMetrics:
    """What one model version's batchers report (the batching.BatchObserver protocol)."""

    def __init__(self, metrics: ServerMetrics, model: str, version: str) -> None:
        labels = (model, version)
        m = metrics
        self._inference_count = m.inference_count.labels(*labels)
        self._execution_count = m.execution_count.labels(*labels)
        self._execution_failure = m.execution_failure.labels(*labels)
        self._queue_duration = m.queue_duration.labels(*labels)
        self._compute_duration = m.compute_duration.labels(*labels)
        self._batch_size = m.batch_size.labels(*labels)
        self._batch_tokens = m.batch_tokens.labels(*labels)
        self._real_tokens = m.real_tokens.labels(*labels)
        self._computed_tokens = m.computed_tokens.labels(*labels)
        self._padding_efficiency = m.padding_efficiency.labels(*labels)
        self._real, self._computed = 0, 0

    def batch_done(
        self, size: int, real_tokens: int, computed_tokens: int, queue_s: Sequence[float], compute_s: float
    ) -> None:
        self._inference_count.inc(size)
        self._execution_count.inc()
        for waited in queue_s:
            self._queue_duration.observe(waited)
        self._compute_duration.observe(compute_s)
        self._batch_size.observe(size)
        self._batch_tokens.observe(computed_tokens)
        self._real_tokens.inc(real_tokens)
        self._computed_tokens.inc(computed_tokens)
        # Several instance threads report here; the ratio may lag a batch behind, never more.
        self._real += real_tokens
        self._computed += computed_tokens
        self._padding_efficiency.set(self._real / self._computed)

    def batch_failed(self, size: int) -> None:
        self._execution_failure.inc()
