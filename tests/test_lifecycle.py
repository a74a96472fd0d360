"""Model lifecycle through a real server: control modes, hot swap under load, warmup before READY,
health per model, path checks on load, backend faults, metrics and the per-request log line."""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import threading
import time
import urllib.request

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families

import reward_client as rc
from helpers import (
    CHAT_1,
    CHAT_2,
    ServerProcess,
    add_model,
    config_text,
    health_of,
    publish,
    random_chat,
    serve_repo,
    wait_until,
)
from reward_api.v1 import reward_pb2 as pb
from reward_api.v1 import reward_pb2_grpc
from reward_client import RewardClient
from reward_server import backends
from reward_server.backends import Backend

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def index_of(client: RewardClient) -> dict[str, rc.RepositoryModel]:
    return {m.name: m for m in client.repository_index()}


def conversation(chat: list[dict]) -> pb.ScoreInput:
    return pb.ScoreInput(conversation=pb.Conversation(messages=[pb.Message(**m) for m in chat]))


# --- explicit mode ------------------------------------------------------------------------------


def test_explicit_mode_loads_and_unloads_by_request_with_health_and_index(tiny_checkpoint, tmp_path):
    add_model(tmp_path, "rm", tiny_checkpoint, config_text("rm"))
    add_model(tmp_path, "other", tiny_checkpoint, config_text("other"))
    with serve_repo(tmp_path, model_control_mode="explicit", load_models=("other",)) as server:
        with RewardClient(server.target, model="rm", timeout=120) as client:  # a load traces and checks
            index = index_of(client)
            assert (index["rm"].state, index["rm"].reason) == ("UNAVAILABLE", "not loaded")
            assert index["other"].state == "READY"
            with pytest.raises(rc.UnavailableError, match="not loaded"):
                client.get_score(CHAT_1)
            assert health_of(server.target, "rm") == NOT_SERVING

            info = client.load_model()
            assert [(v.version, v.state) for v in info.versions] == [("1", "READY")]
            assert isinstance(client.get_score(CHAT_1), float)
            assert health_of(server.target, "rm") == SERVING
            loaded = server.running.repository.resolve("rm", "")

            client.unload_model()
            assert all(batcher.closed for batcher in loaded.instances)  # memory released
            with pytest.raises(rc.UnavailableError, match="unloaded"):
                client.get_score(CHAT_1)
            assert health_of(server.target, "rm") == NOT_SERVING
            assert index_of(client)["rm"].state == "UNAVAILABLE"
            assert [m.name for m in client.repository_index(ready_only=True)] == ["other"]

            client.load_model()  # and back
            assert isinstance(client.get_score(CHAT_2), float)
            with pytest.raises(rc.NotFoundError):
                client.unload_model("never-loaded")


def test_load_refuses_names_that_leave_the_repository(tiny_checkpoint, tmp_path):
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    add_model(repo, "rm", tiny_checkpoint, config_text("rm"))
    add_model(outside, "evil", tiny_checkpoint, config_text("evil"))
    (repo / "evil").symlink_to(outside / "evil", target_is_directory=True)
    with (
        serve_repo(repo, model_control_mode="explicit") as server,
        RewardClient(server.target, timeout=120) as client,
    ):
        for name in ("../outside/evil", "/etc", "..", "rm/../../outside/evil", "evil"):
            with pytest.raises(rc.InvalidArgumentError):
                client.load_model(name)
        with pytest.raises(rc.NotFoundError):
            client.load_model("missing")
        assert "evil" not in {m.name for m in client.repository_index()}
        assert client.load_model("rm").versions[0].state == "READY"  # still serving requests


def test_load_and_unload_are_refused_outside_explicit_mode(tiny_checkpoint, tmp_path):
    add_model(tmp_path, "rm", tiny_checkpoint, config_text("rm"))
    with serve_repo(tmp_path) as server, RewardClient(server.target, model="rm") as client:
        with pytest.raises(rc.FailedPreconditionError, match="explicit"):
            client.load_model()
        with pytest.raises(rc.FailedPreconditionError, match="explicit"):
            client.unload_model()
        assert isinstance(client.get_score(CHAT_1), float)


# --- hot swap -----------------------------------------------------------------------------------


