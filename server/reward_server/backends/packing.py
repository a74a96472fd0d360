"""Packed batches: short sequences laid back to back in rows as wide as the batch's longest one, each
sequence attending only to itself (a block-diagonal causal mask) at its own positions.

A padded batch computes rows x longest tokens; a packed one computes fewer rows of the same width, so
its layers run on fewer tokens and its attention on fewer (row, query, key) triples. Nothing else
changes: each sequence sees the same keys at the same rotary positions as alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def packed_rows(lengths: Sequence[int]) -> list[list[int]]:
    """Input indexes per row: first fit, longest first, into rows as wide as the longest input."""
    width = max(lengths)
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, free in enumerate(room) if free >= lengths[index]), None)
        if row is None:
            rows.append([])
            room.append(width)
            row = len(rows) - 1
        rows[row].append(index)
        room[row] -= lengths[index]
    return rows


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
    width = max(lengths)
    shape = (len(layout), width)
    input_ids, segments, positions = np.zeros(shape, np.int64), np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    rows, last = np.zeros(len(batch), np.int64), np.zeros(len(batch), np.int64)
    for row, members in enumerate(layout):
        start = 0
        for segment, index in enumerate(members, start=1):
            end = start + lengths[index]
            input_ids[row, start:end] = batch[index]
            segments[row, start:end] = segment
            positions[row, start:end] = np.arange(lengths[index])
            rows[index], last[index] = row, end - 1
            start = end
    return PackedBatch(input_ids, segments, positions, rows, last)
