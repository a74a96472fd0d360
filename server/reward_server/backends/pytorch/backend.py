"""The PyTorch backend: a RewardModel (model.py) served through the forward variants its load-time
checks keep (scorers.py), as TorchScript traces by default, on `intra_op_threads` CPU threads."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from reward_server.backends.base import Backend
from reward_server.backends.packing import computed_tokens, packed
from reward_server.backends.padding import right_padded
from reward_server.backends.plan import ForwardPlan
from reward_server.backends.pytorch.model import TORCH_DTYPES, RewardModel, load_reward_model
from reward_server.backends.pytorch.scorers import PaddedScorer, choose_scorers
from reward_server.backends.pytorch.shared_prompt import shared_prompt_refusal, shared_prompt_scores
from reward_server.backends.pytorch.tensors import on_device, runs_unmasked
from reward_server.backends.settings import PYTORCH_DEFAULTS, PyTorchSettings
from reward_server.checkpoint import Checkpoint

log = logging.getLogger(__name__)


class PyTorchBackend(Backend):
    """The model in PyTorch: weights from safetensors, a transformers backbone, run through the forward
    variants its load-time checks keep (scorers.Scorers: padded or last-position, unmasked, packed), each
    as a TorchScript trace, or eagerly when tracing is off or fails; `forward_plan` says which."""

    supports_shared_prompt = (
        True  # score_shared_prompt: see shared_prompt.py; refused at load where it differs
    )

    def __init__(
        self, checkpoint: Checkpoint, device: str, dtype: str, settings: PyTorchSettings = PYTORCH_DEFAULTS
    ) -> None:
        self.device = device
        self.dtype = dtype
        self._model = load_reward_model(checkpoint, device, dtype)
        self.head_bias = self._model.score.bias is not None
        # 0: torch's default (one per physical core); only CPU instances use intra-op threads.
        self.intra_op_threads = settings.intra_op_threads if device == "cpu" else 0
        tolerance = 1e-5 if TORCH_DTYPES[dtype] == torch.float32 else 1e-2
        self._use_threads()
        self.sliding_window = getattr(checkpoint.model_config, "sliding_window", None)
        # The config keys the reuse of TorchScript traces across loads (trace_cache: torch never frees one).
        scorers = choose_scorers(
            self._model,
            self.sliding_window,
            settings,
            device,
            tolerance,
            checkpoint.folder,
            checkpoint.model_config.to_json_string(),
        )
        self._plan = scorers.plan
        self.last_position = scorers.last_position
        self.traced = scorers.padded.traced
        # Each returns (scores, inputs...): see scorers.InputsKept.
        self._scorer: Any = scorers.padded.run
        self._unmasked: Any = scorers.unmasked.run if scorers.unmasked else None
        self._packed: Any = scorers.packed.run if scorers.packed else None
        self.unmasked_causal = self._unmasked is not None
        self.packs_batches = self._packed is not None
        why = shared_prompt_refusal(
            PaddedScorer(self._model, self.sliding_window), device, self.last_position, tolerance
        )
        self.supports_shared_prompt = not why
        if why:
            log.info("%s: Rank candidates run whole, not as one shared prompt: %s", checkpoint.folder, why)

    @property
    def forward_plan(self) -> ForwardPlan:
        return self._plan

    @property
    def module(self) -> RewardModel:
        """The loaded nn.Module (the exporter traces it)."""
        return self._model

    def _use_threads(self) -> None:
        """Intra-op threads are set per calling thread (OpenMP): the instance's thread sets its own."""
        if self.intra_op_threads and torch.get_num_threads() != self.intra_op_threads:
            torch.set_num_threads(self.intra_op_threads)

    @torch.inference_mode()
    def score_batch(self, batch: Sequence[Sequence[int]]) -> list[float]:
        self._use_threads()
        layout = packed(batch) if self._packed is not None and len(batch) > 1 else None
        if layout is not None:
            scorer, arrays = self._packed, layout.arrays()
        else:
            unmasked = self._unmasked is not None and runs_unmasked(batch, self.sliding_window)
            scorer, arrays = (self._unmasked if unmasked else self._scorer), right_padded(batch)
        inputs = on_device(arrays, self.device)
        with torch.jit.optimized_execution(
            False
        ):  # no fusion passes: the same kernels, the same digits as eager
            return scorer(*inputs)[0].cpu().tolist()

    def computed_tokens(self, lengths: Sequence[int]) -> int:
        """Tokens a batch of these lengths computes, padding included (packed when score_batch packs)."""
        if self._packed is not None and len(lengths) > 1:
            return computed_tokens(lengths)
        return len(lengths) * max(lengths)

    def score_shared_prompt(self, prefix: Sequence[int], suffixes: Sequence[Sequence[int]]) -> list[float]:
        """Scores of prefix + each suffix, the prefix computed once and its KV cache reused."""
        self._use_threads()
        return shared_prompt_scores(
            self._model, prefix, suffixes, self.device, self.sliding_window, self.last_position
        )

    def close(self) -> None:
        del self._model, self._scorer, self._unmasked, self._packed
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
