"""Load one model version: checkpoint -> encoder + one batcher per instance (each with its backend)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from reward_server.backends import create_backend
from reward_server.checkpoint import Checkpoint, read_checkpoint
from reward_server.errors import LoadError, ResourceExhausted
from reward_server.formats import make_format
from reward_server.formats.special_tokens import ContentSpecialTokens
from reward_server.repository.config import DEFAULT_WARMUP_LENGTH, InstanceGroup, ModelConfig
from reward_server.runtime.batching import AnyFuture, DynamicBatcher, GroupTask
from reward_server.runtime.encoding import InputEncoder, special_token_frame
from reward_server.runtime.openmp import run_on_thread_that_ends, threads_per_cpu_instance, usable_cpus
from reward_server.runtime.shared_prompt_plan import SharedPromptGroup
from reward_server.runtime.synthetic_ids import synthetic_batch
from reward_server.runtime.tuning import tune_token_budget

if TYPE_CHECKING:
    from reward_server.backends import Backend
    from reward_server.metrics import ServerMetrics

log = logging.getLogger(__name__)
T = TypeVar("T")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def instance_devices(groups: Sequence[InstanceGroup]) -> list[str]:
    """One device string per instance, as Triton places instance groups."""
    devices = []
    for group in groups:
        kind = group.kind
        if kind == "auto":
            kind = "gpu" if _cuda_available() else "cpu"
        if kind == "cpu":
            devices += ["cpu"] * group.count
            continue
        if not _cuda_available():
            raise LoadError("instance_group asks for KIND_GPU but CUDA is not available")
        for gpu in group.gpus or (0,):
            devices += [f"cuda:{gpu}"] * group.count
    return devices


def resolve_dtype(dtype: str, device: str) -> str:
    if dtype != "auto":
        return dtype
    return "float16" if device.startswith("cuda") else "float32"


@dataclass
class LoadedVersion:
    """A ready model version: its encoder and its instances' batchers."""

    name: str
    version: int
    config: ModelConfig
    encoder: InputEncoder
    instances: list[DynamicBatcher]
    # Requests holding this version (ModelRepository.acquire): an unload waits for them to finish.
    _leases: int = field(default=0, init=False)
    _idle: threading.Condition = field(default_factory=threading.Condition, init=False)

    def lease(self) -> None:
        with self._idle:
            self._leases += 1

    def release(self) -> None:
        with self._idle:
            self._leases -= 1
            if not self._leases:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request holds this version; False if some still do after `timeout` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._leases, timeout)

    @property
    def device(self) -> str:
        return ",".join(sorted({b.backend.device for b in self.instances}))

    @property
    def dtype(self) -> str:
        return self.instances[0].backend.dtype

    @property
    def forward(self) -> str:
        """Which forward pass serves this version (each distinct one when instances differ)."""
        return ",".join(sorted({str(b.backend.forward_plan) for b in self.instances}))

    def submit(
        self,
        sequences: Sequence[Sequence[int]],
        deadline: float | None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> list[AnyFuture]:
        """Send a request to the least-loaded instance; if it is full, try the others. (`loop`: see
        DynamicBatcher.submit.)"""
        return _least_loaded(self.instances, lambda batcher: batcher.submit(sequences, deadline, loop))

    def submit_shared(
        self, group: SharedPromptGroup, deadline: float | None, loop: asyncio.AbstractEventLoop | None = None
    ) -> AnyFuture | None:
        """Queue a shared-prompt group on the least-loaded instance whose backend reuses a prefix's KV
        cache; None when no backend can (onnxruntime): the caller takes the plain path."""
        capable = [b for b in self.instances if b.backend.supports_shared_prompt]
        if not capable:
            return None

        def submit(batcher: DynamicBatcher) -> AnyFuture:
            task = GroupTask(
                lambda: batcher.backend.score_shared_prompt(group.prefix, group.suffixes),
                group.computed_tokens,
            )
            return batcher.submit_task(group.tokens, task, deadline, loop)

        return _least_loaded(capable, submit)

    def close(self) -> None:
        for batcher in self.instances:
            batcher.close()


def _least_loaded(instances: Sequence[DynamicBatcher], submit: Callable[[DynamicBatcher], T]) -> T:
    """submit() on the instance with the fewest inputs waiting; if its queue is full, on the next."""
    last_error: ResourceExhausted | None = None
    for batcher in sorted(instances, key=lambda b: b.pending()):
        try:
            return submit(batcher)
        except ResourceExhausted as e:
            last_error = e
    assert last_error is not None
    raise last_error


def warm_up(backend: Backend, config: ModelConfig, max_length: int, vocab_size: int) -> None:
    """Run the config's warmup batches (synthetic token ids) so the first request pays no first-call cost."""
    for warmup in config.warmup:
        length = min(warmup.sequence_length or DEFAULT_WARMUP_LENGTH, max_length)
        batch = synthetic_batch(vocab_size, [length] * warmup.batch_size)
        for _ in range(warmup.count):
            scores = backend.score_batch(batch)
            if len(scores) != len(batch):
                raise LoadError(f"warmup: the backend returned {len(scores)} scores for {len(batch)} inputs")


def tuned_budget(
    backend: Backend, config: ModelConfig, version: int, device: str, max_length: int, vocab_size: int
) -> int:
    """max_batch_tokens left unset: the budget with the most tokens/s on this instance's device."""
    tuned = tune_token_budget(
        backend.score_batch,
        max_length=max_length,
        max_batch_size=config.max_batch_size,
        vocab_size=vocab_size,
    )
    log.info(
        "model=%s version=%d device=%s: max_batch_tokens tuned to %d in %.1f s (tokens/s by budget: %s)",
        config.name,
        version,
        device,
        tuned.budget,
        tuned.seconds,
        ", ".join(f"{budget}: {rate:.0f}" for budget, rate in tuned.tokens_per_s.items()),
    )
    return tuned.budget


def _ready_backend(
    config: ModelConfig, checkpoint: Checkpoint, version: int, device: str, max_length: int
) -> tuple[Backend, int]:
    """A backend built, checked and warmed up, and its token budget (tuned when config leaves it unset)."""
    vocab_size = checkpoint.model_config.vocab_size
    backend = create_backend(config.backend, checkpoint, device, resolve_dtype(config.dtype, device), config)
    if config.head_bias is not None and backend.head_bias != config.head_bias:
        backend.close()
        raise LoadError(
            f"{config.path}: field 'reward.head_bias' = {config.head_bias}, but the weights "
            f"{'have no' if config.head_bias else 'have a'} score.bias"
        )
    try:
        warm_up(backend, config, max_length, vocab_size)
    except Exception as e:
        backend.close()
        raise LoadError(f"warmup failed on {device}: {type(e).__name__}: {e}") from e
    budget = config.max_batch_tokens
    if budget is None:
        budget = tuned_budget(backend, config, version, device, max_length, vocab_size)
    return backend, budget


def with_cpu_threads_shared(config: ModelConfig, devices: Sequence[str]) -> ModelConfig:
    """The config with the CPUs shared out among the model's CPU instances where it leaves the intra-op
    threads unset (0): teams that together hold more threads than CPUs slow every forward
    (docs/pytorch-backend.md, "One OpenMP team per instance", has the numbers)."""
    share = threads_per_cpu_instance(devices.count("cpu"))
    if not share:
        return config
    log.info(
        "%s: %d CPU instances share %d CPUs: %d intra-op thread(s) each where config.pbtxt sets none",
        config.name,
        devices.count("cpu"),
        usable_cpus(),
        share,
    )
    return replace(
        config,
        torch_intra_op_threads=config.torch_intra_op_threads or share,
        ort_intra_op_threads=config.ort_intra_op_threads or share,
    )


def load_version(
    config: ModelConfig, version: int, folder: Path, metrics: ServerMetrics | None = None
) -> LoadedVersion:
    checkpoint = read_checkpoint(folder, config.default_model_filename)
    model_config = checkpoint.model_config
    hidden, heads = (
        getattr(model_config, "hidden_size", None),
        getattr(model_config, "num_attention_heads", None),
    )
    if hidden and heads and hidden % heads:
        raise LoadError(
            f"{folder}/config.json: hidden_size {hidden} is not divisible by num_attention_heads {heads}"
        )
    model_max = getattr(model_config, "max_position_embeddings", 0) or 0
    max_length = config.max_sequence_length or model_max
    if not max_length:
        raise LoadError(
            f"{config.path}: set reward.max_sequence_length (config.json has no max_position_embeddings)"
        )
    if model_max and max_length > model_max:
        raise LoadError(
            f"{config.path}: field 'reward.max_sequence_length' = {max_length}: larger than the "
            f"model's max_position_embeddings {model_max}"
        )
    prompt_format = make_format(config.prompt_format, checkpoint.tokenizer, config.reward_token_id)
    add_special = config.add_special_tokens
    if add_special is None:
        add_special = prompt_format.default_add_special_tokens
    prefix, suffix = special_token_frame(checkpoint.tokenizer) if add_special else ((), ())
    if config.reward_token_id is not None and not 0 <= config.reward_token_id < model_config.vocab_size:
        raise LoadError(
            f"{config.path}: field 'reward.reward_token_id' = {config.reward_token_id}: "
            f"outside the vocabulary (vocab_size {model_config.vocab_size})"
        )
    encoder = InputEncoder(
        format=prompt_format,
        tokenizer=checkpoint.tokenizer,
        vocab_size=model_config.vocab_size,
        max_length=max_length,
        truncation=config.truncation,
        truncation_side=config.truncation_side,
        prefix_ids=prefix,
        suffix_ids=suffix + prompt_format.suffix_ids,
        special_tokens=ContentSpecialTokens.build(
            config.special_tokens_in_content, checkpoint.tokenizer.backend_tokenizer
        ),
    )
    instances: list[DynamicBatcher] = []
    observer = (
        metrics.observer(config.name, version, lambda: sum(b.pending() for b in instances))
        if metrics
        else None
    )
    started = time.monotonic()
    try:
        devices = instance_devices(config.instance_groups)
        config = with_cpu_threads_shared(config, devices)
        for index, device in enumerate(devices):
            backend, budget = run_on_thread_that_ends(
                partial(_ready_backend, config, checkpoint, version, device, max_length),
                name=f"load:{config.name}/{version}#{index}",
            )
            instances.append(
                DynamicBatcher(
                    f"{config.name}/{version}#{index}",
                    backend,
                    max_batch_size=config.max_batch_size,
                    max_queue_delay_s=config.max_queue_delay_s,
                    preferred_batch_sizes=config.preferred_batch_sizes,
                    max_queue_size=config.max_queue_size,
                    max_batch_tokens=budget,
                    observer=observer,
                )
            )
    except BaseException:
        for batcher in instances:
            batcher.close()
        raise
    loaded = LoadedVersion(config.name, version, config, encoder, instances)
    if metrics:
        metrics.forward_served(config.name, version, loaded.forward)
    log.info(
        "loaded model=%s version=%d backend=%s forward=%s instances=%d device=%s dtype=%s max_length=%d "
        "format=%s warmup_batches=%d load_s=%.2f",
        config.name,
        version,
        config.backend,
        loaded.forward,
        len(instances),
        loaded.device,
        loaded.dtype,
        max_length,
        config.prompt_format,
        sum(w.count for w in config.warmup),
        time.monotonic() - started,
    )
    return loaded
