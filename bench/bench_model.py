"""The random model the benchmarks serve: a 4-layer, 256-wide Llama in a one-model repository."""

from __future__ import annotations

from pathlib import Path

from reward_server.repository.config import RewardDefaults, config_pbtxt
from reward_server.tiny_models import TinyShape, write_tiny_checkpoint

SHAPE = TinyShape(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=4, max_position_embeddings=1024)


def write_bench_model(repo: Path, name: str = "rm") -> Path:
    """`repo/name/1` with fp32 scoring, batches of up to 8 and a 2 ms queue delay; returns the version folder."""
    (repo / name).mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(config_pbtxt(
        name, RewardDefaults(max_sequence_length=1024, dtype="float32"), max_batch_size=8, max_queue_delay_us=2000))
    return write_tiny_checkpoint(repo / name / "1", shape=SHAPE, seed=0)
