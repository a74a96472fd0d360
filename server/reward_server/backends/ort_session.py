"""onnxruntime backend: a session over the exported graph (backbone, reward head, its bias and the
pooling at the last attention-mask position are all inside model.onnx), one per instance.

CPU: CPUExecutionProvider with the config's graph optimization level and intra-op threads.
GPU: CUDAExecutionProvider on the instance's device, with IO binding so that inputs are copied to the
device once and the (fp16 or fp32) scores come back in one copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from reward_server.backends.base import Backend
from reward_server.backends.padding import right_padded
from reward_server.backends.plan import ForwardPlan
from reward_server.backends.settings import ONNXRUNTIME_DEFAULTS, OnnxRuntimeSettings
from reward_server.checkpoint import Checkpoint
from reward_server.errors import LoadError

MODEL_FILE = "model.onnx"
LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}
# Written into the graph's metadata by `reward-server export`.
META_DTYPE, META_HEAD_BIAS = "reward_dtype", "reward_head_bias"
META_ATTENTION = "reward_attention"  # the attention traced into the graph (ForwardPlan.attention)


def providers_for(device: str) -> list[Any]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise LoadError(
            f"instance on {device} needs onnxruntime's CUDAExecutionProvider "
            "(install the `gpu` extra: onnxruntime-gpu)"
        )
    return [("CUDAExecutionProvider", {"device_id": int(device.split(":")[1])}), "CPUExecutionProvider"]


class OnnxRuntimeBackend(Backend):
    """A session over model.onnx; pads every batch and shares no prefix (the graph has no KV cache input)."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        device: str,
        dtype: str,
        settings: OnnxRuntimeSettings = ONNXRUNTIME_DEFAULTS,
    ) -> None:
        path = checkpoint.model_file(MODEL_FILE)
        options = ort.SessionOptions()
        options.graph_optimization_level = LEVELS[settings.graph_optimization_level]
        options.intra_op_num_threads = settings.intra_op_threads
        try:
            self._session = ort.InferenceSession(str(path), options, providers=providers_for(device))
        except (ort.capi.onnxruntime_pybind11_state.Fail, RuntimeError, ValueError) as e:
            raise LoadError(f"{path}: onnxruntime cannot load the graph: {e}") from e
        meta = self._session.get_modelmeta().custom_metadata_map
        self.device = device
        self.dtype = meta.get(META_DTYPE, "float32")  # fixed at export; config's dtype does not apply
        self.head_bias = meta.get(META_HEAD_BIAS) == "true"
        self.attention = meta.get(META_ATTENTION, "sdpa")  # graphs exported before it was recorded: sdpa
        self._on_gpu = device != "cpu"
        self._device_id = int(device.split(":")[1]) if self._on_gpu else 0

    @property
    def forward_plan(self) -> ForwardPlan:
        # every batch padded, one session run
        return ForwardPlan("padded", "onnxruntime", attention=self.attention)

    def score_batch(self, batch: Sequence[Sequence[int]]) -> list[float]:
        input_ids, attention_mask = right_padded(batch)
        if not self._on_gpu:
            (logits,) = self._session.run(
                ["logits"], {"input_ids": input_ids, "attention_mask": attention_mask}
            )
            return logits.reshape(-1).astype(np.float32).tolist()
        binding = self._session.io_binding()
        for name, array in (("input_ids", input_ids), ("attention_mask", attention_mask)):
            binding.bind_ortvalue_input(
                name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", self._device_id)
            )
        binding.bind_output("logits", "cuda", self._device_id)
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0].reshape(-1).astype(np.float32).tolist()

    def close(self) -> None:
        del self._session
