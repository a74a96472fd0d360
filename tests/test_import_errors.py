"""Checkpoints that cannot be imported are refused with a clear message, and nothing is written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from originals import write_internlm2, write_starling, write_ziya
from reward_server.errors import ImportRefused
from reward_server.offline.importers import import_checkpoint


def snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("built")
    write_internlm2(root / "internlm2")
    write_ziya(root / "ziya")
    write_starling(root / "starling")
    return root


@pytest.fixture()
def repo(tmp_path):
    repository = tmp_path / "repo"
    repository.mkdir()
    (repository / "existing").mkdir()  # a model already there must stay untouched
    (repository / "existing" / "config.pbtxt").write_text(
        'max_batch_size: 1 reward { prompt_format: "ziya" }'
    )
    return repository


def copy(built: Path, name: str, tmp_path: Path) -> Path:
    target = tmp_path / f"src-{name}"
    shutil.copytree(built / name, target)
    return target


def refused(source: Path | str, repo: Path, match: str, name: str = "new", **kwargs) -> None:
    before = snapshot(repo)
    with pytest.raises(ImportRefused, match=match):
        import_checkpoint(str(source), repo, name, **kwargs)
    assert snapshot(repo) == before, "a refused import left files behind"


def test_folder_of_no_known_family_is_refused(built, repo, tmp_path):
    source = copy(built, "ziya", tmp_path)
    config = json.loads((source / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (source / "config.json").write_text(json.dumps(config))
    state = torch.load(source / "pytorch_model-00002-of-00002.bin", weights_only=True)
    state["lm_head.weight"] = state.pop("value_head.weight")
    torch.save(state, source / "pytorch_model-00002-of-00002.bin")
    refused(source, repo, r"not a known reward model family .*--family")


def test_truncated_safetensors_is_refused(built, repo, tmp_path):
    source = copy(built, "internlm2", tmp_path)
    shard = source / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    refused(source, repo, r"model-00002-of-00002\.safetensors: not a valid safetensors file")


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {EXPLOIT_MARKER}",))


EXPLOIT_MARKER = Path("/tmp/reward-server-test-pickle-ran")


def test_pickle_with_code_is_refused_and_never_runs(built, repo, tmp_path):
    EXPLOIT_MARKER.unlink(missing_ok=True)
    source = copy(built, "starling", tmp_path)
    state = torch.load(source / "pytorch_model.bin", weights_only=True)
    state["v_head.weight"] = Exploit()
    torch.save(state, source / "pytorch_model.bin")
    refused(source, repo, r"pytorch_model\.bin: refused: the pickle is not plain tensors", family="starling")
    assert not EXPLOIT_MARKER.exists()


def test_config_whose_heads_do_not_divide_hidden_is_refused(built, repo, tmp_path):
    source = copy(built, "internlm2", tmp_path)
    config = json.loads((source / "config.json").read_text())
    config["num_attention_heads"] = 5
    (source / "config.json").write_text(json.dumps(config))
    refused(source, repo, r"hidden_size 64 is not divisible by num_attention_heads 5")


def _edit_internlm2_shard(source: Path, edit) -> None:
    for shard in sorted(source.glob("*.safetensors")):
        state = load_file(str(shard))
        edit(state)
        save_file(state, str(shard))
    index = source / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"] = {
        k: shard.name for shard in sorted(source.glob("*.safetensors")) for k in load_file(str(shard))
    }
    index.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            lambda s: s.pop("model.layers.1.ffn_norm.weight", None),
            r"missing keys: model\.layers\.1\.post_attention_layernorm",
        ),
        (
            lambda s: (
                s.update({"model.layers.0.attention.extra.weight": torch.zeros(2)})
                if "v_head.weight" in s
                else None
            ),
            r"unexpected keys: model\.layers\.0\.attention\.extra\.weight",
        ),
        (
            lambda s: s.update({"v_head.weight": torch.zeros(1, 32)}) if "v_head.weight" in s else None,
            r"shape mismatches: score\.weight \(1, 32\) != \(1, 64\)",
        ),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_unmappable_keys_are_refused_with_their_names(built, repo, tmp_path, edit, match):
    source = copy(built, "internlm2", tmp_path)
    _edit_internlm2_shard(source, edit)
    refused(source, repo, match)


def test_packed_wqkv_of_the_wrong_size_is_refused(built, repo, tmp_path):
    source = copy(built, "internlm2", tmp_path)

    def shrink(state):
        key = "model.layers.0.attention.wqkv.weight"
        if key in state:
            state[key] = state[key][:-16]

    _edit_internlm2_shard(source, shrink)
    refused(source, repo, r"model\.layers\.0\.attention\.wqkv\.weight: shape \(112, 64\), expected 128 rows")


def test_starling_aliases_that_differ_are_refused(built, repo, tmp_path):
    source = copy(built, "starling", tmp_path)
    state = torch.load(source / "pytorch_model.bin", weights_only=True)
    state["transformer.norm.weight"] = state["transformer.norm.weight"] + 1
    torch.save(state, source / "pytorch_model.bin")
    refused(source, repo, r"transformer\.norm\.weight and its alias differ")


def test_new_version_that_needs_another_config_is_refused(built, repo):
    refused(
        built / "internlm2",
        repo,
        r"'reward\.prompt_format' is 'ziya' but .* needs 'internlm2'",
        name="existing",
    )


def test_hub_id_offline_fails_at_once_naming_the_id(repo, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    refused("internlm/internlm2-7b-reward", repo, r"cannot download 'internlm/internlm2-7b-reward'.*offline")
    assert time.monotonic() - started < 5


def test_import_cli_writes_a_version_and_reports_refusals(built, repo):
    exe = Path(sys.executable).parent / "reward-server"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "reward_server"]
    done = subprocess.run(
        [*command, "import", str(built / "ziya"), "--repository", str(repo), "--name", "ziya-rm"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "imported" in done.stdout and "version 1" in done.stdout
    assert (repo / "ziya-rm" / "1" / "model.safetensors").exists()
    done = subprocess.run(
        [*command, "import", str(repo / "nope"), "--repository", str(repo), "--name", "x"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and "import refused" in done.stderr and "no such folder" in done.stderr
