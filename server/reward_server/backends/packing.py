"""Packed batches: short sequences laid back to back in rows as wide as the batch's longest one, each
sequence attending only to itself (a block-diagonal causal mask) at its own positions.

A padded batch computes rows x longest tokens; a packed one computes fewer rows of the same width, so
its layers run on fewer tokens and its attention on fewer (row, query, key) triples. Nothing else
changes: each sequence sees the same keys at the same rotary positions as alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain

import numpy as np


def packed_rows(lengths: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """Input indexes per row: first fit, longest first, into rows as wide as the longest input."""
    return _first_fit(tuple(lengths))


@lru_cache(maxsize=64)  # a batch's layout is asked for twice: to pack it and to count what it computed
def _first_fit(lengths: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    width = max(lengths)
    order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
    if (
        2 * lengths[order[-1]] > width
    ):  # no two inputs fit in one row (the batcher's similar lengths): skip the search
        return tuple((index,) for index in order)
    rows: list[list[int]] = []
    room: list[int] = []
    for index in order:
        length = lengths[index]
        for row, free in enumerate(room):
            if free >= length:
                rows[row].append(index)
                room[row] = free - length
                break
        else:
            rows.append([index])
            room.append(width - length)
    return tuple(tuple(row) for row in rows)


def computed_tokens(lengths: Sequence[int]) -> int:
    """Tokens a batch of these lengths computes, padding included, packed when that saves rows."""
    return len(packed_rows(lengths)) * max(lengths)


@dataclass(frozen=True)
class PackedBatch:
    """Arrays of a packed batch, all int64. input_ids, segments, positions: [rows, width]; segments
    number the sequences of a row from 1 (0: padding); positions restart at 0 for each sequence.
    rows, last: [inputs], the row and column of each input's last token, in input order."""

    input_ids: np.ndarray
    segments: np.ndarray
    positions: np.ndarray
    rows: np.ndarray
    last: np.ndarray

    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.input_ids, self.segments, self.positions, self.rows, self.last


def packed(batch: Sequence[Sequence[int]]) -> PackedBatch | None:
    """The batch packed, or None when packing saves no row (then padding computes the same)."""
    lengths = [len(ids) for ids in batch]
    layout = packed_rows(lengths)
    if len(layout) == len(batch):
        return None
    rows, starts, segments = [0] * len(batch), [0] * len(batch), [0] * len(batch)
    for row, members in enumerate(layout):
        start = 0
        for segment, index in enumerate(members, start=1):
            rows[index], starts[index], segments[index] = row, start, segment
            start += lengths[index]
    # Every token's place, computed for all tokens at once (a Python loop per input costs the batcher
    # thread GIL time that the event loop is waiting for).
    size, row_of, start_of = np.array(lengths, np.int64), np.array(rows, np.int64), np.array(starts, np.int64)
    total = int(size.sum())
    position = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(size) - size, size)
    width = int(size.max())
    place = np.repeat(row_of * width + start_of, size) + position
    shape = (len(layout), width)
    input_ids, segment_ids, positions = (
        np.zeros(shape, np.int64),
        np.zeros(shape, np.int64),
        np.zeros(shape, np.int64),
    )
    input_ids.reshape(-1)[place] = np.fromiter(chain.from_iterable(batch), np.int64, count=total)
    segment_ids.reshape(-1)[place] = np.repeat(np.array(segments, np.int64), size)
    positions.reshape(-1)[place] = position
    return PackedBatch(input_ids, segment_ids, positions, row_of, start_of + size - 1)
