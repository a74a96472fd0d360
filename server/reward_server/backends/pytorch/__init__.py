"""The PyTorch backend (`backend: "pytorch"`), in modules that follow what it does:

- model.py: the RewardModel (transformers backbone + reward head) loaded from safetensors;
- scorers.py: the forward variants (padded, last-position, unmasked, packed; traced or eager), checked at
  load against the full forward, and the ForwardPlan they make;
- last_position.py, masks.py: what those variants compute; tensors.py: a batch as their input tensors;
- shared_prompt.py: Rank candidates that share a prompt, the prompt's KV cache computed once;
- backend.py: PyTorchBackend, the backends.Backend that serves them.
"""

from __future__ import annotations

from reward_server.backends.pytorch.backend import PyTorchBackend
from reward_server.backends.pytorch.model import RewardModel

__all__ = ["PyTorchBackend", "RewardModel"]
