"""The forward variants the PyTorch backend may serve, and the load-time checks that pick them.

Every variant is checked against the full padded forward on probe batches and kept only when its scores
match within the dtype's tolerance; each refusal is logged with its reason, and the chosen variants are
summed up as a ForwardPlan (reported in metadata, the load log line and a metric):

- PaddedScorer: the full forward of a right-padded batch (always available, the reference).
- LastPositionScorer: the last decoder layer only where the head reads (last_position.py); its
  `unmasked` form runs batches of one length without a mask.
- PackedScorer: inputs of different lengths share rows (packing.py).
- each of them as a TorchScript trace (`pytorch { torchscript: true }`) or eagerly.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from reward_server.backends import trace_cache
from reward_server.backends.plan import ForwardPlan
from reward_server.backends.pytorch.last_position import (
    LLAMA_SHAPED_LAYERS,
    LastPositionScorer,
    PackedScorer,
    supports_last_position,
)
from reward_server.backends.pytorch.masks import last_token_positions, padded_causal_mask
from reward_server.backends.pytorch.model import SDPA, RewardModel
from reward_server.backends.pytorch.tensors import Inputs, packed_tensors, padded_tensors
from reward_server.backends.settings import PyTorchSettings
from reward_server.runtime.synthetic_ids import synthetic_ids

log = logging.getLogger(__name__)


class PaddedScorer(nn.Module):
    """What serving runs: scores of a right-padded batch, the backbone given its 4D mask (so that the
    graph has no data-dependent branch and one trace serves every batch shape)."""

    def __init__(self, reward_model: RewardModel, sliding_window: int | None) -> None:
        super().__init__()
        self.reward_model = reward_model
        self.sliding_window = sliding_window
        # Models whose layers mix windowed and full attention (Gemma2; Qwen2 past max_window_layers) take
        # one mask per kind, keyed as transformers keys its own: one windowed mask for all would be wrong.
        layer_types = getattr(reward_model.model.config, "layer_types", None) or ()
        self.full_attention_too = bool(sliding_window) and "full_attention" in layer_types

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        as_taken = self.reward_model.attention_mask  # boolean for SDPA, additive for eager attention
        mask: Any = as_taken(padded_causal_mask(attention_mask, self.sliding_window))
        if self.full_attention_too:
            mask = {"sliding_attention": mask, "full_attention": as_taken(padded_causal_mask(attention_mask))}
        hidden = self.reward_model.model(
            input_ids=input_ids, attention_mask=mask, use_cache=False
        ).last_hidden_state
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


@dataclass(frozen=True)
class Probes:
    """Token-id batches a candidate scorer is checked on: `example` (what a trace is recorded with)
    and `batches` of other shapes."""

    example: list[list[int]]
    batches: list[list[list[int]]]

    @classmethod
    def make(cls, vocab_size: int, one_length_up_to: int | None = None) -> Probes:
        """Rows of different lengths (padded batches); or, given a length, rows of one length up to it
        (for the unmasked scorer)."""

        def ids(length: int, seed: int) -> list[int]:
            return synthetic_ids(vocab_size, length, seed)

        if one_length_up_to is None:
            return cls([ids(5, 5), ids(9, 10)], [[ids(3, 1)], [ids(17, 2), ids(4, 3), ids(11, 4)]])
        longest = max(2, one_length_up_to)
        return cls(
            [ids(min(5, longest), 5), ids(min(5, longest), 10)],
            [[ids(3, 1)], [ids(min(17, longest), 2 + row) for row in range(3)]],
        )

    @classmethod
    def packing(cls, vocab_size: int) -> Probes:
        """Batches that pack into fewer rows (for the packed scorer), the longest past a window of 8."""

        def ids(length: int, seed: int) -> list[int]:
            return synthetic_ids(vocab_size, length, seed)

        return cls(
            [ids(9, 5), ids(5, 10), ids(3, 11)],
            [[ids(17, 2), ids(4, 3), ids(11, 4), ids(3, 1)], [ids(6, 6), ids(1, 7), ids(2, 8)]],
        )


def _probe_difference(
    scorer: Any,
    reference: nn.Module,
    device: str,
    probes: Probes,
    inputs: Inputs = padded_tensors,
    reference_inputs: Inputs = padded_tensors,
) -> float:
    """Largest |score difference| between `scorer` (its first output when it returns several) and
    `reference` over the probe batches, each given its own form of the batch."""
    worst = 0.0
    with torch.inference_mode(), torch.jit.optimized_execution(False):
        for batch in probes.batches:
            got, want = scorer(*inputs(batch, device)), reference(*reference_inputs(batch, device))
            got = got[0] if isinstance(got, tuple) else got
            worst = max(worst, (got - want).abs().max().item())
    return worst


def last_position_scorer(
    full: PaddedScorer, device: str, probes: Probes, tolerance: float, unmasked: bool = False
) -> tuple[nn.Module, str]:
    """(LastPositionScorer, "") when the backbone's layers allow it and its scores match `full` within
    `tolerance` on the probe batches (of one length for the unmasked scorer); else (full, why not)."""
    if not supports_last_position(full.reward_model.model):
        return full, "decoder layers other than " + ", ".join(LLAMA_SHAPED_LAYERS)
    if full.reward_model.attention != SDPA:
        # last_layer_at runs the last layer's attention as SDPA (no logit cap) and, unmasked, relies on
        # SDPA's causal attention without a mask: neither is the eager forward
        return full, "eager attention (the config caps attention logits), which the last layer's SDPA drops"
    candidate = LastPositionScorer(full.reward_model, full.sliding_window, unmasked)
    return _checked(candidate, full, device, probes, tolerance)


def packed_scorer(full: PaddedScorer, device: str, tolerance: float) -> tuple[nn.Module | None, str]:
    """(PackedScorer, "") when its scores match `full` within `tolerance` on batches that pack; else
    (None, why not). Only for the layers LastPositionScorer runs."""
    candidate = PackedScorer(full.reward_model, full.sliding_window)
    probes = Probes.packing(full.reward_model.model.config.vocab_size)
    checked, why = _checked(candidate, full, device, probes, tolerance, packed_tensors)
    return (None, why) if why else (checked, "")


def _checked(
    candidate: nn.Module,
    full: PaddedScorer,
    device: str,
    probes: Probes,
    tolerance: float,
    inputs: Inputs = padded_tensors,
) -> tuple[nn.Module, str]:
    difference = _probe_difference(candidate, full, device, probes, inputs)
    if difference > tolerance:
        return full, f"its scores differ from the full forward by {difference:.3g}"
    return candidate, ""


def traced_scorer(
    scorer: nn.Module,
    device: str,
    probes: Probes,
    tolerance: float,
    inputs: Inputs = padded_tensors,
    structure: str = "",
) -> tuple[torch.jit.ScriptModule | None, str]:
    """(InputsKept(scorer) traced with TorchScript, "") or (None, why not).

    Why trace: an eager forward releases and re-takes the GIL at every operator, and while the event loop
    holds it each re-take waits; under serving load that stretched a small model's batch several times
    (and far more against a busy Python thread). The traced graph runs in C++ with the GIL released once
    (InputsKept says why that needs the inputs returned). The trace is checked against the eager scorer
    on other shapes; any difference keeps the eager scorer. A structure already traced reuses its graph
    (trace_cache: torch never frees a trace); `structure` names what the graph depends on beyond the
    modules (the model's config)."""
    difference = float("nan")
    for _ in range(2):  # a reused graph that does not match is traced afresh, once
        try:
            kept = InputsKept(scorer)
            example = inputs(probes.example, device)
            key = trace_cache.structure_key(kept, example, structure)
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter(
                    "ignore", torch.jit.TracerWarning
                )  # is_causal: False whenever a mask is given
                warnings.simplefilter(
                    "ignore", DeprecationWarning
                )  # TorchScript is in maintenance; eager is the fallback
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


@dataclass(frozen=True)
class ServingForm:
    """A scorer as served: `run(*inputs)` returns (scores, inputs...); `traced`: a TorchScript trace."""

    run: Any
    traced: bool


def serving_form(
    scorer: nn.Module,
    settings: PyTorchSettings,
    device: str,
    folder: Any,
    probes: Probes,
    tolerance: float,
    inputs: Inputs = padded_tensors,
    structure: str = "",
) -> ServingForm:
    """The TorchScript trace of InputsKept(scorer), or InputsKept(scorer) when tracing is off or fails."""
    if settings.torchscript:
        traced, why = traced_scorer(scorer, device, probes, tolerance, inputs, structure)
        if traced is not None:
            return ServingForm(traced, True)
        log.warning("%s: serving the eager model, tracing failed: %s", folder, why)
    return ServingForm(InputsKept(scorer), False)


@dataclass(frozen=True)
class Scorers:
    """What a loaded version serves with: `padded` for every batch the others do not take, `unmasked`
    for batches of one length, `packed` for batches that pack (None where refused or switched off)."""

    padded: ServingForm
    unmasked: ServingForm | None
    packed: ServingForm | None
    last_position: bool  # the padded scorer runs the last layer only where the head reads
    attention: str = SDPA  # the backbone's attention implementation (model.attention_implementation)

    @property
    def plan(self) -> ForwardPlan:
        forms = [form for form in (self.padded, self.unmasked, self.packed) if form is not None]
        traced = sum(form.traced for form in forms)
        execution = "traced" if traced == len(forms) else "eager" if not traced else "partly-traced"
        return ForwardPlan(
            "packed" if self.packed else "padded",
            execution,
            self.last_position,
            self.unmasked is not None,
            self.attention,
        )


def choose_scorers(
    model: RewardModel,
    sliding_window: int | None,
    settings: PyTorchSettings,
    device: str,
    tolerance: float,
    folder: Any,
    structure: str = "",
) -> Scorers:
    """Build, check and (where asked) trace every forward variant the settings allow; log each refusal.
    `structure` (the model's config) keys the reuse of traces across loads (trace_cache)."""
    vocab_size = model.model.config.vocab_size
    if model.attention != SDPA:
        log.info(
            "%s: %s attention: the config caps attention logits, which SDPA drops", folder, model.attention
        )
    full = PaddedScorer(model, sliding_window)
    eager: nn.Module = full
    why = "pytorch { last_position_only: false }"
    if settings.last_position_only:
        eager, why = last_position_scorer(full, device, Probes.make(vocab_size), tolerance)
    last_position = eager is not full
    if why:
        log.info("%s: the last layer runs at every position: %s", folder, why)
    padded = serving_form(
        eager, settings, device, folder, Probes.make(vocab_size), tolerance, structure=structure
    )
    if padded.traced:
        log.info(
            "%s on %s: serving a TorchScript trace of the forward (checked against eager)", folder, device
        )
    # Batches of one length (every batch of one row) skip the mask: see LastPositionScorer.
    unmasked_form = None
    if last_position:
        probes = Probes.make(vocab_size, one_length_up_to=sliding_window or 17)
        unmasked, why = last_position_scorer(full, device, probes, tolerance, unmasked=True)
        if unmasked is full:
            log.info("%s: batches of one length run with a mask too: %s", folder, why)
        else:
            unmasked_form = serving_form(
                unmasked, settings, device, folder, probes, tolerance, structure=structure
            )
    # Batches of different lengths share rows where that saves some: see packing.py.
    packed_form = None
    if last_position and settings.packed_batches:
        scorer, why = packed_scorer(full, device, tolerance)
        if scorer is None:
            log.info("%s: batches are padded, not packed: %s", folder, why)
        else:
            packed_form = serving_form(
                scorer,
                settings,
                device,
                folder,
                Probes.packing(vocab_size),
                tolerance,
                packed_tensors,
                structure,
            )
    return Scorers(padded, unmasked_form, packed_form, last_position, model.attention)
