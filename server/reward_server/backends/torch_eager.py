"""Eager PyTorch backend: a transformers built-in backbone plus a linear reward head, read at the
last position where the attention mask is 1 (never at pad_token_id: pad ids disagree across models)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ..checkpoint import Checkpoint, weight_files
from ..errors import LoadError
from . import trace_cache
from .base import Backend
from .last_position import LLAMA_SHAPED_LAYERS, LastPositionScorer, PackedScorer, supports_last_position
from .masks import last_token_positions, padded_causal_mask
from .packing import computed_tokens, packed
from .padding import right_padded
from .settings import PYTORCH_DEFAULTS, PyTorchSettings

log = logging.getLogger(__name__)

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


class PaddedScorer(nn.Module):
    """What serving runs: scores of a right-padded batch, the backbone given its 4D mask (so that the
    graph has no data-dependent branch and one trace serves every batch shape)."""

    def __init__(self, reward_model: RewardModel, sliding_window: int | None) -> None:
        super().__init__()
        self.reward_model = reward_model
        self.sliding_window = sliding_window

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = padded_causal_mask(attention_mask, self.sliding_window)
        hidden = self.reward_model.model(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
        return self.reward_model.head(hidden, last_token_positions(attention_mask))


class InputsKept(nn.Module):
    """The scorer's scores followed by its own inputs. Traced, this keeps a C++ reference to each input
    until the call has returned: torch releases a tensor made in Python only under the GIL (it drops the
    tensor's PyObject when the last C++ reference goes), and inside the graph that meant waiting for the
    event loop to yield the GIL, once per input per batch. Returned, the inputs are released by the caller."""

    def __init__(self, scorer: nn.Module) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.scorer(*inputs), *inputs)


def load_state_dict(files: Sequence[Any], device: str) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            state.update(load_file(str(path), device=device))
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise LoadError(f"{path}: cannot read safetensors: {e}") from e
    return state


@dataclass(frozen=True)
class Probes:
    """Token-id batches a candidate scorer is checked on: `example` (what a trace is recorded with)
    and `batches` of other shapes."""
    example: list[list[int]]
    batches: list[list[list[int]]]

    @classmethod
    def make(cls, vocab_size: int, one_length_up_to: int | None = None) -> Probes:
        """Rows of different lengths (padded batches); or, given a length, rows of one length up to it
        (for the unpadded scorer)."""
        def ids(length: int, seed: int) -> list[int]:
            return _probe_ids(vocab_size, length, seed)
        if one_length_up_to is None:
            return cls([ids(5, 5), ids(9, 10)], [[ids(3, 1)], [ids(17, 2), ids(4, 3), ids(11, 4)]])
        longest = max(2, one_length_up_to)
        return cls([ids(min(5, longest), 5), ids(min(5, longest), 10)],
                   [[ids(3, 1)], [ids(min(17, longest), 2 + row) for row in range(3)]])

    @classmethod
    def packing(cls, vocab_size: int) -> Probes:
        """Batches that pack into fewer rows (for the packed scorer), the longest past a window of 8."""
        def ids(length: int, seed: int) -> list[int]:
            return _probe_ids(vocab_size, length, seed)
        return cls([ids(9, 5), ids(5, 10), ids(3, 11)],
                   [[ids(17, 2), ids(4, 3), ids(11, 4), ids(3, 1)], [ids(6, 6), ids(1, 7), ids(2, 8)]])


def _probe_ids(vocab_size: int, length: int, seed: int) -> list[int]:
    return [(seed + 7 * i) % vocab_size for i in range(length)]


def runs_unpadded(batch: Sequence[Sequence[int]], sliding_window: int | None) -> bool:
    """Whether a batch may take the unpadded scorer: rows of one length, inside any sliding window."""
    length = len(batch[0])
    return all(len(row) == length for row in batch) and not (sliding_window and length > sliding_window)


Inputs = Callable[[Sequence[Sequence[int]], str], tuple[torch.Tensor, ...]]  # a batch -> a scorer's inputs


def on_device(arrays: Sequence[Any], device: str) -> tuple[torch.Tensor, ...]:
    """Numpy arrays as tensors on `device`."""
    return tuple(torch.from_numpy(a).to(device) for a in arrays)


def _tensors(batch: Sequence[Sequence[int]], device: str) -> tuple[torch.Tensor, ...]:
    """A padded scorer's inputs: input_ids and attention_mask."""
    return on_device(right_padded(batch), device)


def _packed_tensors(batch: Sequence[Sequence[int]], device: str) -> tuple[torch.Tensor, ...]:
    """PackedScorer's inputs (the batch must pack)."""
    layout = packed(batch)
    assert layout is not None, "a batch that packs into no fewer rows"
    return on_device(layout.arrays(), device)


def _probe_difference(scorer: Any, reference: nn.Module, device: str, probes: Probes, inputs: Inputs = _tensors,
                      reference_inputs: Inputs = _tensors) -> float:
    """Largest |score difference| between `scorer` (its first output when it returns several) and
    `reference` over the probe batches, each given its own form of the batch."""
    worst = 0.0
    with torch.inference_mode(), torch.jit.optimized_execution(False):
        for batch in probes.batches:
            got, want = scorer(*inputs(batch, device)), reference(*reference_inputs(batch, device))
            got = got[0] if isinstance(got, tuple) else got
            worst = max(worst, (got - want).abs().max().item())
    return worst


def last_position_scorer(full: PaddedScorer, device: str, probes: Probes, tolerance: float,
                         unpadded: bool = False) -> tuple[nn.Module, str]:
    """(LastPositionScorer, "") when the backbone's layers allow it and its scores match `full` within
    `tolerance` on the probe batches (of one length for the unpadded scorer); else (full, why not)."""
    if not supports_last_position(full.reward_model.model):
        return full, "decoder layers other than " + ", ".join(LLAMA_SHAPED_LAYERS)
    candidate = LastPositionScorer(full.reward_model, full.sliding_window, unpadded)
    return _checked(candidate, full, device, probes, tolerance)


def packed_scorer(full: PaddedScorer, device: str, tolerance: float) -> tuple[nn.Module | None, str]:
    """(PackedScorer, "") when its scores match `full` within `tolerance` on batches that pack; else
    (None, why not). Only for the layers LastPositionScorer runs."""
    candidate = PackedScorer(full.reward_model, full.sliding_window)
    probes = Probes.packing(full.reward_model.model.config.vocab_size)
    checked, why = _checked(candidate, full, device, probes, tolerance, _packed_tensors)
    return (None, why) if why else (checked, "")


def _checked(candidate: nn.Module, full: PaddedScorer, device: str, probes: Probes, tolerance: float,
             inputs: Inputs = _tensors) -> tuple[nn.Module, str]:
    difference = _probe_difference(candidate, full, device, probes, inputs)
    if difference > tolerance:
        return full, f"its scores differ from the full forward by {difference:.3g}"
    return candidate, ""


def traced_scorer(scorer: nn.Module, device: str, probes: Probes, tolerance: float,
                  inputs: Inputs = _tensors, structure: str = "") -> tuple[torch.jit.ScriptModule | None, str]:
    """(InputsKept(scorer) traced with TorchScript, "") or (None, why not).

    Why trace: an eager forward releases and re-takes the GIL at every operator, and while the event loop
    holds it each re-take waits, under serving load for every operator (docs/pytorch-backend.md, "Traced
    forward", has the numbers). The traced graph runs in C++ with the GIL released once (InputsKept
    says why that needs the inputs returned). The trace is checked against the eager scorer on other
    shapes; any difference keeps the eager scorer. A structure already traced reuses its graph
    (trace_cache: torch never frees a trace); `structure` names what the graph depends on beyond the
    modules (the model's config)."""
    for _ in range(2):  # a reused graph that does not match is traced afresh, once
        try:
            kept = InputsKept(scorer)
            example = inputs(probes.example, device)
            key = trace_cache.structure_key(kept, example, structure)
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)  # is_causal: False whenever a mask is given
                warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is in maintenance; eager is the fallback
                traced, reused = trace_cache.trace(kept, example, key)
            difference = _probe_difference(traced, scorer, device, probes, inputs, inputs)
        except Exception as e:  # an architecture the tracer cannot follow
            return None, f"{type(e).__name__}: {e}"
        if difference <= tolerance:
            return traced, ""
        trace_cache.forget(key)
        if not reused:
            break
    return None, f"traced scores differ from eager by {difference:.3g}"


