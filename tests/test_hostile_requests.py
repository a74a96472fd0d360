"""Hostile requests through a real server: bytes that do not parse, absurd names and versions, requests
built to stall the event loop, oversize bursts. Each gets its clear status, the log stays short, other
clients are not stalled, memory comes back, and the server keeps serving."""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from helpers import CHAT_1, ServerProcess, add_model, serve_repo
from reward_api.v1 import reward_pb2 as pb
from reward_client import RewardClient

DEMO = Path(__file__).resolve().parent.parent / "model_repository"
SERVICE = pb.DESCRIPTOR.services_by_name["RewardService"]
METHODS = [m.name for m in SERVICE.methods]
TOKEN = "hostile-token"
MIB = 1024 * 1024

# Payloads that parse as no message at all (whatever the message type: the framing itself is broken).
BROKEN = {
    "random-bytes": b"\xff\xff\xff\xff\x07\x13",
    "truncated": pb.ScoreRequest(model="tiny", inputs=[pb.ScoreInput(text="hello")]).SerializeToString()[:-3],
    "huge-length": b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\x7f" + b"x" * 8,
    "invalid-utf8": b"\x0a\x02\xc3\x28",  # field 1 (a string wherever it is a field) with invalid UTF-8
}


def raw_call(
    channel: grpc.Channel, method: str, payload: bytes, metadata=None
) -> tuple[grpc.StatusCode, str, dict]:
    """(status, details, trailing metadata) of one call with `payload` as the request's bytes."""
    call = channel.unary_unary(f"/{SERVICE.full_name}/{method}")
    try:
        _, outcome = call.with_call(payload, timeout=60, metadata=metadata)
        return grpc.StatusCode.OK, "", dict(outcome.trailing_metadata() or ())
    except grpc.RpcError as error:
        return error.code(), error.details() or "", dict(error.trailing_metadata() or ())


def score_bytes(**fields) -> bytes:
    return pb.ScoreRequest(**fields).SerializeToString()


@pytest.fixture(scope="module")
def server(tiny_repo):
    with serve_repo(
        tiny_repo,
        max_items_per_request=16,
        metrics_port=0,
        model_control_mode="explicit",
        load_models=("tiny",),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.target) as ch:
        yield ch


def assert_serves(target: str, **client) -> None:
    with RewardClient(target, model="tiny", **client) as rm:
        assert isinstance(rm.get_score(CHAT_1), float)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("payload", BROKEN, ids=list(BROKEN))
def test_request_is_invalid_argument_malformed_when_its_bytes_do_not_parse(server, channel, method, payload):
    if payload == "invalid-utf8" and method in ("ListModels", "RepositoryIndex"):
        pytest.skip("their field 1 is no string (ListModels has none: an unknown field parses)")
    code, details, trailing = raw_call(channel, method, BROKEN[payload])
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.startswith("malformed request") and "Error" not in details and "class" not in details
    assert trailing.get("x-request-id")
    assert_serves(server.target)


def test_malformed_requests_log_one_short_line_without_traceback_when_many_arrive(
    tiny_checkpoint, tmp_path, caplog
):
    add_model(tmp_path, "tiny", tiny_checkpoint)
    caplog.set_level(logging.INFO, logger="reward_server")
    with serve_repo(tmp_path) as server, grpc.insecure_channel(server.target) as ch:
        for index in range(60):
            code, _, _ = raw_call(ch, METHODS[index % len(METHODS)], BROKEN["random-bytes"])
            assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert_serves(server.target)
    about = [r for r in caplog.records if r.name == "reward_server.fronts.grpc.guard"]
    assert len(about) == 1, [r.getMessage() for r in about]
    assert about[0].exc_info is None and len(about[0].getMessage()) < 200
    assert not any(r.exc_info for r in caplog.records)


