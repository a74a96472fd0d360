"""Which forward serves a model version: reported per version by GetModelMetadata (and the client's
ModelInfo), in the load log line and as the reward_model_forward_info gauge, for each backend."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from helpers import add_model, config_text, serve_repo
from reward_client import RewardClient
from reward_server.backends import Backend, ForwardPlan
from reward_server.offline.onnx_export import export_version

DEFAULT = "packed+traced+last-position+unmasked"
CONFIGS = {  # model name -> (pytorch block, the forward it must report)
    "rm": ("", DEFAULT),
    "plain": ("pytorch { torchscript: false packed_batches: false }", "padded+eager+last-position+unmasked"),
    "full": ("pytorch { torchscript: false last_position_only: false }", "padded+eager"),
}


@pytest.fixture(scope="module")
def repo(tiny_checkpoint, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("forward_repo")
    for name, (block, _) in CONFIGS.items():
        add_model(repo, name, tiny_checkpoint, config_text(name, extra=block))
    export_version(repo, "rm")  # rm-onnx, served by onnxruntime
    return repo


@pytest.fixture(scope="module")
def server(repo):
    with serve_repo(repo) as running:
        yield running


def forward_of(server, model: str) -> str:
    with RewardClient(server.target, model=model) as client:
        (version,) = client.model_metadata().versions
    assert version.state == "READY"
    return version.forward


@pytest.mark.parametrize("model", sorted(CONFIGS))
def test_metadata_reports_the_forward_that_serves_when_pytorch_settings_vary(server, model):
    assert forward_of(server, model) == CONFIGS[model][1]


def test_metadata_reports_onnxruntime_forward_when_backend_is_onnxruntime(server):
    assert forward_of(server, "rm-onnx") == "padded+onnxruntime"


def test_forward_info_gauge_is_one_for_the_serving_forward_when_loaded(server):
    registry = server.running.metrics.registry
    for model, (_, forward) in [*CONFIGS.items(), ("rm-onnx", ("", "padded+onnxruntime"))]:
        labels = {"model": model, "version": "1", "forward": forward}
        assert registry.get_sample_value("reward_model_forward_info", labels) == 1.0
    assert (
        registry.get_sample_value(
            "reward_model_forward_info", {"model": "rm", "version": "1", "forward": "padded+eager"}
        )
        is None
    )


def test_load_log_line_names_the_forward_when_a_version_loads(tiny_checkpoint, tmp_path, caplog):
    add_model(tmp_path, "plain", tiny_checkpoint, config_text("plain", extra=CONFIGS["plain"][0]))
    with caplog.at_level(logging.INFO, logger="reward_server"), serve_repo(tmp_path):
        pass
    loaded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded model=plain")]
    assert len(loaded) == 1 and f"forward={CONFIGS['plain'][1]} " in loaded[0]


def test_forward_plan_short_form_names_each_choice_when_printed():
    assert str(ForwardPlan("packed", "traced", last_position_only=True, unmasked=True)) == DEFAULT
    assert str(ForwardPlan("padded", "eager")) == "padded+eager"
    assert str(ForwardPlan("padded", "traced", attention="eager")) == "padded+traced+eager-attention"


class _Doubling(Backend):
    device, dtype, head_bias = "cpu", "float32", False

    def score_batch(self, batch: Sequence[Sequence[int]]) -> list[float]:
        return [2.0 * len(row) for row in batch]

    def close(self) -> None:
        pass


def test_backend_default_plan_names_the_class_when_a_backend_describes_none():
    assert str(_Doubling().forward_plan) == "padded+_Doubling"


def test_synthetic_batch_rows_differ_and_stay_in_the_vocabulary_when_the_vocabulary_is_small():
    from reward_server.runtime.synthetic_ids import synthetic_batch

    batch = synthetic_batch(5, [4, 4, 3])
    assert [len(row) for row in batch] == [4, 4, 3]
    assert all(0 <= token < 5 for row in batch for token in row) and batch[0] != batch[1]
