"""The random model the benchmarks serve: a 4-layer, 256-wide Llama in a one-model repository."""

from __future__ import annotations

import random
from pathlib import Path

from reward_server.offline.tiny_models import TinyShape, write_tiny_checkpoint
from reward_server.repository.config import RewardDefaults, config_pbtxt

SHAPE = TinyShape(
    hidden_size=256,
    intermediate_size=688,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=4,
    max_position_embeddings=1024,
)


def write_bench_model(repo: Path, name: str = "rm") -> Path:
    """`repo/name/1` with fp32 scoring, batches of up to 8 and a 2 ms queue delay;
    returns the version folder."""
    (repo / name).mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(
        config_pbtxt(
            name,
            RewardDefaults(max_sequence_length=1024, dtype="float32"),
            max_batch_size=8,
            max_queue_delay_us=2000,
        )
    )
    return write_tiny_checkpoint(repo / name / "1", shape=SHAPE, seed=0)


def mixed_lengths_ids(n: int, seed: int = 0) -> list[list[int]]:
    """`n` sequences of random ids, 16-1024 tokens each (`mixed`'s lengths)."""
    rng = random.Random(seed)
    return [[rng.randrange(5, SHAPE.vocab_size) for _ in range(rng.randint(16, 1024))] for _ in range(n)]


def bench_backend(folder: Path):
    """The bench model, written under `folder`, loaded as a float32 CPU PyTorchBackend."""
    from reward_server.backends.pytorch import PyTorchBackend
    from reward_server.checkpoint import read_checkpoint

    return PyTorchBackend(
        read_checkpoint(write_tiny_checkpoint(folder / "rm", shape=SHAPE, seed=0)), "cpu", "float32"
    )