def test_malformed_request_is_refused_by_auth_before_it_is_parsed_when_the_server_has_a_token(
    tiny_checkpoint, tmp_path
):
    add_model(tmp_path, "tiny", tiny_checkpoint)
    with serve_repo(tmp_path, auth_token=TOKEN) as server, grpc.insecure_channel(server.target) as ch:
        for method in METHODS:
            assert raw_call(ch, method, BROKEN["random-bytes"])[0] == grpc.StatusCode.UNAUTHENTICATED
            wrong = [("authorization", "Bearer nope")]
            assert raw_call(ch, method, BROKEN["truncated"], wrong)[0] == grpc.StatusCode.PERMISSION_DENIED
            right = [("authorization", f"Bearer {TOKEN}")]
            assert raw_call(ch, method, BROKEN["huge-length"], right)[0] == grpc.StatusCode.INVALID_ARGUMENT
        assert_serves(server.target, token=TOKEN)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("99999999999999", grpc.StatusCode.NOT_FOUND),
        ("9" * 19, grpc.StatusCode.NOT_FOUND),
        ("9" * 20, grpc.StatusCode.INVALID_ARGUMENT),
        ("9" * 5000, grpc.StatusCode.INVALID_ARGUMENT),
    ],
    ids=["14-digits", "19-digits", "20-digits", "5000-digits"],
)
def test_version_of_many_digits_is_not_found_or_invalid_argument_never_internal(
    server, channel, version, expected
):
    requests = {
        "Score": score_bytes(model="tiny", version=version, inputs=[pb.ScoreInput(text="hi")]),
        "Rank": pb.RankRequest(
            model="tiny",
            version=version,
            candidates=pb.Candidates(prompt=[pb.Message(role="user", content="hi")], responses=["a", "b"]),
        ).SerializeToString(),
        "GetModelMetadata": pb.ModelMetadataRequest(model="tiny", version=version).SerializeToString(),
    }
    for method, payload in requests.items():
        code, details, _ = raw_call(channel, method, payload)
        assert code == expected, (method, details)
        assert len(details) < 300, details


@pytest.mark.parametrize("method", ["Score", "Rank", "GetModelMetadata", "LoadModel", "UnloadModel"])
def test_huge_model_name_is_invalid_argument_and_never_echoed_when_it_is_20000_characters(
    server, channel, method
):
    name = "m" * 20_000
    request_class = {
        "Score": pb.ScoreRequest,
        "Rank": pb.RankRequest,
        "GetModelMetadata": pb.ModelMetadataRequest,
        "LoadModel": pb.LoadModelRequest,
        "UnloadModel": pb.UnloadModelRequest,
    }[method]
    code, details, trailing = raw_call(channel, method, request_class(model=name).SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "20000 characters; at most 256" in details and "mmmmmmmmmm" not in details
    assert all(len(v) < 1000 for v in trailing.values())
    code, details, _ = raw_call(
        channel, "Score", score_bytes(model="n" * 250, inputs=[pb.ScoreInput(text="hi")])
    )
    assert code == grpc.StatusCode.NOT_FOUND and len(details) < 1200  # a long but bounded name: looked up


def test_requests_refused_before_resolution_count_under_a_known_model_and_never_a_made_up_one(
    server, channel
):
    raw_call(channel, "Score", score_bytes(model="tiny", version="x", inputs=[pb.ScoreInput(text="hi")]))
    raw_call(channel, "Score", score_bytes(model="tiny", inputs=[pb.ScoreInput(text="hi")] * 17))
    raw_call(channel, "Score", score_bytes(model="made-up-model", inputs=[pb.ScoreInput(text="hi")]))
    with urllib.request.urlopen(
        f"http://127.0.0.1:{server.running.metrics_port}/metrics", timeout=10
    ) as reply:
        text = reply.read().decode()
    refused = [
        line
        for line in text.splitlines()
        if line.startswith("reward_request_failure_total{") and 'code="INVALID_ARGUMENT"' in line
    ]
    assert any(
        'model="tiny"' in line and 'version=""' in line and float(line.split()[-1]) >= 2 for line in refused
    ), refused
    assert "made-up-model" not in text
    for name in (
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
    ):
        samples = [line for line in text.splitlines() if line.startswith(name + " ")]
        assert samples and float(samples[0].split()[1]) > 0, name


class HealthProbe:
    """Health checks one after another on their own channel; the longest wait while `active`."""

    def __init__(self, target: str) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = health_pb2_grpc.HealthStub(self._channel)
        self._stub.Check(health_pb2.HealthCheckRequest(), timeout=10)  # connected before timing starts
        self.waits: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self._stub.Check(health_pb2.HealthCheckRequest(), timeout=60)
            self.waits.append(time.monotonic() - started)
            time.sleep(0.005)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)
        self._channel.close()


@pytest.fixture(scope="module")
def demo_process():
    server = ServerProcess(DEMO).wait_started()
    yield server
    server.kill()


