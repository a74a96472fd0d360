"""The metrics of readiness and of the repository's table, scraped from a real server's /metrics:
reward_server_ready follows the `reward.ready` health name, reward_model_version_state has one series
per version the repository knows (its current state's), and reward_model_load_failures_total counts each
failed version load (at start, by LoadModel, by a poll). Series of a version or model the repository
forgets go away."""

from __future__ import annotations

import shutil
import time

import tritonclient.grpc as triton

from helpers import ServerThread, publish, serve_repo, unloadable_weights, wait_until
from reward_server.server import READY_SERVICE_NAME
from test_lifecycle import scrape, value
from test_readiness import fast_model, load_fails, replace_with_broken, serving


def ready_gauge(server: ServerThread) -> float:
    return value(scrape(server.running.metrics_port), "reward_server_ready")


def states(server: ServerThread, model: str) -> dict[str, str]:
    """version -> state of the model's reward_model_version_state series at 1; fails on a series at 0
    (a stale state must be removed, not zeroed) or on two states of one version."""
    found: dict[str, str] = {}
    for (name, labels), v in scrape(server.running.metrics_port).items():
        label = dict(labels)
        if name == "reward_model_version_state" and label["model"] == model:
            assert v == 1 and label["version"] not in found, (labels, v)
            found[label["version"]] = label["state"]
    return found


def load_failures(server: ServerThread, model: str) -> float:
    return value(scrape(server.running.metrics_port), "reward_model_load_failures_total", model=model)


def test_ready_gauge_follows_readiness_when_a_required_model_loses_and_regains_its_ready_version(
    tiny_checkpoint, tmp_path
):
    fast_model(tmp_path, "other", tiny_checkpoint)
    rm = fast_model(tmp_path, "rm", tiny_checkpoint)
    settings = {"model_control_mode": "explicit", "load_models": ("other", "rm"), "metrics_port": 0}
    with serve_repo(tmp_path, **settings) as server, triton.InferenceServerClient(server.target) as kserve:
        assert ready_gauge(server) == 1
        assert states(server, "rm") == {"1": "READY"} and load_failures(server, "rm") == 0

        replace_with_broken(rm, tiny_checkpoint)
        load_fails(server, "rm")
        wait_until(lambda: not serving(server, READY_SERVICE_NAME), timeout=10)
        assert ready_gauge(server) == 0  # set in the same step as the health name
        # Version 1 left the table (its folder is gone): its series went with it.
        assert states(server, "rm") == {"2": "UNAVAILABLE"}
        assert load_failures(server, "rm") == 1
        assert states(server, "other") == {"1": "READY"}

        shutil.copytree(tiny_checkpoint, rm / "3")
        kserve.load_model("rm")
        wait_until(lambda: ready_gauge(server) == 1, timeout=10)
        assert states(server, "rm") == {"3": "READY"} and load_failures(server, "rm") == 1

        kserve.unload_model("rm")  # by request: not required any more, the server stays ready
        wait_until(lambda: states(server, "rm") == {"3": "UNAVAILABLE"}, timeout=10)
        assert ready_gauge(server) == 1


def test_version_states_show_a_failed_version_next_to_the_serving_one_when_polled_and_go_when_removed(
    tiny_checkpoint, tmp_path
):
    period = 0.2
    rm = fast_model(tmp_path, "rm", tiny_checkpoint)
    fast_model(tmp_path, "other", tiny_checkpoint)
    with serve_repo(tmp_path, model_control_mode="poll", repository_poll_s=period, metrics_port=0) as server:
        assert states(server, "rm") == {"1": "READY"} and load_failures(server, "rm") == 0
        publish(tiny_checkpoint, rm, 2, unloadable_weights)
        wait_until(lambda: states(server, "rm") == {"1": "READY", "2": "UNAVAILABLE"}, timeout=30)
        assert load_failures(server, "rm") == 1 and ready_gauge(server) == 1

        time.sleep(5 * period)  # polls over unchanged files try nothing: nothing more is counted
        assert load_failures(server, "rm") == 1

        shutil.rmtree(rm)
        wait_until(lambda: states(server, "rm") == {}, timeout=30)
        assert ready_gauge(server) == 1  # a removed model is not required
        assert states(server, "other") == {"1": "READY"}


def test_load_failure_counted_and_version_unavailable_when_a_model_fails_at_a_no_strict_start(
    tiny_checkpoint, tmp_path
):
    fast_model(tmp_path, "good", tiny_checkpoint)
    broken = fast_model(tmp_path, "broken", tiny_checkpoint, versions=())
    publish(tiny_checkpoint, broken, 1, unloadable_weights)
    with serve_repo(tmp_path, strict=False, metrics_port=0) as server:
        assert load_failures(server, "broken") == 1 and load_failures(server, "good") == 0
        assert states(server, "broken") == {"1": "UNAVAILABLE"}
        assert states(server, "good") == {"1": "READY"}
        assert ready_gauge(server) == 1  # a model that never loaded does not gate readiness