def test_hot_swap_under_load_fails_no_request_and_each_score_is_its_versions(
    tiny_checkpoint, tiny_checkpoint_b, tmp_path
):
    rng = random.Random(7)
    chats = [random_chat(rng) for _ in range(10)]
    reference = tmp_path / "reference"
    add_model(reference, "a", tiny_checkpoint, config_text("a"))
    add_model(reference, "b", tiny_checkpoint_b, config_text("b"))
    with serve_repo(reference) as ref:
        with RewardClient(ref.target, model="a") as a, RewardClient(ref.target, model="b") as b:
            expected = {"1": a.get_scores(chats), "2": b.get_scores(chats)}
    assert expected["1"] != expected["2"]

    repo = tmp_path / "repo"
    model = add_model(repo, "rm", tiny_checkpoint, config_text("rm", max_batch_size=4, delay_us=2000))
    with serve_repo(repo, model_control_mode="explicit", load_models=("rm",)) as server:
        retired = []

        async def run() -> tuple[list, list]:
            answers, failures = [], []
            stop = asyncio.Event()
            async with grpc.aio.insecure_channel(server.target) as channel:
                stub = reward_pb2_grpc.RewardServiceStub(channel)  # no client retries: every failure counts

                async def actor(seed: int) -> None:
                    for n in range(5000):
                        if stop.is_set():
                            return
                        i = (seed + n) % len(chats)
                        try:
                            r = await stub.Score(
                                pb.ScoreRequest(model="rm", inputs=[conversation(chats[i])]), timeout=60
                            )
                            answers.append((r.version, i, r.results[0].score))
                        except grpc.aio.AioRpcError as e:
                            failures.append((e.code(), e.details()))

                async def swap(change) -> None:
                    await asyncio.sleep(0.4)
                    retired.append(server.running.repository.resolve("rm", ""))
                    await asyncio.to_thread(change)
                    await stub.LoadModel(pb.LoadModelRequest(model="rm"), timeout=120)

                actors = [asyncio.create_task(actor(k)) for k in range(8)]
                for _ in range(2):
                    await swap(lambda: publish(tiny_checkpoint_b, model, 2))  # v2 in, v1 out
                    await swap(lambda: shutil.rmtree(model / "2"))  # v2 out, v1 back
                await asyncio.sleep(0.4)
                stop.set()
                await asyncio.gather(*actors)
            return answers, failures

        answers, failures = asyncio.run(run())
        assert failures == []
        assert {version for version, _, _ in answers} == {"1", "2"}
        # under load each input lands in other batches than the reference's, and batch composition moves
        # a float32 score by rounding: the bound every fast path is checked to, 1e-5 absolute
        # (docs/pytorch-backend.md)
        for version, i, score in answers:
            assert score == pytest.approx(expected[version][i], rel=1e-5, abs=1e-5)
        assert all(
            b.closed for loaded in retired for b in loaded.instances
        )  # every swapped-out version freed
        assert server.running.repository.resolve("rm", "").version == 1


# --- poll mode ----------------------------------------------------------------------------------


def test_poll_mode_picks_up_new_changed_and_removed_versions(
    tiny_checkpoint, tiny_checkpoint_b, tmp_path, monkeypatch
):
    period = 1.0
    model = add_model(tmp_path, "rm", tiny_checkpoint, config_text("rm"))
    with serve_repo(tmp_path, model_control_mode="poll", repository_poll_s=period) as server:
        repository, polls = server.running.repository, []
        poll = repository.poll
        monkeypatch.setattr(repository, "poll", lambda: polls.append(1) or poll())
        with RewardClient(server.target, model="rm", timeout=60) as client:

            def versions() -> list[tuple[str, str]]:
                return [(v.version, v.state) for v in index_of(client)["rm"].versions]

            assert versions() == [("1", "READY")]
            publish(tiny_checkpoint_b, model, 2)
            polls.clear()
            seen_after = wait_until(lambda: any(v == "2" for v, _ in versions()), timeout=30)
            # Counted in polls, not seconds (a busy machine stretches the time between polls): the next
            # poll finds the new version; the time bound only tells the configured period from the default.
            assert len(polls) <= 2 and seen_after < 10 * period
            wait_until(lambda: versions() == [("2", "READY")], timeout=60)
            assert client.rank_conversations([CHAT_1, CHAT_2]).version == "2"

            (model / "config.pbtxt").write_text(
                config_text("rm", max_batch_size=3)
            )  # a changed config reloads
            wait_until(lambda: client.model_metadata().max_batch_size == 3, timeout=60)

            shutil.rmtree(model / "2")  # back to version 1
            wait_until(lambda: versions() == [("1", "READY")], timeout=60)
            assert client.rank_conversations([CHAT_1, CHAT_2]).version == "1"

            shutil.rmtree(model)
            wait_until(lambda: "rm" not in index_of(client), timeout=60)
            with pytest.raises(rc.NotFoundError):
                client.get_score(CHAT_1)


