"""The model in PyTorch: a transformers built-in backbone plus a linear reward head, loaded from
safetensors, read at the last position where the attention mask is 1 (never at pad_token_id: pad ids
disagree across models)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from reward_server.backends.pytorch.masks import last_token_positions
from reward_server.checkpoint import Checkpoint, weight_files
from reward_server.errors import LoadError

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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
        """Scores from a 2D attention mask (what the ONNX exporter traces)."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden, last_token_positions(attention_mask))

    def head(self, hidden: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return self.score(hidden[rows, last]).squeeze(-1).float()


def load_state_dict(files: Sequence[Any], device: str) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            state.update(load_file(str(path), device=device))
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise LoadError(f"{path}: cannot read safetensors: {e}") from e
    return state


def load_reward_model(checkpoint: Checkpoint, device: str, dtype: str) -> RewardModel:
    """The checkpoint's weights in a RewardModel on `device`, in `dtype`, in eval mode."""
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
    return model.to(torch_dtype).eval()
