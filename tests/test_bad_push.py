"""A bad push never takes a model down: a new version that fails to load stays in the index with its
reason while the version that loaded keeps serving (poll mode and LoadModel); poll mode retries it only
once its files change; a failed LoadModel runs once (no client retry) and says FAILED_PRECONDITION;
with --no-strict a model that cannot load fails alone, in a real server process."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import pytest

import reward_client as rc
from helpers import CHAT_1, ServerProcess, add_model, config_text, publish, serve_repo, wait_until
from reward_client import RewardClient
from reward_client._calls import SERVICE_CONFIG


def malformed_tokenizer(folder: Path) -> None:
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE", "vocab": [')


def versions_of(client: RewardClient, name: str = "rm") -> dict[str, tuple[str, str]]:
    model = {m.name: m for m in client.repository_index()}[name]
    return {v.version: (v.state, v.reason) for v in model.versions}


def failed_loads(caplog, version: int) -> int:
    return sum(f"version={version} failed to load" in r.getMessage() for r in caplog.records)


def test_poll_mode_keeps_the_ready_version_serving_when_a_new_version_fails_and_retries_it_once_fixed(
    tiny_checkpoint, tmp_path, caplog
):
    caplog.set_level(logging.ERROR, logger="reward_server.repository.manager")
    period = 0.3
    model = add_model(tmp_path, "rm", tiny_checkpoint, config_text("rm"))
    with serve_repo(tmp_path, model_control_mode="poll", repository_poll_s=period) as server:
        with RewardClient(server.target, model="rm", timeout=30) as client:
            before = client.get_score(CHAT_1)
            bad = publish(tiny_checkpoint, model, 2, malformed_tokenizer)

            # Never stuck in LOADING: the failed version shows UNAVAILABLE with its reason.
            wait_until(lambda: versions_of(client).get("2", ("",))[0] == "UNAVAILABLE")
            state, reason = versions_of(client)["2"]
            assert "tokenizer" in reason and str(tmp_path) not in reason
            assert versions_of(client)["1"] == ("READY", "")
            assert {m.name: m.state for m in client.repository_index()}["rm"] == "READY"
            assert client.get_score(CHAT_1) == before  # version 1 still answers the default request
            with (
                RewardClient(server.target, model="rm", version=2) as pinned,
                pytest.raises(rc.UnavailableError, match="version 2"),
            ):
                pinned.get_score(CHAT_1)

            time.sleep(5 * period)  # several polls over unchanged files: no reload attempt
            assert failed_loads(caplog, 2) == 1

            shutil.copy(tiny_checkpoint / "tokenizer.json", bad / "tokenizer.json")  # the fix
            wait_until(lambda: versions_of(client) == {"2": ("READY", "")})
            assert client.rank_conversations([CHAT_1, CHAT_1]).version == "2"
            assert failed_loads(caplog, 2) == 1


def test_load_model_of_a_broken_new_version_runs_once_raises_failed_precondition_and_keeps_the_old_one(
    tiny_checkpoint, tmp_path, caplog
):
    caplog.set_level(logging.ERROR, logger="reward_server.repository.manager")
    model = add_model(tmp_path, "rm", tiny_checkpoint, config_text("rm"))
    with serve_repo(tmp_path, model_control_mode="explicit", load_models=("rm",)) as server:
        with RewardClient(server.target, model="rm", timeout=60) as client:
            before = client.get_score(CHAT_1)
            publish(tiny_checkpoint, model, 2, malformed_tokenizer)
            with pytest.raises(rc.FailedPreconditionError, match=r"version 2.*tokenizer") as info:
                client.load_model()
            assert failed_loads(caplog, 2) == 1  # the client did not repeat the load
            assert "keeps serving" in str(info.value) and str(tmp_path) not in str(info.value)
            assert versions_of(client)["1"] == ("READY", "")
            assert versions_of(client)["2"][0] == "UNAVAILABLE"
            assert client.get_score(CHAT_1) == before

            # An explicit LoadModel tries a failed version again (the operator asked), once more.
            with pytest.raises(rc.FailedPreconditionError):
                client.load_model()
            assert failed_loads(caplog, 2) == 2


def test_load_model_of_a_model_with_no_loadable_version_raises_failed_precondition_not_internal(
    tiny_checkpoint, tmp_path
):
    add_model(tmp_path, "rm", tiny_checkpoint, config_text("rm"))
    malformed_tokenizer(tmp_path / "rm" / "1")
    with (
        serve_repo(tmp_path, model_control_mode="explicit") as server,
        RewardClient(server.target, model="rm", timeout=60) as client,
    ):
        with pytest.raises(rc.FailedPreconditionError, match="tokenizer") as info:
            client.load_model()
        assert "keeps serving" not in str(info.value)
        with pytest.raises(rc.UnavailableError, match="tokenizer"):
            client.get_score(CHAT_1)


def test_client_service_config_retries_scoring_and_reads_but_never_load_or_unload():
    config = json.loads(SERVICE_CONFIG)
    retried = {
        (n["service"], n.get("method", "*"))
        for m in config["methodConfig"]
        if "retryPolicy" in m
        for n in m["name"]
    }
    service = "reward_api.v1.RewardService"
    for method in ("Score", "Rank", "GetModelMetadata", "ListModels", "RepositoryIndex"):
        assert (service, method) in retried
    assert ("grpc.health.v1.Health", "*") in retried
    assert not {(service, "LoadModel"), (service, "UnloadModel"), (service, "*")} & retried


def test_no_strict_server_process_serves_the_others_when_a_config_is_not_utf8_or_a_tokenizer_is_malformed(
    tiny_checkpoint, tmp_path
):
    add_model(tmp_path, "good", tiny_checkpoint, config_text("good"))
    add_model(tmp_path, "latin1", tiny_checkpoint, config_text("latin1"))
    (tmp_path / "latin1" / "config.pbtxt").write_bytes(b'name: "latin1"\n# caf\xe9\nmax_batch_size: 4\n')
    add_model(tmp_path, "badtok", tiny_checkpoint, config_text("badtok"))
    malformed_tokenizer(tmp_path / "badtok" / "1")
    server = ServerProcess(tmp_path, "--no-strict").wait_started()
    try:
        with RewardClient(server.target, model="good", timeout=30) as client:
            assert isinstance(client.get_score(CHAT_1), float)
        for name, why in (("latin1", "not UTF-8"), ("badtok", "tokenizer")):
            with (
                RewardClient(server.target, model=name, timeout=30) as client,
                pytest.raises(rc.UnavailableError) as info,
            ):
                client.get_score(CHAT_1)
            message = str(info.value)
            assert why in message and "\n" not in message and str(tmp_path) not in message
        assert server.proc.poll() is None
    finally:
        server.kill()


def test_reloads_trace_no_new_torchscript_graphs_and_each_model_scores_with_its_own_weights(
    tiny_checkpoint, tmp_path
):
    """torch keeps every traced graph for good: a reload must reuse its structure's graph, bound to
    the new weights, never trace (and keep) another one."""
    from torch.jit._state import _python_cu

    from reward_server.offline.tiny_models import write_tiny_checkpoint
    from reward_server.repository import ModelRepository

    other = write_tiny_checkpoint(tmp_path / "other-weights", seed=3)  # the same structure, other weights
    for name, checkpoint in (("a", tiny_checkpoint), ("b", other)):
        add_model(tmp_path / "repo", name, checkpoint, config_text(name))
        eager = config_text(f"{name}-eager", extra="pytorch { torchscript: false }")
        add_model(tmp_path / "repo", f"{name}-eager", checkpoint, eager)
    repository = ModelRepository(tmp_path / "repo", mode="explicit")
    batch = [[5, 9, 13, 2, 7], [3, 4, 8], [11, 12, 13, 14, 15, 16, 17]]

    def scores(name: str) -> list[float]:
        backend = repository.resolve(name, "").instances[0].backend
        return backend.score_batch(batch)

    try:
        for name in ("a-eager", "b-eager", "a", "b"):
            assert repository.load_model(name) == []
        assert repository.resolve("a", "").instances[0].backend.traced
        graphs = len(_python_cu.get_functions())
        for _ in range(3):
            for name in ("a", "b"):
                repository.unload_model(name)
                assert repository.load_model(name) == []
                assert scores(name) == pytest.approx(scores(f"{name}-eager"), rel=1e-5, abs=1e-6)
        assert len(_python_cu.get_functions()) == graphs
        assert scores("a") != pytest.approx(scores("b"), rel=1e-3)
    finally:
        repository.close()