# --- graceful shutdown ---------------------------------------------------------------------------


def test_sigterm_drains_in_flight_requests_refuses_new_ones_and_exits_zero(tiny_checkpoint, tmp_path):
    # Requests wait 2 s in the queue for companions, so they are surely in flight when SIGTERM lands.
    add_model(tmp_path, "rm", tiny_checkpoint, config_text("rm", max_batch_size=64, delay_us=2_000_000))
    server = ServerProcess(tmp_path, "--grace-period", "20").wait_started()
    target = server.target
    try:
        with grpc.insecure_channel(target) as channel:
            stub = reward_pb2_grpc.RewardServiceStub(channel)  # no client retries: what the server answers
            request = pb.ScoreRequest(model="rm", inputs=[conversation(CHAT_1), conversation(CHAT_2)])
            in_flight = [stub.Score.future(request, timeout=60) for _ in range(4)]
            time.sleep(0.5)
            sent = time.monotonic()
            server.terminate()
            wait_until(lambda: health_of(target, "") == NOT_SERVING, timeout=10)
            assert health_of(target, "rm") == NOT_SERVING
            with pytest.raises(grpc.RpcError) as refused:
                stub.Score(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            scores = [f.result(30).results[0].score for f in in_flight]  # every request in flight finished
            assert len(set(scores)) == 1
        assert server.wait_exit(30) == 0
        assert time.monotonic() - sent < 20
        assert "stopped" in server.log()
    finally:
        server.kill()


def test_a_draining_server_keeps_its_port_open_until_calls_stop_coming(tiny_checkpoint, tmp_path):
    # gRPC answers CANCELLED (never retried) to calls that reach a stopping port before a handler takes
    # them (grpc/grpc#41785): while calls still come, the port must stay open and answer UNAVAILABLE.
    add_model(tmp_path, "rm", tiny_checkpoint)
    server = serve_repo(tmp_path)
    stopping = None
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = reward_pb2_grpc.RewardServiceStub(channel)  # no client retries: what the server answers
            request = pb.ScoreRequest(model="rm", inputs=[conversation(CHAT_1)])
            stub.Score(request, timeout=30)
            # A 2 s quiet window (0.5 s by default), so that a stalled test machine does not end it early.
            stopping = asyncio.run_coroutine_threadsafe(server.running.stop(30, quiet_s=2.0), server.loop)
            for _ in range(25):  # a call every 0.1 s for 2.5 s, longer than the quiet window
                with pytest.raises(grpc.RpcError) as refused:
                    stub.Score(request, timeout=10)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "shutting down" in refused.value.details()
                assert not stopping.done()
                time.sleep(0.1)
            calls_stopped = time.monotonic()
            stopping.result(30)
            assert time.monotonic() - calls_stopped < 10  # closed once quiet, well before the 30 s grace
    finally:
        if stopping is None:
            server.stop()
        else:
            server._close_loop()


# --- warmup -------------------------------------------------------------------------------------


class _GatedFactory:
    """The real pytorch backend factory, recording every batch and holding the first until released."""

    def __init__(self, real, fail: bool = False) -> None:
        self.real, self.fail = real, fail
        self.batches: list[tuple[int, int]] = []
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, checkpoint, device, dtype, config):
        backend = self.real(checkpoint, device, dtype, config)
        score_batch = backend.score_batch

        def recorded(batch):
            self.batches.append((len(batch), len(batch[0])))
            self.entered.set()
            self.release.wait(60)
            if self.fail:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            return score_batch(batch)

        backend.score_batch = recorded
        return backend


