"""Warmup-time tuning of max_batch_tokens: the fastest measured budget wins, the search stops past the
peak, and a model whose config.pbtxt leaves the budget unset gets a tuned one at load (0 / N stay as set)."""

from __future__ import annotations

import time

from helpers import add_model, config_text, serve_repo
from reward_server.repository.config import parse_model_config
from reward_server.runtime.tuning import BUDGETS, tune_token_budget


def cliff_device(batch):
    """A device with 2 ms per call and a cache cliff: 2 us/token up to 2048 tokens a batch,
    8 us/token above."""
    tokens = sum(map(len, batch))
    time.sleep(2e-3 + tokens * (2e-6 if tokens <= 2048 else 8e-6))
    return [0.0] * len(batch)


def test_tune_token_budget_picks_the_fastest_budget_when_a_device_has_a_cliff():
    tuned = tune_token_budget(cliff_device, max_length=4096, max_batch_size=64, vocab_size=100)
    assert tuned.budget == 2048
    assert max(tuned.tokens_per_s, key=tuned.tokens_per_s.get) == 2048
    assert set(tuned.tokens_per_s) == {512, 1024, 2048, 4096}  # 4096 fell far below the peak: search ended


def test_tune_token_budget_stops_growing_when_max_batch_size_is_reached():
    tuned = tune_token_budget(cliff_device, max_length=512, max_batch_size=2, vocab_size=100)
    # 512-token probes: 1 row at 512, 2 rows from 1024 on; 64-token probes: 2 rows always -> 512 and 1024 only
    assert set(tuned.tokens_per_s) == {512, 1024}
    assert tuned.budget in (512, 1024)


def attention_device(batch):
    """A CPU-like device: 1 ms a call, 1 us a token, and padded batches of several rows pay attention over
    every key (rows x length^2 x 4 ns), which a single row (causal) does not."""
    rows, length = len(batch), max(map(len, batch))
    time.sleep(1e-3 + rows * length * 1e-6 + (rows > 1) * rows * length**2 * 4e-9)
    return [0.0] * len(batch)


def test_tuning_keeps_long_inputs_alone_when_padded_attention_costs_more_than_batching_saves():
    tuned = tune_token_budget(attention_device, max_length=4096, max_batch_size=64, vocab_size=100)
    assert tuned.budget <= 1024  # every 1024-token input runs alone
    short_probes_only = tune_token_budget(
        attention_device, max_length=4096, max_batch_size=64, vocab_size=100, probe_lengths=(64, 512)
    )
    assert short_probes_only.budget >= 2048  # why the 1024-token probe: without it, long inputs get batched


def test_tuning_probes_of_several_rows_are_padded_like_served_batches():
    """A batch of one length runs the unmasked forward, which is cheaper than the padded batches the
    server forms from real traffic: probes of several rows must be padded to time what serving runs."""
    seen = []  # (rows, the distinct row lengths) per call

    def recording_device(batch):
        seen.append((len(batch), sorted({len(row) for row in batch})))
        return [0.0] * len(batch)

    tune_token_budget(recording_device, max_length=512, max_batch_size=64, vocab_size=100)
    assert (
        1,
        [512],
    ) in seen  # one row of 512 (budget 512): one length, unmasked, as a served batch of one row is
    several = [lengths for rows, lengths in seen if rows > 1]
    assert several and all(len(lengths) == 2 and lengths[1] - lengths[0] == 1 for lengths in several)


def test_max_batch_tokens_is_none_when_config_leaves_it_unset(tmp_path):
    path = tmp_path / "config.pbtxt"
    for budget, want in ((None, None), (0, 0), (3000, 3000)):
        path.write_text(config_text("m", max_batch_tokens=budget))
        assert parse_model_config(path, "m").max_batch_tokens == want


def test_instance_budget_is_tuned_at_load_when_config_leaves_it_unset(tiny_checkpoint, tmp_path, caplog):
    add_model(tmp_path, "auto", tiny_checkpoint, config_text("auto", max_batch_tokens=None))
    add_model(tmp_path, "none", tiny_checkpoint, config_text("none", max_batch_tokens=0))
    add_model(tmp_path, "set", tiny_checkpoint, config_text("set", max_batch_tokens=777))
    with caplog.at_level("INFO", logger="reward_server.repository.loader"), serve_repo(tmp_path) as server:
        budgets = {
            name: server.running.repository.resolve(name, "").instances[0].max_batch_tokens
            for name in ("auto", "none", "set")
        }
    assert budgets["auto"] in BUDGETS and budgets == {"auto": budgets["auto"], "none": 0, "set": 777}
    assert f"max_batch_tokens tuned to {budgets['auto']}" in caplog.text
