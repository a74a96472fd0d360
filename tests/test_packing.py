"""Packed batches: inputs of different lengths share rows as wide as the longest, each seeing only itself
at its own positions. The layout holds every input once inside the width, in fewer rows than padding;
packed scores equal the plain forward's within float32 rounding (with and without a sliding window);
the batcher counts the tokens packing computes; `packed_batches: false` pads."""

from __future__ import annotations

import random

import numpy as np
import pytest

from reward_server.backends.packing import computed_tokens, packed, packed_rows
from reward_server.backends.pytorch import PyTorchBackend
from reward_server.backends.settings import PyTorchSettings
from reward_server.checkpoint import read_checkpoint
from reward_server.runtime.batching import DynamicBatcher
from test_serving_forward import plain_forward_scores, tiny_architecture


def test_rows_hold_every_input_once_inside_the_width_longest_first():
    lengths = [17, 4, 11, 3, 6, 1, 9]
    rows = packed_rows(lengths)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 17 for row in rows)
    assert rows == ((0,), (2, 4), (6, 1, 3, 5))  # first fit, longest first: 17 | 11 6 | 9 4 3 1
    assert computed_tokens(lengths) == 3 * 17


def test_packing_is_skipped_when_it_saves_no_row():
    assert packed([[1] * 5, [2] * 5, [3] * 5]) is None  # one length: every input fills its row
    assert packed([[1] * 9, [2] * 3]) is None  # two inputs never share a row as wide as the longer
    assert packed([[1] * 9, [2] * 6, [3] * 4]) is None  # 9 | 6 | 4: no two fit together


def test_packed_arrays_place_each_input_at_its_own_positions():
    batch = [[11] * 9, [12] * 5, [13] * 3]
    layout = packed(batch)
    assert layout is not None and layout.input_ids.shape == (2, 9)
    assert layout.input_ids.tolist() == [[11] * 9, [12] * 5 + [13] * 3 + [0]]
    assert layout.segments.tolist() == [[1] * 9, [1] * 5 + [2] * 3 + [0]]
    assert layout.positions.tolist() == [list(range(9)), [0, 1, 2, 3, 4, 0, 1, 2, 0]]
    assert (layout.rows.tolist(), layout.last.tolist()) == ([0, 1, 1], [8, 4, 7])  # in input order
    assert all(a.dtype == np.int64 for a in layout.arrays())


def packable_batches(seed: int, count: int) -> list[list[list[int]]]:
    """Batches of 3-16 inputs of 1-70 tokens that pack into fewer rows."""
    rng = random.Random(seed)
    batches = []
    while len(batches) < count:
        batch = [
            [rng.randrange(5, 500) for _ in range(rng.randrange(1, 70))] for _ in range(rng.randrange(3, 17))
        ]
        if packed(batch) is not None:
            batches.append(batch)
    return batches


@pytest.mark.parametrize("architecture", ["llama", "mistral"])
def test_packed_scores_equal_the_plain_forward_within_float32_rounding(tmp_path, architecture):
    """mistral runs with a window of 8 tokens, shorter than most inputs: the window is part of the mask."""
    backend = PyTorchBackend(tiny_architecture(tmp_path, architecture), "cpu", "float32")
    assert backend.traced and backend.packs_batches
    for batch in packable_batches(seed=2, count=10):
        lengths = [len(ids) for ids in batch]
        assert backend.computed_tokens(lengths) < len(batch) * max(lengths)
        want = plain_forward_scores(backend, batch)
        assert backend.score_batch(batch) == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_packed_batches_false_pads_every_batch(tiny_checkpoint):
    config = PyTorchSettings(torchscript=True, intra_op_threads=0, packed_batches=False)
    backend = PyTorchBackend(read_checkpoint(tiny_checkpoint), "cpu", "float32", config)
    batch = packable_batches(seed=3, count=1)[0]
    lengths = [len(ids) for ids in batch]
    assert not backend.packs_batches and backend.computed_tokens(lengths) == len(batch) * max(lengths)
    assert backend.score_batch(batch) == pytest.approx(
        plain_forward_scores(backend, batch), rel=1e-5, abs=1e-5
    )


def test_batcher_counts_the_tokens_a_packed_batch_computes(tiny_checkpoint):
    backend = PyTorchBackend(read_checkpoint(tiny_checkpoint), "cpu", "float32")
    batcher = DynamicBatcher("t", backend, max_batch_size=4, max_queue_delay_s=0.3)
    futures = batcher.submit([[5] * 30, [6] * 10, [7] * 12], None)  # one batch: 30 | 12 10
    [f.result(30) for f in futures]
    batcher.close()
    assert batcher.stats.batches == 1
    assert (batcher.stats.real_tokens, batcher.stats.computed_tokens) == (52, 60)  # padded: 90