def test_version_becomes_ready_only_after_its_warmup_batches(tiny_checkpoint, tmp_path, monkeypatch):
    factory = _GatedFactory(backends.FACTORIES["pytorch"])
    monkeypatch.setitem(backends.FACTORIES, "pytorch", factory)
    warmup = 'model_warmup [ { name: "short" batch_size: 2 sequence_length: 8 count: 3 } ]'
    add_model(tmp_path, "rm", tiny_checkpoint, config_text("rm", extra=warmup))
    with (
        serve_repo(tmp_path, model_control_mode="explicit") as server,
        RewardClient(server.target, model="rm", timeout=120) as client,
    ):  # a load traces and checks
        loading = threading.Thread(target=client.load_model)
        loading.start()
        assert factory.entered.wait(60)
        assert [(v.version, v.state) for v in index_of(client)["rm"].versions] == [("1", "LOADING")]
        assert health_of(server.target, "rm") == NOT_SERVING
        with pytest.raises(rc.UnavailableError):
            client.get_score(CHAT_1)
        factory.release.set()
        loading.join(120)
        assert not loading.is_alive()
        assert factory.batches == [(2, 8)] * 3  # the warmup ran before any request
        assert client.model_metadata().versions[0].state == "READY"
        assert health_of(server.target, "rm") == SERVING


def test_failed_warmup_leaves_the_version_unavailable_and_other_models_serving(
    tiny_checkpoint, tmp_path, monkeypatch
):
    add_model(tmp_path, "good", tiny_checkpoint, config_text("good"))
    with serve_repo(tmp_path, model_control_mode="explicit", load_models=("good",)) as server:
        add_model(tmp_path, "bad", tiny_checkpoint, config_text("bad"))
        factory = _GatedFactory(backends.FACTORIES["pytorch"], fail=True)
        factory.release.set()
        monkeypatch.setitem(backends.FACTORIES, "pytorch", factory)
        with RewardClient(server.target, model="bad", timeout=120) as client:  # a load traces and checks
            with pytest.raises(rc.FailedPreconditionError, match="warmup failed.*illegal memory access"):
                client.load_model()
            status = index_of(client)["bad"]
            assert status.state == "UNAVAILABLE" and "warmup failed" in status.versions[0].reason
        with RewardClient(server.target, model="good") as good:
            assert isinstance(good.get_score(CHAT_1), float)


# --- backend faults -----------------------------------------------------------------------------


class _OutOfMemoryAbove(Backend):
    """Fault injection around the real backend: batches larger than `fits` raise torch's OOM error."""

    def __init__(self, real, fits: int) -> None:
        self.real, self.fits = real, fits
        self.device, self.dtype, self.head_bias = real.device, real.dtype, real.head_bias
        self.sizes: list[int] = []

    def score_batch(self, batch):
        import torch

        self.sizes.append(len(batch))
        if len(batch) > self.fits:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate a batch of {len(batch)}")
        return self.real.score_batch(batch)

    def close(self):
        self.real.close()


def test_out_of_memory_batch_is_split_and_every_request_still_answered(tiny_checkpoint, tmp_path):
    add_model(tmp_path, "rm", tiny_checkpoint, config_text("rm", max_batch_size=8, delay_us=200_000))
    rng = random.Random(3)
    chats = [random_chat(rng) for _ in range(8)]
    with serve_repo(tmp_path) as server, RewardClient(server.target, model="rm") as client:
        alone = [client.get_score(c) for c in chats]
        batcher = server.running.repository.resolve("rm", "").instances[0]
        batcher.backend = _OutOfMemoryAbove(batcher.backend, fits=2)
        batched = client.get_scores(chats)
        assert batched == pytest.approx(alone, rel=1e-5, abs=1e-6)
        assert batcher.backend.sizes[:3] == [8, 4, 2] and batcher.stats.oom_splits >= 3


