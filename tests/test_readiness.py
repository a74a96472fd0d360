"""Server readiness is one rule (ModelRepository.ready, RewardCore.ready) behind every place that reports
it: the `reward.ready` health name (the Kubernetes probe, the client's health watch), KServe's ServerReady
over gRPC and HTTP's /v2/health/ready. A model is required from its first ready version until it is
unloaded by request or removed from the repository; the server is ready while every required model has a
ready version. Real servers, Triton's own clients."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import tritonclient.grpc as triton
import tritonclient.http as triton_http
from grpc_health.v1 import health_pb2
from tritonclient.utils import InferenceServerException

from helpers import ServerThread, add_model, config_text, health_of, publish, serve_repo, unloadable_weights
from reward_server.server import READY_SERVICE_NAME

SERVING = health_pb2.HealthCheckResponse.SERVING
# No TorchScript trace, one warm-up shape: each load of the tiny model takes a fraction of a second.
FAST_LOAD = "pytorch { torchscript: false }\nmodel_warmup [ { batch_size: 1 sequence_length: 8 } ]\n"


def fast_model(repo: Path, name: str, checkpoint: Path, versions: tuple[int, ...] = (1,)) -> Path:
    return add_model(repo, name, checkpoint, config_text(name, extra=FAST_LOAD), versions)


def replace_with_broken(model_folder: Path, checkpoint: Path) -> None:
    """The model's only version replaced by a newer one that fails: a reload leaves no ready version
    (the version policy selects the new one; the old folder is gone)."""
    shutil.rmtree(model_folder / "1")
    publish(checkpoint, model_folder, 2, unloadable_weights)


def serving(server: ServerThread, name: str) -> bool:
    return health_of(server.target, name) == SERVING


def readiness(server: ServerThread) -> tuple[bool, bool, bool]:
    """(reward.ready is SERVING, KServe gRPC ServerReady, HTTP /v2/health/ready is 200) of one server."""
    with triton.InferenceServerClient(server.target) as kserve:
        grpc_ready = kserve.is_server_ready()
    with triton_http.InferenceServerClient(f"127.0.0.1:{server.running.http.port}") as http:
        http_ready = http.is_server_ready()
    return serving(server, READY_SERVICE_NAME), grpc_ready, http_ready


def settled(server: ServerThread, expected: bool, timeout: float = 10) -> tuple[bool, bool, bool]:
    """`readiness` once every notion says `expected`, or as it is at the timeout. The health name is set
    on the event loop after a change (the repository calls back from its thread), so it may lag a beat."""
    deadline = time.monotonic() + timeout
    while (answer := readiness(server)) != (expected,) * 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    return answer


def load_fails(server: ServerThread, model: str) -> None:
    with triton.InferenceServerClient(server.target) as kserve, pytest.raises(InferenceServerException):
        kserve.load_model(model)


def versions_of(server: ServerThread, model: str) -> dict[str, tuple[str, str]]:
    with triton.InferenceServerClient(server.target) as kserve:
        index = kserve.get_model_repository_index(as_json=True)["models"]
    return {m["version"]: (m["state"], m.get("reason", "")) for m in index if m["name"] == model}


def test_server_ready_when_a_model_failed_at_a_no_strict_start(tiny_checkpoint, tmp_path):
    fast_model(tmp_path, "good", tiny_checkpoint)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.pbtxt").write_text(config_text("broken", extra=FAST_LOAD))
    publish(tiny_checkpoint, broken, 1, unloadable_weights)
    with serve_repo(tmp_path, strict=False, http_port=0) as server:
        # A model that never loaded is not one the server must serve: every notion agrees it is ready.
        assert readiness(server) == (True, True, True)
        assert versions_of(server, "broken")["1"][0] == "UNAVAILABLE"


def test_server_not_ready_when_a_model_loaded_by_request_is_left_with_no_ready_version(
    tiny_checkpoint, tmp_path
):
    fast_model(tmp_path, "other", tiny_checkpoint)
    rm = fast_model(tmp_path, "rm", tiny_checkpoint)
    with (
        serve_repo(tmp_path, model_control_mode="explicit", load_models=("other",), http_port=0) as server,
        triton.InferenceServerClient(server.target) as kserve,
    ):
        assert readiness(server) == (True, True, True)
        kserve.load_model("rm")  # ready now: required from here on
        replace_with_broken(rm, tiny_checkpoint)
        load_fails(server, "rm")
        assert versions_of(server, "rm")["2"][0] == "UNAVAILABLE" and not kserve.is_model_ready("rm")
        assert settled(server, False) == (False, False, False)
        assert kserve.is_model_ready("other")  # per model, the other one still serves

        shutil.copytree(tiny_checkpoint, rm / "3")
        kserve.load_model("rm")
        assert settled(server, True) == (True, True, True)


def test_server_stays_ready_when_a_model_is_unloaded_and_requires_it_again_once_reloaded(
    tiny_checkpoint, tmp_path
):
    fast_model(tmp_path, "other", tiny_checkpoint)
    rm = fast_model(tmp_path, "rm", tiny_checkpoint)
    settings = {"model_control_mode": "explicit", "load_models": ("rm", "other"), "http_port": 0}
    with serve_repo(tmp_path, **settings) as server, triton.InferenceServerClient(server.target) as kserve:
        # An unload by request is the operator's choice, not a fault: the replica stays in rotation for
        # the models it still serves (PyTriton, too, waits on ServerReady after its unloads).
        kserve.unload_model("rm")
        # The model's own health name and the ready name are set in one step after a change: once the
        # first says NOT_SERVING, the second has been decided too.
        deadline = time.monotonic() + 10
        while serving(server, "rm"):
            assert time.monotonic() < deadline, "the model's health name never went NOT_SERVING"
            time.sleep(0.05)
        assert not kserve.is_model_ready("rm")
        assert readiness(server) == (True, True, True)

        kserve.load_model("rm")  # required again: losing its only ready version takes the server out
        replace_with_broken(rm, tiny_checkpoint)
        load_fails(server, "rm")
        assert settled(server, False) == (False, False, False)
