"""A model folder cannot make the server read outside the repository, hang, grow without bound, or
echo file contents and absolute paths to clients; absurd config values are refused with their bound;
`import` / `export` never write through a symlinked model folder."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import reward_client as rc
from helpers import CHAT_1, add_model, command, config_text, serve_repo
from reward_client import RewardClient
from reward_server.errors import ConfigError, ExportRefused, ImportRefused
from reward_server.repository import parse_model_config

SECRET = "api_key_SECRET_0123456789"


def reasons(server, tmp_path: Path) -> dict[str, str]:
    """Each model's client-facing reason (model and version level), from the repository index."""
    with RewardClient(server.target) as client:
        index = client.repository_index()
    out = {}
    for model in index:
        out[model.name] = " | ".join([model.reason, *(v.reason for v in model.versions)])
        assert str(tmp_path) not in out[model.name], f"{model.name}: an absolute path reached the client"
    return out


def test_version_files_that_leave_the_repository_or_are_not_regular_fail_only_their_version(
    tiny_checkpoint, tmp_path
):
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    outside.mkdir()
    shutil.copy(tiny_checkpoint / "tokenizer.json", outside / "tokenizer.json")
    (outside / "config.json").write_text((tiny_checkpoint / "config.json").read_text())
    add_model(repo, "good", tiny_checkpoint, config_text("good"))
    cases = {
        "tok-out": ("tokenizer.json", lambda p: p.symlink_to(outside / "tokenizer.json")),
        "cfg-out": ("config.json", lambda p: p.symlink_to(outside / "config.json")),
        "weights-out": ("model.safetensors", lambda p: p.symlink_to(tiny_checkpoint / "model.safetensors")),
        "tok-zero": ("tokenizer.json", lambda p: p.symlink_to("/dev/zero")),
        "tok-fifo": ("tokenizer_config.json", os.mkfifo),
    }
    for name, (file, make) in cases.items():
        version = add_model(repo, name, tiny_checkpoint, config_text(name)) / "1"
        (version / file).unlink()
        make(version / file)
    with serve_repo(repo, strict=False) as server:
        with RewardClient(server.target, model="good") as client:
            assert isinstance(client.get_score(CHAT_1), float)
        why = reasons(server, tmp_path)
        for name in ("tok-out", "cfg-out", "weights-out", "tok-zero"):
            assert "leaves the model repository" in why[name], why[name]
        assert "not a regular file" in why["tok-fifo"], why["tok-fifo"]
        for name in cases:
            with RewardClient(server.target, model=name) as client, pytest.raises(rc.UnavailableError):
                client.get_score(CHAT_1)


def test_config_pbtxt_that_is_a_fifo_a_device_a_secret_or_too_large_fails_its_model_and_quotes_nothing(
    tiny_checkpoint, tmp_path
):
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(f"{SECRET}: 1\n")
    add_model(repo, "good", tiny_checkpoint, config_text("good"))
    bad = {
        name: add_model(repo, name, tiny_checkpoint, config_text(name)) / "config.pbtxt"
        for name in ("fifo", "zero", "linked-secret", "inline-secret", "huge")
    }
    for path in bad.values():
        path.unlink()
    os.mkfifo(bad["fifo"])
    bad["zero"].symlink_to("/dev/zero")
    bad["linked-secret"].symlink_to(outside / "secret.txt")
    bad["inline-secret"].write_text(config_text("inline-secret") + f"{SECRET}: 1\n")
    bad["huge"].write_text(config_text("huge") + "#" * (2 << 20) + "\n")
    with serve_repo(repo, strict=False) as server:  # a FIFO or /dev/zero read would never return here
        why = reasons(server, tmp_path)
        assert "not a regular file" in why["fifo"] and "leaves the model repository" in why["zero"]
        assert "leaves the model repository" in why["linked-secret"]
        secret_line = config_text("inline-secret").count("\n") + 1
        assert f"line {secret_line} column 1: unknown field" in why["inline-secret"]
        assert "limit" in why["huge"]
        assert all(SECRET not in reason for reason in why.values())
        with RewardClient(server.target, model="inline-secret") as client:
            with pytest.raises(rc.UnavailableError) as info:
                client.get_score(CHAT_1)
            assert SECRET not in str(info.value) and "config.pbtxt" in str(info.value)
        with RewardClient(server.target, model="good") as client:
            assert isinstance(client.get_score(CHAT_1), float)


