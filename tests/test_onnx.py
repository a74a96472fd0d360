"""The onnxruntime backend and `reward-server export`: every seed family exported, served next to
its PyTorch version, same scores and token reports; refused exports leave nothing behind."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import random_chat, serve_repo
from reward_client import RewardClient
from reward_server.errors import ExportRefused
from reward_server.offline.onnx_export import export_version

FAMILIES = ["internlm2", "ziya", "starling", "mistral"]
TOLERANCE = 1e-4


def close(a: float, b: float, rel: float = TOLERANCE) -> bool:
    return abs(a - b) <= rel * max(1.0, abs(b))


def snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def short_copy(source: Path, repo: Path, name: str, length: int) -> None:
    """`source` model copied as `name` with a max_sequence_length of `length`."""
    shutil.copytree(source, repo / name)
    path = repo / name / "config.pbtxt"
    text = path.read_text().replace(f'name: "{source.name}"', f'name: "{name}"')
    path.write_text(text.replace("max_sequence_length:", f"max_sequence_length: {length} #", 1))


@pytest.fixture(scope="module")
def repo(seed_repository, tmp_path_factory) -> Path:
    """The seed families, each exported next to itself as `<name>-onnx`, plus short-context twins."""
    repo = tmp_path_factory.mktemp("onnx_repo")
    for name in FAMILIES:
        shutil.copytree(seed_repository / name, repo / name)
        export_version(repo, name)
    for name in ("internlm2", "ziya"):
        short_copy(seed_repository / name, repo, f"{name}-short", 12)
        export_version(repo, f"{name}-short")
    return repo


@pytest.fixture(scope="module")
def server(repo):
    with serve_repo(repo) as running:
        yield running


def chats(seed: int, n: int = 6) -> list[list[dict]]:
    rng = random.Random(seed)
    return [random_chat(rng)[:2] for _ in range(n)]


@pytest.mark.parametrize("family", FAMILIES)
def test_onnxruntime_scores_equal_pytorch_alone_and_batched(server, family):
    items = chats(hash(family) % 1000)
    with (
        RewardClient(server.target, model=family) as torch_rm,
        RewardClient(server.target, model=f"{family}-onnx") as ort_rm,
    ):
        assert ort_rm.model_metadata().backend == "onnxruntime"
        want = torch_rm.get_scores(items)
        batched = ort_rm.get_scores(items)
        alone = [ort_rm.get_score(c) for c in items]
    for w, b, a in zip(want, batched, alone):
        assert close(b, w) and close(a, w), (b, a, w)


@pytest.mark.parametrize("model", ["internlm2-short", "ziya-short"])
def test_onnxruntime_reports_tokens_and_truncation_like_pytorch(server, model):
    items = chats(9, 4) + [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]]
    with (
        RewardClient(server.target, model=model) as torch_rm,
        RewardClient(server.target, model=f"{model}-onnx") as ort_rm,
    ):
        want, got = torch_rm.score(items), ort_rm.score(items)
    assert any(r.num_truncated_tokens for r in want), "the test needs truncated inputs"
    for w, g in zip(want, got):
        assert (g.num_tokens, g.num_truncated_tokens) == (w.num_tokens, w.num_truncated_tokens)
        assert close(g.score, w.score)


def test_exported_config_carries_reward_settings(repo):
    text = (repo / "ziya-onnx" / "config.pbtxt").read_text()
    assert 'backend: "onnxruntime"' in text and "head_bias: true" in text and 'prompt_format: "ziya"' in text
    text = (repo / "internlm2-onnx" / "config.pbtxt").read_text()
    assert "reward_token_id:" in text and 'prompt_format: "internlm2"' in text
    version = repo / "internlm2-onnx" / "1"
    assert (version / "model.onnx").is_file() and (version / "tokenizer.json").is_file()
    assert not list(version.glob("*.safetensors"))


def test_session_settings_from_config_are_applied(repo, tmp_path):
    shutil.copytree(repo / "ziya-onnx", tmp_path / "ziya-onnx")
    path = tmp_path / "ziya-onnx" / "config.pbtxt"
    path.write_text(
        path.read_text() + 'onnxruntime { graph_optimization_level: "basic" intra_op_threads: 1 }\n'
    )
    with serve_repo(tmp_path) as server, RewardClient(server.target, model="ziya-onnx") as rm:
        assert isinstance(rm.get_score(chats(1, 1)[0]), float)


@pytest.fixture()
def scratch(seed_repository, tmp_path) -> Path:
    shutil.copytree(seed_repository / "ziya", tmp_path / "ziya")
    return tmp_path


def refused(repo: Path, match: str, model: str = "ziya", **kwargs) -> None:
    before = snapshot(repo)
    with pytest.raises(ExportRefused, match=match):
        export_version(repo, model, **kwargs)
    assert snapshot(repo) == before, "a refused export left files behind"


def test_export_of_unknown_model_or_version_is_refused(scratch):
    refused(scratch, r"unknown model 'nope'", model="nope")
    refused(scratch, r"unknown model '\.\./ziya'", model="../ziya")
    refused(scratch, r"has no version 7", version=7)


def test_export_into_an_existing_version_folder_is_refused(scratch):
    export_version(scratch, "ziya")
    refused(scratch, r"ziya-onnx/1 already exists", output_version=1)
    assert export_version(scratch, "ziya")[1] == 2  # the next free version is fine


def test_export_of_an_unsupported_architecture_is_refused(scratch):
    config_path = scratch / "ziya" / "1" / "config.json"
    config = json.loads(config_path.read_text())
    config.update(model_type="mamba", architectures=None)
    config_path.write_text(json.dumps(config))
    refused(scratch, r"architecture 'mamba' is not supported by optimum's ONNX exporter")


def test_export_of_an_onnx_model_or_onto_itself_is_refused(scratch):
    export_version(scratch, "ziya")
    refused(scratch, r"served by 'onnxruntime'; export takes a PyTorch model", model="ziya-onnx")
    refused(scratch, r"the backend is per model", name="ziya")


def test_fp16_export_holds_a_float16_graph_close_to_pytorch(scratch):
    import onnx

    folder, _ = export_version(scratch, "ziya", fp16=True, name="ziya-fp16")
    graph = onnx.load(str(folder / "model.onnx"))
    assert {t.data_type for t in graph.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert {p.key: p.value for p in graph.metadata_props}["reward_dtype"] == "float16"
    with serve_repo(scratch) as server:
        with (
            RewardClient(server.target, model="ziya") as a,
            RewardClient(server.target, model="ziya-fp16") as b,
        ):
            items = chats(4)
            assert b.model_metadata().dtype == "float16"
            for x, y in zip(a.get_scores(items), b.get_scores(items)):
                assert close(y, x, rel=5e-2)


def test_export_cli_shows_progress_and_writes_the_model(scratch):
    exe = Path(sys.executable).parent / "reward-server"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "reward_server"]
    done = subprocess.run(
        [*command, "export", "ziya", "--repository", str(scratch), "--name", "ziya-ort"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "[2/5] exporting with optimum" in done.stderr and "version 1" in done.stdout
    done = subprocess.run(
        [*command, "export", "missing", "--repository", str(scratch)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and "export refused: unknown model 'missing'" in done.stderr


@pytest.mark.gpu
def test_cuda_provider_fp16_scores_track_pytorch(scratch):
    export_version(scratch, "ziya", fp16=True, name="ziya-gpu")
    path = scratch / "ziya-gpu" / "config.pbtxt"
    path.write_text(path.read_text().replace("KIND_AUTO", "KIND_GPU"))
    with serve_repo(scratch) as server:
        with (
            RewardClient(server.target, model="ziya") as a,
            RewardClient(server.target, model="ziya-gpu") as b,
        ):
            assert b.model_metadata().device == "cuda:0"
            items = chats(5, 16)
            for x, y in zip(a.get_scores(items), b.get_scores(items)):
                assert close(y, x, rel=5e-2)


def test_onnxruntime_rank_takes_plain_path_with_pytorch_scores_when_prompt_shared(server):
    """onnxruntime cannot reuse a prefix's KV cache: Rank falls back to the plain path, same scores."""
    prompt = [{"role": "user", "content": " ".join(random.Random(3).choices("a b c d e f g".split(), k=80))}]
    answers = ["yes", "no, not at all", ""]
    with (
        RewardClient(server.target, model="internlm2") as torch_rm,
        RewardClient(server.target, model="internlm2-onnx") as ort_rm,
    ):
        shared = torch_rm.rank_candidates(prompt, answers)
        plain = ort_rm.rank_candidates(prompt, answers)
    repository = server.running.repository
    assert sum(b.stats.shared_groups for b in repository.resolve("internlm2", "").instances) >= 1
    assert sum(b.stats.shared_groups for b in repository.resolve("internlm2-onnx", "").instances) == 0
    for s, p in zip(shared.scores, plain.scores):
        assert close(p, s), (p, s)


