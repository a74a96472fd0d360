"""The floor: the bare model forward over the workload's token ids, pre-tokenized and length-sorted,
at the best batch shape found. Shapes: one sequence per forward, and batches filled in length order
up to a token budget (padded tokens = rows x longest row)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

ScoreBatch = Callable[[Sequence[Sequence[int]]], list[float]]

TOKEN_BUDGETS = (1024, 2048, 4096, 8192)
GPU_EXTRA_BUDGETS = (16384, 32768)  # tried as well when the model is on a GPU, where larger batches pay


def budget_batches(sequences: Sequence[Sequence[int]], budget: int) -> list[list[Sequence[int]]]:
    """Length-sorted batches, each at most `budget` padded tokens (a longer sequence goes alone);
    budget 0 = batch 1."""
    batches: list[list[Sequence[int]]] = []
    current: list[Sequence[int]] = []
    for ids in sorted(sequences, key=len):
        if current and (not budget or (len(current) + 1) * len(ids) > budget):
            batches.append(current)
            current = []
        current.append(ids)
    if current:
        batches.append(current)
    return batches


def time_shape(score_batch: ScoreBatch, batches: list[list[Sequence[int]]]) -> float:
    """Seconds to run every batch once, after one warmup forward of the largest batch."""
    score_batch(max(batches, key=lambda b: len(b) * len(b[-1])))
    start = time.perf_counter()
    for batch in batches:
        score_batch(batch)
    return time.perf_counter() - start


def shape_budget(shape: str) -> int:
    """ "batch_1" -> 0, "tokens_2048" -> 2048: the budget that `budget_batches` takes for a shape name."""
    return 0 if shape == "batch_1" else int(shape.removeprefix("tokens_"))


def shape_rate(score_batch: ScoreBatch, sequences: Sequence[Sequence[int]], shape: str) -> float:
    """tokens/s of one shape, measured once more (after the sweep chose it)."""
    return sum(len(ids) for ids in sequences) / time_shape(
        score_batch, budget_batches(sequences, shape_budget(shape))
    )


def measure_floor(
    score_batch: ScoreBatch, sequences: Sequence[Sequence[int]], budgets: Sequence[int] = TOKEN_BUDGETS
) -> dict:
    """tokens/s for batch 1 and each token budget; the best of them is the floor."""
    tokens = sum(len(ids) for ids in sequences)
    shapes = {}
    for name in ("batch_1", *(f"tokens_{budget}" for budget in budgets)):
        batches = budget_batches(sequences, shape_budget(name))
        elapsed = time_shape(score_batch, batches)
        shapes[name] = {
            "tokens_per_s": tokens / elapsed,
            "inputs_per_s": len(sequences) / elapsed,
            "batches": len(batches),
            "padding_efficiency": tokens / sum(len(b) * len(b[-1]) for b in batches),
        }
    best = max(shapes, key=lambda name: shapes[name]["tokens_per_s"])
    return {
        "tokens": tokens,
        "inputs": len(sequences),
        "shapes": shapes,
        "best_shape": best,
        "tokens_per_s": shapes[best]["tokens_per_s"],
        "inputs_per_s": shapes[best]["inputs_per_s"],
    }
