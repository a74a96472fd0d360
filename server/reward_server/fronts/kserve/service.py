"""KServeCore: the KServe v2 / Triton operations over RewardCore, protocol-neutral.

Inference goes through RewardCore.score, the path of RewardService's Score (encoding, batcher, version
lease, deadline, metrics): a reward never depends on the front that asked for it. Metadata, config and
statistics come back as JSON-shaped dicts (metadata.py); tensors as InferTensor (tensors.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reward_server.core import RewardCore
from reward_server.datatypes import Conversation, ScoreInput, ScoreRequest, ScoreResult, Text
from reward_server.errors import InvalidArgument, NotFound, Unavailable
from reward_server.fronts.kserve.metadata import (
    VersionStatistics,
    model_config,
    model_metadata,
    model_statistics,
    server_metadata,
)
from reward_server.fronts.kserve.tensors import InferTensor, output_names, request_inputs, result_tensors
from reward_server.repository import LoadedVersion
from reward_server.runtime.batching import InferenceCounts


@dataclass(frozen=True)
class InferResults:
    """An infer request's answer before its output tensors are built."""

    model: str
    version: str  # the version served, as a numeric string
    results: tuple[ScoreResult, ...]  # one per input row, in order
    outputs: tuple[str, ...]  # the output names to answer with, checked, in the order asked


def _sum_counts(counts: Sequence[InferenceCounts]) -> InferenceCounts:
    batches: dict[int, tuple[int, int]] = {}
    for c in counts:
        for size, executions, ns in c.batches:
            e, n = batches.get(size, (0, 0))
            batches[size] = (e + executions, n + ns)
    return InferenceCounts(
        executions=sum(c.executions for c in counts),
        inferences=sum(c.inferences for c in counts),
        success_ns=sum(c.success_ns for c in counts),
        queue_ns=sum(c.queue_ns for c in counts),
        compute_ns=sum(c.compute_ns for c in counts),
        fail_count=sum(c.fail_count for c in counts),
        fail_ns=sum(c.fail_ns for c in counts),
        last_inference_ms=max((c.last_inference_ms for c in counts), default=0),
        batches=tuple((s, *v) for s, v in sorted(batches.items())),
    )


def version_statistics(loaded: LoadedVersion) -> VersionStatistics:
    c = _sum_counts([b.inference_stats.snapshot() for b in loaded.instances])
    return VersionStatistics(
        loaded.name,
        loaded.version,
        c.last_inference_ms,
        c.inferences,
        c.executions,
        c.inferences,
        c.success_ns,
        c.fail_count,
        c.fail_ns,
        c.queue_ns,
        c.compute_ns,
        c.batches,
    )