# --- metrics and logs ---------------------------------------------------------------------------


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def test_every_metric_moves_when_traffic_flows(tiny_checkpoint, tmp_path):
    add_model(tmp_path, "rm", tiny_checkpoint, config_text("rm", max_batch_size=8, delay_us=3_000_000))
    with serve_repo(tmp_path, metrics_port=0) as server, RewardClient(server.target, model="rm") as client:
        port = server.running.metrics_port
        before = scrape(port)
        held = threading.Thread(target=client.get_scores, args=([CHAT_1, CHAT_2],))
        held.start()  # its two inputs wait 3 s in the queue for companions

        def held_in_queue() -> bool:
            during = scrape(port)
            return (
                value(during, "reward_pending_requests") == 1
                and value(during, "reward_queued_inputs", model="rm", version="1") == 2
            )

        wait_until(held_in_queue, timeout=10)
        held.join(30)
        with pytest.raises(rc.InvalidArgumentError):
            client.score([[]])
        with RewardClient(server.target, model="made-up-name") as stranger, pytest.raises(rc.NotFoundError):
            stranger.get_score(CHAT_1)
        # A failed call's status can reach the client before the server's handler has counted it.
        wait_until(lambda: value(scrape(port), "reward_pending_requests") == 0, timeout=10)
        after = scrape(port)

    labels = {"model": "rm", "version": "1"}
    moved = {
        "reward_request_success_total": dict(method="Score", **labels),
        "reward_request_failure_total": dict(method="Score", code="INVALID_ARGUMENT"),
        "reward_request_duration_seconds_count": dict(method="Score", **labels),
        "reward_inference_count_total": labels,
        "reward_execution_count_total": labels,
        "reward_queue_duration_seconds_count": labels,
        "reward_queue_duration_seconds_sum": labels,
        "reward_compute_duration_seconds_count": labels,
        "reward_batch_size_count": labels,
        "reward_batch_size_sum": labels,
        "reward_batch_tokens_count": labels,
        "reward_real_tokens_total": labels,
        "reward_computed_tokens_total": labels,
    }
    for name, wanted in moved.items():
        assert value(after, name, **wanted) > value(before, name, **wanted), name
    assert (
        value(after, "reward_batch_size_sum", **labels) - value(before, "reward_batch_size_sum", **labels)
        >= 2
    )
    assert 0 < value(after, "reward_padding_efficiency", **labels) <= 1
    assert value(after, "reward_pending_requests") == 0
    assert value(after, "reward_queue_duration_seconds_sum", **labels) >= 0.5  # the held request's wait
    assert not any("made-up-name" in str(key) for key in after)  # client-chosen names add no series


def test_request_id_comes_back_in_trailing_metadata_given_or_made_up_and_errors_carry_it_too(
    tiny_checkpoint, tmp_path
):
    add_model(tmp_path, "rm", tiny_checkpoint, config_text("rm"))
    request = pb.ScoreRequest(model="rm", inputs=[conversation(CHAT_1)])
    with serve_repo(tmp_path) as server, grpc.insecure_channel(server.target) as channel:
        score = reward_pb2_grpc.RewardServiceStub(channel).Score

        def request_id(call) -> str:
            return dict(call.trailing_metadata())["x-request-id"]

        _, given = score.with_call(request, metadata=[("x-request-id", "req-7")], timeout=30)
        assert request_id(given) == "req-7"
        made_up = {request_id(score.with_call(request, timeout=30)[1]) for _ in range(3)}
        assert len(made_up) == 3 and "" not in made_up
        with pytest.raises(grpc.RpcError) as refused:
            score(
                pb.ScoreRequest(model="nope", inputs=[conversation(CHAT_1)]),
                metadata=[("x-request-id", "req-8")],
                timeout=30,
            )
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        assert request_id(refused.value) == "req-8"


def test_debug_log_has_one_line_per_request_with_its_fields(tiny_checkpoint, tmp_path, caplog):
    add_model(tmp_path, "rm", tiny_checkpoint, config_text("rm"))
    caplog.set_level(logging.DEBUG, logger="reward_server")
    with serve_repo(tmp_path, model_control_mode="explicit", load_models=("rm",)) as server:
        with RewardClient(server.target, model="rm") as client:
            client.get_scores([CHAT_1, CHAT_2], metadata=[("x-request-id", "req-42")])
            client.unload_model()
    lines = [r.getMessage() for r in caplog.records if "request_id=req-42" in r.getMessage()]
    assert len(lines) == 1
    line = lines[0]
    for field in (
        "method=Score",
        "model=rm",
        "version=1",
        "items=2",
        "tokens=",
        "queue_ms=",
        "compute_ms=",
        "status=OK",
        "total_ms=",
    ):
        assert field in line, field
    assert any(
        r.levelno == logging.INFO and r.getMessage().startswith("loaded model=rm version=1")
        for r in caplog.records
    )
    assert any(
        r.levelno == logging.INFO and "unloaded model=rm version=1" in r.getMessage() for r in caplog.records
    )
