"""Which forward pass serves a loaded model version: a typed description every backend reports, shown
in GetModelMetadata, the load log line and the `reward_model_forward_info` metric."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ForwardPlan:
    """How a backend runs a batch.

    layout: "packed" (inputs of different lengths share rows, see packing.py) or "padded" (one row each).
    execution: "traced" (a TorchScript graph), "eager" (PyTorch module by module), "partly-traced" (some
      variants traced, the others eager), "onnxruntime" (a session over model.onnx), or a custom
      backend's own name.
    last_position_only: the last decoder layer runs only where the reward head reads (last_position.py).
    unmasked: batches whose rows share one length run without an attention mask (causal attention).
    attention: the backbone's attention implementation: "sdpa" (the default), or "eager" for models whose
      config caps the attention logits (attn_logit_softcapping: Gemma2), which SDPA drops.
    """

    layout: str
    execution: str
    last_position_only: bool = False
    unmasked: bool = False
    attention: str = "sdpa"

    def __str__(self) -> str:
        """The short form, e.g. "packed+traced+last-position+unmasked", "padded+traced+eager-attention"
        or "padded+onnxruntime": the attention is named only where it is not the default, sdpa."""
        parts = [self.layout, self.execution]
        if self.last_position_only:
            parts.append("last-position")
        if self.unmasked:
            parts.append("unmasked")
        if self.attention != "sdpa":
            parts.append(f"{self.attention}-attention")
        return "+".join(parts)