class TorchEagerBackend(Backend):
    """The model in PyTorch: weights from safetensors, a transformers backbone, run as a TorchScript
    trace of LastPositionScorer (PaddedScorer where the layers do not allow it), or eagerly when tracing
    is off or fails, on `intra_op_threads` CPU threads."""

    supports_shared_prefix = True  # score_shared_prefix: see shared_prompt.py

    def __init__(self, checkpoint: Checkpoint, device: str, dtype: str,
                 settings: PyTorchSettings = PYTORCH_DEFAULTS) -> None:
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
        # 0: torch's default (one per physical core); only CPU instances use intra-op threads.
        self.intra_op_threads = settings.intra_op_threads if device == "cpu" else 0
        vocab_size = checkpoint.model_config.vocab_size
        tolerance = 1e-5 if torch_dtype == torch.float32 else 1e-2
        self._use_threads()
        self._structure = checkpoint.model_config.to_json_string()  # what a trace bakes in (trace_cache)
        self.sliding_window = getattr(checkpoint.model_config, "sliding_window", None)
        full = PaddedScorer(self._model, self.sliding_window)
        eager: nn.Module = full
        why = "pytorch { last_position_only: false }"
        if settings.last_position_only:
            eager, why = last_position_scorer(full, device, Probes.make(vocab_size), tolerance)
        self.last_position = eager is not full
        if why:
            log.info("%s: the last layer runs at every position: %s", checkpoint.folder, why)
        self._scorer, self.traced = self._serving_form(eager, settings, checkpoint.folder, Probes.make(vocab_size),
                                                       tolerance)
        if self.traced:
            log.info("%s on %s: serving a TorchScript trace of the forward (checked against eager)",
                     checkpoint.folder, device)
        # Batches of one length (every batch of one row) skip the mask: see LastPositionScorer.
        self._unpadded: Any = None
        if self.last_position:
            probes = Probes.make(vocab_size, one_length_up_to=self.sliding_window or 17)
            unpadded, why = last_position_scorer(full, device, probes, tolerance, unpadded=True)
            if unpadded is full:
                log.info("%s: batches of one length run with a mask too: %s", checkpoint.folder, why)
            else:
                self._unpadded, _ = self._serving_form(unpadded, settings, checkpoint.folder, probes, tolerance)
        self.unpadded_causal = self._unpadded is not None
        # Batches of different lengths share rows where that saves some: see packing.py.
        self._packed: Any = None
        if self.last_position and settings.packed_batches:
            scorer, why = packed_scorer(full, device, tolerance)
            if scorer is None:
                log.info("%s: batches are padded, not packed: %s", checkpoint.folder, why)
            else:
                self._packed, _ = self._serving_form(scorer, settings, checkpoint.folder,
                                                     Probes.packing(vocab_size), tolerance, _packed_tensors)
        self.packs_batches = self._packed is not None

    def _serving_form(self, scorer: nn.Module, settings: PyTorchSettings, folder: Any, probes: Probes, tolerance: float,
                      inputs: Inputs = _tensors) -> tuple[Any, bool]:
        """(the TorchScript trace of InputsKept(scorer), True), or (InputsKept(scorer), False) when
        tracing is off or fails: either returns (scores, inputs...)."""
        if settings.torchscript:
            traced, why = traced_scorer(scorer, self.device, probes, tolerance, inputs, self._structure)
            if traced is not None:
                return traced, True
            log.warning("%s: serving the eager model, tracing failed: %s", folder, why)
        return InputsKept(scorer), False

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
            unpadded = self._unpadded is not None and runs_unpadded(batch, self.sliding_window)
            scorer, arrays = (self._unpadded if unpadded else self._scorer), right_padded(batch)
        inputs = on_device(arrays, self.device)
        with torch.jit.optimized_execution(False):  # no fusion passes: the same kernels, the same digits as eager
            return scorer(*inputs)[0].cpu().tolist()

    def computed_tokens(self, lengths: Sequence[int]) -> int:
        """Tokens a batch of these lengths computes, padding included (packed when score_batch packs)."""
        if self._packed is not None and len(lengths) > 1:
            return computed_tokens(lengths)
        return len(lengths) * max(lengths)

    def score_shared_prefix(self, prefix: Sequence[int], suffixes: Sequence[Sequence[int]]) -> list[float]:
        """Scores of prefix + each suffix, the prefix computed once and its KV cache reused."""
        from .shared_prompt import shared_prefix_scores  # it imports this module

        self._use_threads()
        return shared_prefix_scores(self._model, prefix, suffixes, self.device, self.sliding_window,
                                    self.last_position)

    def close(self) -> None:
        del self._model, self._scorer, self._unpadded, self._packed
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
