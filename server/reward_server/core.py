"""The protocol-neutral data plane: every front (RewardService's servicer, the KServe v2 gRPC front via
fronts/kserve/service.py, the HTTP front) translates its wire format into calls on one RewardCore.

The request path through it: refuse when draining or over the item limit, resolve (model, version) and
hold a lease on it, encode (inline when small, else on the encode pool), compute identical inputs once,
queue the distinct inputs on the batcher (or one shared-prompt group for a Rank of one prompt and N
responses), reassemble one result per input in request order. Rank orders the scores (ties: lower
index first)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor

from reward_server.datatypes import (
    Candidates,
    ModelMetadata,
    RankRequest,
    RankResponse,
    RepositoryModel,
    ScoreInput,
    ScoreRequest,
    ScoreResponse,
    ScoreResult,
)
from reward_server.errors import InvalidArgument, ModelLoadFailed, Unavailable
from reward_server.repository import LoadedVersion, ModelRepository
from reward_server.request_record import current_request
from reward_server.runtime.batching import Scored
from reward_server.runtime.encoding import candidate_conversations
from reward_server.runtime.shared_prompt_plan import plan_shared_prompt

log = logging.getLogger(__name__)


def rank_of(scores: Sequence[float]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(rank index of each item, item indexes best first); equal scores keep input order."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    rank = [0] * len(scores)
    for position, index in enumerate(order):
        rank[index] = position
    return tuple(rank), tuple(order)


class RewardCore:
    def __init__(
        self, repository: ModelRepository, encode_pool: Executor, max_items_per_request: int
    ) -> None:
        self.repository = repository
        self._encode_pool = encode_pool
        self._max_items = max_items_per_request
        self.draining = False

    def ready(self) -> bool:
        """Server readiness, the one rule behind KServe's ServerReady, HTTP /v2/health/ready and the
        `reward.ready` health name: not draining, and every model the repository requires has a ready
        version (ModelRepository.ready)."""
        return not self.draining and self.repository.ready()

    async def _score_inputs(
        self,
        model: str,
        version: str,
        inputs: Sequence[ScoreInput],
        deadline: float | None,
        share_prompt: bool = False,
    ) -> tuple[str, int, tuple[ScoreResult, ...]]:
        if self.draining:
            raise Unavailable("server is shutting down")
        if not inputs:
            raise InvalidArgument("the request has no inputs")
        if len(inputs) > self._max_items:
            raise InvalidArgument(
                f"the request has {len(inputs)} inputs; at most {self._max_items} are allowed"
            )
        record = current_request.get()
        # The version is held until its scores are in: a hot swap or unload lets this request finish on it.
        with self.repository.acquire(model, version) as loaded:
            if record is not None:
                record.model, record.version, record.items = loaded.name, str(loaded.version), len(inputs)
                record.resolved = True
            encoder = loaded.encoder
            if encoder.fits_inline(inputs):
                encoded = encoder.encode(inputs, parallel=False)
            else:
                encoded = await asyncio.get_running_loop().run_in_executor(
                    self._encode_pool, encoder.encode, inputs
                )
            # Identical inputs of one request are computed once: equal inputs get equal scores (a tie stays
            # a tie whatever rows the batcher puts them in), and duplicated best-of-N samples cost nothing.
            unique = list(dict.fromkeys(e.ids for e in encoded))
            scored = await self._compute(loaded, unique, deadline, share_prompt)
        computed = dict(zip(unique, scored))
        if record is not None:
            record.tokens = sum(len(ids) for ids in unique)
            record.queue_s = max(s.queue_s for s in scored)
            record.compute_s = max(s.compute_s for s in scored)
        results = tuple(ScoreResult(computed[e.ids].score, len(e.ids), e.num_truncated) for e in encoded)
        return loaded.name, loaded.version, results

    @staticmethod
    async def _compute(
        loaded: LoadedVersion, unique: list[tuple[int, ...]], deadline: float | None, share_prompt: bool
    ) -> list[Scored]:
        """The distinct inputs' scores: as one shared-prompt group when they share a long enough prefix
        and the backend can reuse its KV cache, else as inputs of the dynamic batcher."""
        loop = asyncio.get_running_loop()
        group = plan_shared_prompt(unique) if share_prompt else None
        future = loaded.submit_shared(group, deadline, loop) if group else None
        if future is not None and group is not None:
            log.debug(
                "%s/%d: shared-prompt group: %d prefix tokens, %d candidates",
                loaded.name,
                loaded.version,
                len(group.prefix),
                len(group.suffixes),
            )
            return await future  # type: ignore[misc]  # an asyncio future: submitted with the running loop
        futures = loaded.submit(unique, deadline, loop)
        if len(futures) == 1:  # most RL requests: no gather (its future and callbacks) for one input
            return [await futures[0]]  # type: ignore[misc]  # as above
        return list(await asyncio.gather(*futures))  # type: ignore[arg-type]  # as above

    async def score(self, request: ScoreRequest, deadline: float | None) -> ScoreResponse:
        return ScoreResponse(
            *await self._score_inputs(request.model, request.version, request.inputs, deadline)
        )

    async def rank(self, request: RankRequest, deadline: float | None) -> RankResponse:
        items = request.items
        shared = isinstance(items, Candidates)  # one prompt, N responses: the prompt may be computed once
        inputs = candidate_conversations(items) if isinstance(items, Candidates) else items
        name, version, results = await self._score_inputs(
            request.model, request.version, inputs, deadline, share_prompt=shared
        )
        rank, order = rank_of([r.score for r in results])
        return RankResponse(name, version, results, rank, order)

    def model_metadata(self, model: str, version: str) -> ModelMetadata:
        if version:
            self.repository.resolve(model, version)  # NOT_FOUND / UNAVAILABLE for that version
        return self.repository.metadata(model)

    def list_models(self) -> list[ModelMetadata]:
        return self.repository.list_models()

    def repository_index(self, ready_only: bool) -> list[RepositoryModel]:
        return self.repository.index(ready_only)

    async def load_model(self, model: str) -> ModelMetadata:
        """Load (or reload) off the event loop; a version that failed makes the request fail
        with its reason."""
        failures = await asyncio.to_thread(self.repository.load_model, model)
        if failures:
            serving = " (a loaded version keeps serving)" if self.repository.model_ready(model) else ""
            raise ModelLoadFailed(f"model {model!r} failed to load: " + "; ".join(failures) + serving)
        return self.repository.metadata(model)

    async def unload_model(self, model: str) -> None:
        await asyncio.to_thread(self.repository.unload_model, model)


def deadline_from(time_remaining: float | None) -> float | None:
    return None if time_remaining is None else time.monotonic() + time_remaining
