"""The `reward-server` command in a real subprocess: help, serve, health, reflection, SIGTERM, strict."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from helpers import CHAT_1, SERVING_LINE, ServerProcess, add_model, command, config_text
from reward_client import RewardClient

ROOT = Path(__file__).resolve().parent.parent


def test_help_lists_the_commands():
    done = subprocess.run([*command(), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "serve" in done.stdout and "--log-level" in done.stdout
    done = subprocess.run([*command(), "serve", "--help"], capture_output=True, text=True, timeout=60)
    for flag in (
        "--model-repository",
        "--port",
        "--strict",
        "--no-strict",
        "--grace-period",
        "--auth-token-file",
        "--model-control-mode",
        "--repository-poll-secs",
        "--load-model",
        "--metrics-port",
    ):
        assert flag in done.stdout


def test_serve_logs_models_answers_health_and_reflection_and_drains_on_sigterm(tiny_checkpoint, tmp_path):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    add_model(tmp_path, "tiny", tiny_checkpoint, config_text("tiny"))
    server = ServerProcess(tmp_path).wait_started()
    port = server.port
    try:
        target = f"127.0.0.1:{port}"
        with RewardClient(target, model="tiny") as rm:
            assert isinstance(rm.get_score(CHAT_1), float)
        with grpc.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "tiny", "reward_api.v1.RewardService"):
                status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
                assert status == health_pb2.HealthCheckResponse.SERVING
            reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
            reply = next(
                reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            )
            names = {s.name for s in reply.list_services_response.service}
            assert {"reward_api.v1.RewardService", "grpc.health.v1.Health"} <= names
        server.terminate()
        assert server.wait_exit(60) == 0
        log = server.log()
        assert "stopped" in log
    finally:
        server.kill()


def test_serve_exits_nonzero_in_strict_mode_when_a_model_fails(tiny_checkpoint, tmp_path):
    add_model(tmp_path, "bad", tiny_checkpoint)
    (tmp_path / "bad" / "1" / "config.json").write_text("{ not json", encoding="utf-8")
    done = subprocess.run(
        [*command(), "serve", "--model-repository", str(tmp_path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "bad version 1" in done.stderr and "--no-strict" in done.stderr


@pytest.mark.parametrize("args", [["serve"], ["serve", "--model-repository", "/nonexistent/repo"]])
def test_serve_rejects_bad_arguments(args):
    done = subprocess.run([*command(), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2


def test_default_repository_serves_the_demo_model_with_the_card_example():
    server = ServerProcess(ROOT / "model_repository").wait_started()
    port = server.port
    try:
        with RewardClient(f"127.0.0.1:{port}", model="demo") as rm:
            chat_2 = [CHAT_1[0], {"role": "assistant", "content": "I have no idea."}]
            scores = rm.get_scores([CHAT_1, chat_2])
            assert rm.get_score(CHAT_1) == pytest.approx(scores[0], rel=1e-5)
            assert rm.compare(CHAT_1, chat_2) == (scores[0] > scores[1])
            assert sorted(rm.rank([CHAT_1, chat_2])) == [0, 1]
            assert rm.model_metadata().versions[0].state == "READY"
    finally:
        server.terminate()
        server.wait_exit(60)


def test_serve_takes_repository_host_and_port_from_the_environment_when_no_flag_is_given(tmp_path):
    with socket.socket() as probe:  # a port free right now, for the variable to name
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "REWARD_SERVER_MODEL_REPOSITORY": str(ROOT / "model_repository"),
        "REWARD_SERVER_HOST": "127.0.0.1",
        "REWARD_SERVER_PORT": str(port),
    }
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([*command(), "serve"], env=env, stderr=log, text=True)
    try:
        deadline = time.monotonic() + 120
        while (
            not SERVING_LINE.search(log_path.read_text())
            and proc.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert int(SERVING_LINE.search(log_path.read_text()).group(1)) == port, log_path.read_text()
        with RewardClient(f"127.0.0.1:{port}", model="demo") as rm:
            assert isinstance(rm.get_score(CHAT_1), float)
    finally:
        proc.terminate()
        proc.wait(60)


@pytest.mark.parametrize("token", ["", " "])
def test_serve_refuses_an_empty_token_variable_when_started(token):
    env = {**os.environ, "REWARD_SERVER_AUTH_TOKEN": token}
    done = subprocess.run(
        [*command(), "serve", "--model-repository", str(ROOT / "model_repository"), "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "REWARD_SERVER_AUTH_TOKEN is set but empty" in done.stderr


def test_serve_refuses_a_bad_environment_value_naming_the_variable():
    env = {**os.environ, "REWARD_SERVER_MAX_CONCURRENT_RPCS": "many"}
    done = subprocess.run(
        [*command(), "serve", "--model-repository", str(ROOT / "model_repository")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "REWARD_SERVER_MAX_CONCURRENT_RPCS='many'" in done.stderr


def test_debug_log_level_after_serve_logs_our_lines_but_not_other_libraries_debug_lines():
    server = ServerProcess(ROOT / "model_repository", "--log-level", "DEBUG").wait_started()
    try:
        with RewardClient(f"127.0.0.1:{server.port}", model="demo") as rm:
            rm.get_score(CHAT_1)
        server.terminate()
        assert server.wait_exit(60) == 0
    finally:
        server.kill()
    lines = server.log().splitlines()
    levels_names = [line.split()[2:4] for line in lines if len(line.split()) > 3]
    ours = [name for level, name in levels_names if level == "DEBUG" and name.startswith("reward_server")]
    others = [
        name
        for level, name in levels_names
        if level in ("DEBUG", "INFO") and not name.startswith("reward_server")
    ]
    assert ours, server.log()  # the per-request line
    assert not others, others  # asyncio's selector line, grpc's internals: WARNING and above only
