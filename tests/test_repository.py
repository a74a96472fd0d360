"""Model repository: config.pbtxt validation, version policies, layout rules, strict start (every model
has a ready version; a failed version the policy can do without does not stop it)."""

from __future__ import annotations

import os

import pytest

import reward_client as rc
from helpers import CHAT_1, add_model, config_text, serve_repo
from reference import close
from reward_client import RewardClient
from reward_server.errors import ConfigError
from reward_server.repository.config import parse_model_config
from reward_server.server import StartupError


def write_config(tmp_path, text: str, name: str = "m"):
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    path = folder / "config.pbtxt"
    path.write_text(text, encoding="utf-8")
    return path


def test_config_defaults_are_triton_like(tmp_path):
    config = parse_model_config(write_config(tmp_path, "max_batch_size: 4"), "m")
    assert config.backend == "pytorch" and config.version_policy.kind == "latest"
    assert config.version_policy.num_versions == 1 and config.truncation and config.truncation_side == "left"
    assert config.dtype == "auto" and config.prompt_format == "chat_template" and config.max_queue_size == 0
    assert [(g.kind, g.count) for g in config.instance_groups] == [("auto", 1)]
    assert config.torchscript and config.torch_intra_op_threads == 0 and config.last_position_only
    assert config.packed_batches


def test_config_parses_every_triton_field(tmp_path):
    text = """
        name: "m" backend: "pytorch" max_batch_size: 16 default_model_filename: "model.safetensors"
        version_policy { specific { versions: [1, 3] } }
        dynamic_batching { preferred_batch_size: [4, 8] max_queue_delay_microseconds: 500
                           default_queue_policy { max_queue_size: 64 } }
        instance_group [ { kind: KIND_CPU count: 2 } ]
        reward { max_sequence_length: 128 truncation: false truncation_side: RIGHT dtype: "bfloat16" }
        pytorch { torchscript: false intra_op_threads: 1 last_position_only: false packed_batches: false }
    """
    config = parse_model_config(write_config(tmp_path, text), "m")
    assert config.version_policy.versions == (1, 3)
    assert config.preferred_batch_sizes == (4, 8) and config.max_queue_delay_s == pytest.approx(0.0005)
    assert config.max_queue_size == 64 and config.instance_groups[0].count == 2
    assert (config.max_sequence_length, config.truncation, config.truncation_side, config.dtype) == (
        128,
        False,
        "right",
        "bfloat16",
    )
    assert (config.torchscript, config.torch_intra_op_threads, config.last_position_only) == (False, 1, False)
    assert not config.packed_batches


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ("max_batch_size: 0", "max_batch_size", "0"),
        ('name: "other" max_batch_size: 1', "name", "'other'"),
        ('backend: "tensorrt" max_batch_size: 1', "backend", "'tensorrt'"),
        (
            "max_batch_size: 4 dynamic_batching { preferred_batch_size: [8] }",
            "dynamic_batching.preferred_batch_size",
            "8",
        ),
        ('max_batch_size: 1 reward { dtype: "float8" }', "reward.dtype", "'float8'"),
        ('max_batch_size: 1 reward { prompt_format: "alpaca" }', "reward.prompt_format", "'alpaca'"),
        (
            "max_batch_size: 1 version_policy { latest { num_versions: 0 } }",
            "version_policy.latest.num_versions",
            "0",
        ),
        (
            'max_batch_size: 1 default_model_filename: "../x.safetensors"',
            "default_model_filename",
            "'../x.safetensors'",
        ),
        (
            "max_batch_size: 1 instance_group [ { kind: KIND_CPU gpus: [0] } ]",
            "instance_group[0].gpus",
            "[0]",
        ),
        ("max_batch_size: 1 pytorch { intra_op_threads: -1 }", "pytorch.intra_op_threads", "-1"),
    ],
)
def test_config_error_names_file_field_and_value(tmp_path, text, field, value):
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        parse_model_config(path, "m")
    message = str(info.value)
    assert str(path) in message and f"'{field}'" in message and value in message


def test_config_syntax_error_names_file_and_line(tmp_path):
    path = write_config(tmp_path, "max_batch_size: 1\nno_such_field: 3\n")
    with pytest.raises(ConfigError, match=rf"{path}.*2:1.*no_such_field"):
        parse_model_config(path, "m")


def test_version_policy_latest_serves_newest_and_default_request_gets_it(
    tiny_checkpoint, tiny_checkpoint_b, tmp_path
):
    add_model(
        tmp_path,
        "m",
        tiny_checkpoint,
        config_text("m", extra="version_policy { latest { num_versions: 2 } }"),
        versions=(1, 2),
    )
    import shutil

    shutil.copytree(tiny_checkpoint_b, tmp_path / "m" / "10")  # numeric order, not text order
    (tmp_path / "m" / "notes").mkdir()  # not a version: ignored
    with serve_repo(tmp_path) as server, RewardClient(server.target, model="m") as rm:
        assert [v.version for v in rm.model_metadata().versions] == ["2", "10"]
        newest = rm.get_score(CHAT_1)
        with RewardClient(server.target, model="m", version=10) as v10:
            assert v10.get_score(CHAT_1) == newest
        with RewardClient(server.target, model="m", version=2) as v2:
            assert v2.get_score(CHAT_1) != newest
        with RewardClient(server.target, model="m", version=1) as v1, pytest.raises(rc.NotFoundError):
            v1.get_score(CHAT_1)