BOUNDS = [
    ("max_batch_size: 5000000", "max_batch_size", "1..4096"),
    (
        "max_batch_size: 8 instance_group [ { kind: KIND_CPU count: 1000000 } ]",
        "instance_group[0].count",
        "1..64",
    ),
    (
        "max_batch_size: 8 instance_group [ { kind: KIND_GPU gpus: [4096] } ]",
        "instance_group[0].gpus",
        "0..1023",
    ),
    (
        "max_batch_size: 8 model_warmup [ { batch_size: 8 count: 1000000 } ]",
        "model_warmup[0].count",
        "0..1000",
    ),
    (
        "max_batch_size: 8 model_warmup [ { sequence_length: 100000000 } ]",
        "model_warmup[0].sequence_length",
        "0..1048576",
    ),
    (
        "max_batch_size: 8 dynamic_batching { max_queue_delay_microseconds: 9223372036854775000 }",
        "dynamic_batching.max_queue_delay_microseconds",
        "0..60000000",
    ),
    (
        "max_batch_size: 8 dynamic_batching { default_queue_policy { max_queue_size: 4000000000 } }",
        "dynamic_batching.default_queue_policy.max_queue_size",
        "0..1000000",
    ),
    (
        "max_batch_size: 8 dynamic_batching { max_batch_tokens: 18446744073709551615 }",
        "dynamic_batching.max_batch_tokens",
        "0..16777216",
    ),
    (
        "max_batch_size: 8 dynamic_batching { preferred_batch_size: [" + ", ".join(["4"] * 65) + "] }",
        "dynamic_batching.preferred_batch_size (how many)",
        "0..64",
    ),
    ("max_batch_size: 8 pytorch { intra_op_threads: 100000 }", "pytorch.intra_op_threads", "0..1024"),
    ("max_batch_size: 8 onnxruntime { intra_op_threads: 100000 }", "onnxruntime.intra_op_threads", "0..1024"),
    (
        "max_batch_size: 8 version_policy { latest { num_versions: 100000 } }",
        "version_policy.latest.num_versions",
        "1..64",
    ),
]


@pytest.mark.parametrize(("text", "field", "bound"), BOUNDS, ids=[b[1] for b in BOUNDS])
def test_config_value_beyond_its_bound_is_refused_naming_field_and_range(tmp_path, text, field, bound):
    path = tmp_path / "m" / "config.pbtxt"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        parse_model_config(path, "m")
    assert f"field '{field}'" in str(info.value) and f"must be in {bound}" in str(info.value)


def test_config_values_at_their_bounds_are_accepted(tmp_path):
    path = tmp_path / "m" / "config.pbtxt"
    path.parent.mkdir()
    path.write_text(
        "max_batch_size: 4096 dynamic_batching { max_queue_delay_microseconds: 60000000 "
        "default_queue_policy { max_queue_size: 1000000 } max_batch_tokens: 16777216 } "
        "instance_group [ { kind: KIND_CPU count: 64 } ] model_warmup [ { count: 1000 } ]"
    )
    config = parse_model_config(path, "m")
    assert (config.max_batch_size, config.max_queue_delay_s, config.instance_groups[0].count) == (
        4096,
        60.0,
        64,
    )


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*command(), *args], capture_output=True, text=True, timeout=300)


def test_import_and_export_refuse_a_model_folder_that_is_a_symlink_and_write_nothing_outside(
    tiny_checkpoint, tmp_path
):
    from reward_server.offline.importers import import_checkpoint
    from reward_server.offline.onnx_export import export_version

    repo, outside = tmp_path / "repo", tmp_path / "outside"
    add_model(outside, "evil", tiny_checkpoint, config_text("evil"))
    repo.mkdir()
    (repo / "evil").symlink_to(outside / "evil", target_is_directory=True)
    (repo / "dangling").symlink_to(outside / "nothing", target_is_directory=True)
    before = sorted(p.name for p in (outside / "evil").iterdir())
    for name in ("evil", "dangling"):
        with pytest.raises(ImportRefused, match="symlink"):
            import_checkpoint(str(tiny_checkpoint), repo, name)
    add_model(repo, "rm", tiny_checkpoint, config_text("rm"))
    with pytest.raises(ExportRefused, match="symlink"):
        export_version(repo, "rm", name="evil")
    assert sorted(p.name for p in (outside / "evil").iterdir()) == before
    assert not (outside / "nothing").exists()

    # Twice through the command line: a one-line refusal each time, never a traceback.
    for _ in range(2):
        result = run_cli("import", str(tiny_checkpoint), "--repository", str(repo), "--name", "evil")
        assert result.returncode != 0 and "symlink" in result.stderr and "Traceback" not in result.stderr


def test_import_into_a_model_whose_version_folder_leaves_the_repository_is_refused_without_a_traceback(
    tiny_checkpoint, tmp_path
):
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    model = add_model(repo, "rm", tiny_checkpoint, config_text("rm"))
    shutil.copytree(tiny_checkpoint, outside / "2")
    (model / "2").symlink_to(outside / "2", target_is_directory=True)
    result = run_cli("import", str(tiny_checkpoint), "--repository", str(repo), "--name", "rm")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "outside the model repository" in result.stderr
