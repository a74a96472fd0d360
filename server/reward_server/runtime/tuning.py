"""Warmup-time tuning of an instance's token budget (`max_batch_tokens` left unset in config.pbtxt).

The best batch shape depends on the device: on a small CPU one ~500-token sequence per forward is as
fast per token as 2k-token batches, while a GPU wants large batches (docs/pytorch-backend.md). So
the budget is measured, not assumed: for each candidate budget (ascending), batches of synthetic token
ids at a few probe lengths (rows = budget // length, at least 1, at most max_batch_size; padded by one
token when there are several rows, as served batches are) are timed on
the instance's own backend, and the budget with the most tokens/s over the probe lengths wins (equal
tokens at each length; a tie keeps the smaller budget, for latency). The search stops once a budget
falls well below the best, so slow large shapes are tried at most once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from reward_server.runtime.synthetic_ids import synthetic_batch

BUDGETS = (512, 1024, 2048, 4096, 8192, 16384, 32768)
# Capped at the model's max length. Long rows matter: several padded rows run masked attention over
# every key, while one row runs causal, and that gap grows with the length: without 1024 the bench
# model was tuned to a budget its batches then ran slower at (docs/pytorch-backend.md).
PROBE_LENGTHS = (64, 512, 1024)
# A budget this much slower than the best so far ends the search (throughput falls with size beyond the peak).
STOP_BELOW = 0.8
# Within this fraction of the best, the smaller budget is kept (less latency, less padding).
TIE = 0.03
SLOW_CALL_S = 0.5

ScoreBatch = Callable[[Sequence[Sequence[int]]], list[float]]


@dataclass(frozen=True)
class TunedBudget:
    budget: int
    tokens_per_s: dict[int, float] = field(default_factory=dict)  # budget -> measured tokens/s
    seconds: float = 0.0


def _probe(length: int, rows: int, vocab_size: int) -> list[list[int]]:
    """`rows` rows of `length` ids, the last one a token shorter when there are several: served batches of
    several rows are padded and run the masked forward, while a batch of one row (or of one length)
    runs the cheaper unmasked one, so a one-length probe would overrate every multi-row budget."""

    def row_length(row: int) -> int:
        return length - 1 if rows > 1 and row == rows - 1 and length > 1 else length

    return synthetic_batch(vocab_size, [row_length(row) for row in range(rows)])


def _tokens_per_s(score_batch: ScoreBatch, batch: list[list[int]], repeats: int) -> float:
    """Best of `repeats` timed calls after one untimed call (allocator, kernel choice); a shape whose
    untimed call already took long is timed once (large shapes on a CPU: seconds each)."""
    start = time.perf_counter()
    score_batch(batch)
    best = float("inf") if time.perf_counter() - start < SLOW_CALL_S else time.perf_counter() - start
    for _ in range(repeats if best == float("inf") else 1):
        start = time.perf_counter()
        score_batch(batch)
        best = min(best, time.perf_counter() - start)
    return sum(map(len, batch)) / max(best, 1e-9)


def tune_token_budget(
    score_batch: ScoreBatch,
    *,
    max_length: int,
    max_batch_size: int,
    vocab_size: int,
    budgets: Sequence[int] = BUDGETS,
    probe_lengths: Sequence[int] = PROBE_LENGTHS,
    repeats: int = 2,
) -> TunedBudget:
    """The candidate budget with the most tokens/s on this backend (see the module docstring)."""
    started = time.perf_counter()
    score_batch(_probe(1, 1, vocab_size))  # lazy initialisation is not part of any shape's time
    lengths = sorted({min(length, max_length) for length in probe_lengths})
    shapes: dict[tuple[int, int], float] = {}  # (length, rows) -> tokens/s, each shape measured once
    measured: dict[int, float] = {}
    best = 0
    previous_rows: dict[int, int] = {}
    for budget in sorted(budgets):
        rows_at = {length: max(1, min(max_batch_size, budget // length)) for length in lengths}
        if rows_at == previous_rows:
            continue  # the same shapes as the previous budget (max_batch_size reached)
        previous_rows = rows_at
        for length in lengths:
            if (length, rows_at[length]) not in shapes:
                shapes[length, rows_at[length]] = _tokens_per_s(
                    score_batch, _probe(length, rows_at[length], vocab_size), repeats
                )
        # Equal tokens at each probe length: the harmonic mean of the per-length rates.
        measured[budget] = len(lengths) / sum(1 / shapes[length, rows_at[length]] for length in lengths)
        if not best or measured[budget] > measured[best] * (1 + TIE):
            best = budget
        elif measured[budget] < STOP_BELOW * measured[best]:
            break
    return TunedBudget(best, measured, time.perf_counter() - started)