# What a health check may wait while another client's huge request is handled: the loop stalled 2-6 s.
STALL_BOUND_S = 1.5


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            lambda: score_bytes(model="demo", inputs=[pb.ScoreInput(text="a")] * 1_000_000), id="1M-inputs"
        ),
        pytest.param(
            lambda: score_bytes(
                model="demo",
                inputs=[
                    pb.ScoreInput(
                        conversation=pb.Conversation(
                            messages=[pb.Message(role="user", content="hi")]
                            + [pb.Message(role="assistant")] * 100_000
                        )
                    )
                ],
            ),
            id="100k-empty-messages",
        ),
    ],
)
def test_health_checks_are_not_stalled_when_another_client_sends_a_huge_request(demo_process, request_bytes):
    payload = request_bytes()
    options = [("grpc.max_send_message_length", 64 * MIB)]
    with (
        grpc.insecure_channel(demo_process.target, options=options) as ch,
        HealthProbe(demo_process.target) as probe,
    ):
        time.sleep(0.2)
        started = time.monotonic()
        code, details, _ = raw_call(ch, "Score", payload)
        took = time.monotonic() - started
        time.sleep(0.1)
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), details
    assert max(probe.waits) < STALL_BOUND_S, (
        f"a health check waited {max(probe.waits):.2f} s (request: {took:.2f} s)"
    )
    assert len(probe.waits) >= took / STALL_BOUND_S  # checks kept being answered throughout
    assert_serves_demo(demo_process.target)


def assert_serves_demo(target: str) -> None:
    with RewardClient(target, model="demo") as rm:
        assert isinstance(rm.get_score(CHAT_1), float)


def test_oversize_bursts_leave_no_lasting_memory_when_repeated(demo_process):
    """Bursts of 8 MiB messages (accepted by size, refused by the character limit after parsing): each
    burst's memory is given back, so the floor does not rise burst after burst."""
    assert_serves_demo(demo_process.target)
    time.sleep(1.5)
    baseline = demo_process.memory_rss_bytes()
    payload = score_bytes(model="demo", inputs=[pb.ScoreInput(text="x" * (8 * MIB))])
    options = [("grpc.max_send_message_length", 64 * MIB)]
    growths = []
    with grpc.insecure_channel(demo_process.target, options=options) as ch:
        for _ in range(3):
            with ThreadPoolExecutor(32) as pool:
                codes = set(pool.map(lambda _: raw_call(ch, "Score", payload)[0], range(48)))
            assert codes == {grpc.StatusCode.INVALID_ARGUMENT}
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and demo_process.memory_rss_bytes() - baseline > 96 * MIB:
                time.sleep(0.25)
            growths.append(demo_process.memory_rss_bytes() - baseline)
    # Without the trim each 384 MiB burst left most of itself behind, more after each burst. Allocator
    # fragmentation keeps part of a burst, a different part each time (on a busy machine anywhere from
    # nothing to a third of a burst, flat for seconds after the trim, not growing): the bound is half a
    # burst after every burst, and the third may not sit a third of a burst above the first.
    shown = ", ".join(f"{g / MIB:.0f}" for g in growths)
    assert max(growths) < 192 * MIB, f"RSS stayed {shown} MiB above its floor after each 384 MiB burst"
    assert growths[2] < growths[0] + 128 * MIB, f"the floor rose burst after burst: {shown} MiB"
    assert_serves_demo(demo_process.target)


def test_reflection_needs_the_token_and_refuses_malformed_bytes_when_the_server_has_a_token(
    tiny_checkpoint, tmp_path
):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    add_model(tmp_path, "tiny", tiny_checkpoint)
    list_services = reflection_pb2.ServerReflectionRequest(list_services="")
    with serve_repo(tmp_path, auth_token=TOKEN) as server, grpc.insecure_channel(server.target) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        with pytest.raises(grpc.RpcError) as refused:
            next(stub.ServerReflectionInfo(iter([list_services]), timeout=30))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = next(
            stub.ServerReflectionInfo(
                iter([list_services]), timeout=30, metadata=[("authorization", f"Bearer {TOKEN}")]
            )
        )
        assert SERVICE.full_name in {s.name for s in reply.list_services_response.service}
        raw = ch.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        with pytest.raises(grpc.RpcError) as malformed:
            next(
                raw(iter([BROKEN["truncated"]]), timeout=30, metadata=[("authorization", f"Bearer {TOKEN}")])
            )
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert_serves(server.target, token=TOKEN)
