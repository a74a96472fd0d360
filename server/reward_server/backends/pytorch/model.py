"""The model in PyTorch: a transformers built-in backbone plus a linear reward head, loaded from
safetensors, read at the last position where the attention mask is 1 (never at pad_token_id: pad ids
disagree across models). The backbone runs SDPA attention, or eager attention where the config caps the
attention logits (SDPA drops the cap)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from reward_server.backends.pytorch.masks import attention_bias, last_token_positions
from reward_server.checkpoint import Checkpoint, weight_files
from reward_server.errors import LoadError

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SDPA, EAGER = "sdpa", "eager"


def attention_implementation(config: Any) -> str:
    """The attention the backbone runs: eager where the config caps the attention logits
    (`attn_logit_softcapping`: Gemma2, or any config that sets it), since transformers' SDPA forward drops
    the cap and only its eager (and flash-attention-2) forward applies it, as the models were trained and
    as their cards score; SDPA otherwise (faster, and causal without a mask)."""
    text_config = config.get_text_config()  # the config itself, or a multimodal config's text part
    capped = any(getattr(c, "attn_logit_softcapping", None) is not None for c in (config, text_config))
    return EAGER if capped else SDPA


class RewardModel(nn.Module):
    """Backbone (`model.*`) + reward head (`score.weight`, optional `score.bias`)."""

    def __init__(self, config: Any, head_bias: bool, dtype: torch.dtype) -> None:
        super().__init__()
        from transformers import AutoModel
        from transformers.modeling_utils import no_init_weights

        self.attention = attention_implementation(config)
        with no_init_weights():  # every weight is overwritten by the checkpoint
            self.model = AutoModel.from_config(config, dtype=dtype, attn_implementation=self.attention)
        self.score = nn.Linear(config.hidden_size, 1, bias=head_bias, dtype=dtype)

    @property
    def runs_causal_unmasked(self) -> bool:
        """Whether attention given no mask runs as causal (SDPA does; eager attends every key)."""
        return self.attention == SDPA

    def attention_mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """A boolean 4D mask (True: may attend) in the form this backbone's attention takes: as it is
        for SDPA, additive (attention_bias) for eager attention, which adds the mask to the logits."""
        if self.attention == SDPA:
            return allowed
        return attention_bias(allowed, self.score.weight.dtype)

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