class KServeCore:
    """The operations of KServe v2's data plane and Triton's repository extension over one RewardCore."""

    def __init__(self, core: RewardCore, max_chars_per_message: int = 0) -> None:
        """`max_chars_per_message`: the longest text or message content an infer request may carry
        (--max-chars-per-message; 0 = no limit): RewardService's limit, applied to the tensors' texts."""
        self.core = core
        self._max_chars = max_chars_per_message
        self._repository = core.repository

    # --- health and metadata ------------------------------------------------------------------

    def server_live(self) -> bool:
        return True

    def server_ready(self) -> bool:
        """RewardCore.ready: the rule the `reward.ready` health name follows too."""
        return self.core.ready()

    def model_ready(self, model: str, version: str = "") -> bool:
        """Whether (model, version) would serve a request now; a bad version string is INVALID_ARGUMENT."""
        if self.core.draining:
            return False
        try:
            self._repository.resolve(model, version)
        except (NotFound, Unavailable):
            return False
        return True

    def server_metadata(self, extra_extensions: Sequence[str] = ()) -> dict:
        return server_metadata(extra_extensions)

    def model_metadata(self, model: str, version: str = "") -> dict:
        self._repository.resolve(model, version)  # NOT_FOUND / UNAVAILABLE as for an infer request
        return model_metadata(self._repository.metadata(model))

    def model_config(self, model: str, version: str = "") -> dict:
        loaded = self._repository.resolve(model, version)
        return model_config(loaded.config, loaded.device, loaded.forward)

    def model_statistics(self, model: str = "", version: str = "") -> dict:
        """Counters of one version, of every ready version of `model` (no version), or of every ready
        version of every model (no model)."""
        if model and version:
            return model_statistics([version_statistics(self._repository.resolve(model, version))])
        names = [model] if model else [m.name for m in self._repository.list_models()]
        if model:
            self._repository.resolve(model, "")  # NOT_FOUND / UNAVAILABLE for a model with nothing ready
        versions = []
        for name in names:
            for status in self._repository.metadata(name).versions:
                if status.state != "READY":
                    continue
                try:
                    versions.append(version_statistics(self._repository.resolve(name, str(status.version))))
                except (NotFound, Unavailable):  # unloaded since the listing
                    continue
        return model_statistics(versions)

    # --- inference ----------------------------------------------------------------------------

    async def infer(
        self,
        model: str,
        version: str,
        tensors: Sequence[InferTensor],
        requested_outputs: Sequence[str] | None,
        deadline: float | None,
    ) -> tuple[str, str, list[InferTensor]]:
        """(model name, version served as a numeric string, output tensors);
        `deadline` is time.monotonic()."""
        done = await self.infer_results(model, version, tensors, requested_outputs, deadline)
        return done.model, done.version, result_tensors(done.results, done.outputs)

    async def infer_results(
        self,
        model: str,
        version: str,
        tensors: Sequence[InferTensor],
        requested_outputs: Sequence[str] | None,
        deadline: float | None,
    ) -> InferResults:
        """infer() short of building the output tensors: for a front that encodes the outputs from the
        results itself (tensors.output_raw), with the same checks in the same order."""
        if not model:
            raise InvalidArgument("the request names no model")
        inputs = request_inputs(tensors)
        if self._max_chars:
            self._check_chars(inputs)
        outputs = output_names(requested_outputs)  # an unknown output name fails before any compute
        response = await self.core.score(ScoreRequest(model, version, tuple(inputs)), deadline)
        return InferResults(response.model, str(response.version), response.results, outputs)

    def _check_chars(self, inputs: Sequence[ScoreInput]) -> None:
        for row, item in enumerate(inputs):
            texts = (
                [item.text]
                if isinstance(item, Text)
                else [m.content for m in item.messages]
                if isinstance(item, Conversation)
                else []
            )
            for text in texts:
                if len(text) > self._max_chars:
                    raise InvalidArgument(
                        f"input row {row} has a text of {len(text)} characters; at most "
                        f"{self._max_chars} are allowed (--max-chars-per-message)"
                    )

    # --- repository ---------------------------------------------------------------------------

    def repository_index(self, ready_only: bool = False) -> list[dict]:
        """One entry per model version ({"name", "version", "state", "reason"}); a model with no version
        known (not loaded, or its config is invalid) has one entry with an empty version."""
        entries = []
        for m in self.core.repository_index(ready_only):
            versions = [v for v in m.versions if v.version]
            if not versions:
                entries.append({"name": m.name, "version": "", "state": m.state, "reason": m.reason})
            for v in versions:
                if ready_only and v.state != "READY":
                    continue
                entries.append(
                    {"name": m.name, "version": str(v.version), "state": v.state, "reason": v.reason}
                )
        return entries

    @staticmethod
    def _no_parameters(action: str, parameters: Mapping[str, object] | None) -> None:
        if parameters:
            raise InvalidArgument(
                f"repository {action} parameters are not supported (got {', '.join(sorted(parameters))}); "
                f"the model's folder and config.pbtxt are read from the repository"
            )

    async def load_model(self, model: str, parameters: Mapping[str, object] | None = None) -> None:
        """RepositoryModelLoad: LoadModel's rules (explicit mode only: FAILED_PRECONDITION otherwise;
        a version that fails: UNAVAILABLE with its reason)."""
        self._no_parameters("load", parameters)
        await self.core.load_model(model)

    async def unload_model(self, model: str, parameters: Mapping[str, object] | None = None) -> None:
        """RepositoryModelUnload: UnloadModel's rules (explicit mode only; requests in flight finish)."""
        self._no_parameters("unload", parameters)
        await self.core.unload_model(model)