def test_export_of_a_softcapped_gemma2_scores_like_the_eager_forward_when_served(tmp_path):
    """Gemma2 caps its attention logits (attn_logit_softcapping), which SDPA drops: the export traces the
    eager attention the PyTorch backend serves it with, so the graph's scores are the eager forward's
    (what the cards of Gemma2 reward models score), not SDPA's, and its forward plan says so."""
    from reward_server.offline.importers import import_checkpoint
    from reward_server.offline.tiny_models import train_tokenizer
    from test_architectures import SOFTCAPPED, Reference, mixed_chats, write_original

    original = write_original(tmp_path / "original", SOFTCAPPED, train_tokenizer(), seed=7)
    repo = tmp_path / "repo"
    repo.mkdir()
    import_checkpoint(str(original), repo, "gemma2", family="sequence-classification")
    export_version(repo, "gemma2")
    eager, sdpa = Reference(original, "eager"), Reference(original, "sdpa")
    items = mixed_chats(seed=3, count=6)
    with serve_repo(repo) as server, RewardClient(server.target, model="gemma2-onnx") as rm:
        scores = rm.get_scores(items)
        (version,) = rm.model_metadata().versions
    assert all(close(s, eager.score(c)) for s, c in zip(scores, items)), scores
    assert not all(close(s, sdpa.score(c)) for s, c in zip(scores, items))  # the cap changes the scores
    assert version.forward == "padded+onnxruntime+eager-attention"