@pytest.mark.parametrize(
    ("policy", "served"), [("all {}", ["1", "2", "3"]), ("specific { versions: [1, 3] }", ["1", "3"])]
)
def test_version_policy_all_and_specific(tiny_checkpoint, tmp_path, policy, served):
    add_model(
        tmp_path,
        "m",
        tiny_checkpoint,
        config_text("m", extra=f"version_policy {{ {policy} }}"),
        versions=(1, 2, 3),
    )
    with serve_repo(tmp_path) as server, RewardClient(server.target, model="m") as rm:
        assert [v.version for v in rm.model_metadata().versions] == served
        assert rm.score([CHAT_1])


def test_strict_start_refuses_when_a_model_fails_to_load(tiny_checkpoint, tmp_path):
    add_model(tmp_path, "good", tiny_checkpoint)
    add_model(
        tmp_path,
        "bad",
        tiny_checkpoint,
        config_text("bad").replace("max_batch_size: 8", "max_batch_size: -1"),
    )
    with pytest.raises(StartupError, match=r"bad:.*max_batch_size"):
        serve_repo(tmp_path, strict=True)
    with serve_repo(tmp_path, strict=False) as server, RewardClient(server.target, model="good") as rm:
        assert rm.get_score(CHAT_1)
        bad = rm.model_metadata("bad")
        assert bad.versions[0].state == "UNAVAILABLE" and "max_batch_size" in bad.versions[0].reason
        with RewardClient(server.target, model="bad") as client, pytest.raises(rc.UnavailableError):
            client.get_score(CHAT_1)


@pytest.mark.parametrize("policy", ["latest { num_versions: 1 }", "all {}"])
def test_strict_start_serves_the_older_version_when_a_newer_one_fails(tiny_checkpoint, tmp_path, policy):
    # A replica restarting with a bad new version on a shared volume: the policy can serve version 1.
    extra = f"version_policy {{ {policy} }}\npytorch {{ torchscript: false }}\n"
    model = add_model(tmp_path, "m", tiny_checkpoint, config_text("m", extra=extra), versions=(1, 2))
    (model / "2" / "model.safetensors").write_bytes(b"not a safetensors file")
    with serve_repo(tmp_path, strict=True) as server, RewardClient(server.target, model="m") as rm:
        with RewardClient(server.target, model="m", version=1) as v1:
            assert rm.get_score(CHAT_1) == v1.get_score(CHAT_1)
        (index,) = rm.repository_index()
        versions = {v.version: (v.state, v.reason) for v in index.versions}
        assert index.state == "READY" and versions["1"] == ("READY", "")
        assert versions["2"][0] == "UNAVAILABLE" and "safetensors" in versions["2"][1]


def test_checkpoint_with_missing_head_or_pickled_weights_is_refused(tiny_checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    headless = add_model(tmp_path, "headless", tiny_checkpoint)
    weights = headless / "1" / "model.safetensors"
    state = load_file(str(weights))
    del state["score.weight"]
    save_file(state, str(weights))
    pickled = add_model(tmp_path, "pickled", tiny_checkpoint)
    (pickled / "1" / "model.safetensors").rename(pickled / "1" / "pytorch_model.bin")
    with serve_repo(tmp_path, strict=False) as server, RewardClient(server.target, model="headless") as rm:
        assert "score.weight" in rm.model_metadata().versions[0].reason
        assert "pickled .bin" in rm.model_metadata("pickled").versions[0].reason


def test_symlinked_model_outside_the_repository_is_not_served(tiny_checkpoint, tmp_path):
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    add_model(repo, "inside", tiny_checkpoint)
    add_model(outside, "escape", tiny_checkpoint)
    os.symlink(outside / "escape", repo / "escape")
    with serve_repo(repo) as server, RewardClient(server.target, model="escape") as rm:
        assert [m.name for m in rm.list_models()] == ["inside"]
        with pytest.raises(rc.NotFoundError):
            rm.get_score(CHAT_1)


def test_left_truncation_keeps_the_end_and_reports_dropped_tokens(tiny_checkpoint, tmp_path):
    add_model(tmp_path, "left", tiny_checkpoint, config_text("left", reward="max_sequence_length: 12"))
    add_model(
        tmp_path,
        "right",
        tiny_checkpoint,
        config_text("right", reward="max_sequence_length: 12 truncation_side: RIGHT"),
    )
    ids = list(range(5, 35))
    with serve_repo(tmp_path) as server:
        with RewardClient(server.target, model="left") as rm:
            cut, tail = rm.score([ids, ids[-12:]])
            assert (cut.num_tokens, cut.num_truncated_tokens) == (12, 18)
            assert close(cut.score, tail.score)
        with RewardClient(server.target, model="right") as rm:
            cut, head = rm.score([ids, ids[:12]])
            assert (cut.num_tokens, cut.num_truncated_tokens) == (12, 18)
            assert close(cut.score, head.score)
