"""Eager PyTorch backend: a transformers built-in backbone plus a linear reward head, read at the
last position where the attention mask is 1 (never at pad_token_id: pad ids disagree across models)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ..checkpoint import Checkpoint, weight_files
from ..errors import LoadError
from .padding import right_padded

log = logging.getLogger(__name__)

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def last_token_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last position whose mask is 1, per row (works for left or right padding)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask).argmax(dim=1)


class RewardModel(nn.Module):
    """Backbone (`model.*`) + reward head (`score.weight`, optional `score.bias`)."""

    def __init__(self, config: Any, head_bias: bool, dtype: torch.dtype) -> None:
        super().__init__()
        from transformers import AutoModel
        from transformers.modeling_utils import no_init_weights

        with no_init_weights():  # every weight is overwritten by the checkpoint
            self.model = AutoModel.from_config(config, dtype=dtype, attn_implementation="sdpa")
        self.score = nn.Linear(config.hidden_size, 1, bias=head_bias, dtype=dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        pooled = hidden[rows, last_token_positions(attention_mask)]
        return self.score(pooled).squeeze(-1).float()


def load_state_dict(files: Sequence[Any], device: str) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            state.update(load_file(str(path), device=device))
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise LoadError(f"{path}: cannot read safetensors: {e}") from e
    return state


class TorchEagerBackend:
    def __init__(self, checkpoint: Checkpoint, device: str, dtype: str, config: Any = None) -> None:
        self.device = device
        self.dtype = dtype
        torch_dtype = TORCH_DTYPES[dtype]
        state = load_state_dict(weight_files(checkpoint.folder, checkpoint.model_filename), device)
        if "score.weight" not in state:
            raise LoadError(f"{checkpoint.folder}: the reward head 'score.weight' is missing from the weights")
        try:
            with torch.device(device):
                model = RewardModel(checkpoint.model_config, "score.bias" in state, torch_dtype)
            model.load_state_dict(state, strict=True)
        except (RuntimeError, ValueError) as e:  # missing/unexpected keys, shape mismatches
            raise LoadError(f"{checkpoint.folder}: weights do not match config.json: {e}") from e
        self._model = model.to(torch_dtype).eval()
        self.head_bias = "score.bias" in state

    @property
    def module(self) -> RewardModel:
        """The loaded nn.Module (the exporter traces it)."""
        return self._model

    @torch.inference_mode()
    def score_batch(self, batch: Sequence[Sequence[int]]) -> list[float]:
        input_ids, attention_mask = (torch.from_numpy(a).to(self.device) for a in right_padded(batch))
        scores = self._model(input_ids, attention_mask)
        return scores.cpu().tolist()

    def score_shared_prefix(self, prefix: Sequence[int], suffixes: Sequence[Sequence[int]]) -> list[float]:
        """Scores of prefix + each suffix, the prefix computed once and its KV cache reused."""
        from .shared_prompt import shared_prefix_scores  # it imports this module

        return shared_prefix_scores(self._model, prefix, suffixes, self.device)

    def close(self) -> None:
        del self._model
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
