"""Triton's gRPC protocol (inference.GRPCInferenceService) through the real tritonclient, against a real
server on a loopback port: health, metadata, config, infer with every input kind, streams, statistics,
the repository extension, and the bad-tensor list (each followed by a request that still scores)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import struct
import time
from functools import partial

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from helpers import CHAT_1, CHAT_2, add_model, config_text, serve_repo
from reward_client import RewardClient
from reward_server.fronts.kserve import EXTENSIONS, encode_bytes_raw

TEXTS = ["The reward model reads this text.", "A second, longer text to score, with more words in it."]
TOKENS = [[5, 9, 13, 2, 7], [3, 4], [11, 12, 13]]


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    repo = tmp_path_factory.mktemp("kserve_repo")
    add_model(repo, "tiny", tiny_checkpoint, config_text("tiny", delay_us=2000))
    add_model(repo, "spare", tiny_checkpoint, config_text("spare"))
    with serve_repo(
        repo, model_control_mode="explicit", load_models=("tiny",), max_chars_per_message=500
    ) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with triton.InferenceServerClient(server.target) as c:
        yield c


@pytest.fixture(scope="module")
def reward(server):
    with RewardClient(server.target, model="tiny") as c:
        yield c


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.target) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _bytes_input(name: str, rows: list[str], column: bool = True) -> triton.InferInput:
    data = np.array([[r.encode()] for r in rows] if column else [r.encode() for r in rows], dtype=object)
    tensor = triton.InferInput(name, list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return tensor


def _token_inputs(rows: list[list[int]]) -> list[triton.InferInput]:
    """As NeMo-Aligner's RemoteGPTRMClient sends them: right-padded with 0, lengths [B, 1]."""
    width = max(len(r) for r in rows)
    tokens = np.array([r + [0] * (width - len(r)) for r in rows], dtype=np.int64)
    lengths = np.array([[len(r)] for r in rows], dtype=np.int64)
    inputs = [
        triton.InferInput("tokens", list(tokens.shape), "INT64"),
        triton.InferInput("sequence_lengths", list(lengths.shape), "INT64"),
    ]
    inputs[0].set_data_from_numpy(tokens)
    inputs[1].set_data_from_numpy(lengths)
    return inputs


def _assert_close(got, expected) -> None:
    assert got.shape == (len(expected), 1) and got.dtype == np.float32
    np.testing.assert_allclose(got[:, 0], expected, rtol=1e-6, atol=0)


def test_health_rpcs_answer_ready_when_the_model_is_loaded(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("tiny")
    assert client.is_model_ready("tiny", "1")
    assert not client.is_model_ready("tiny", "7")
    assert not client.is_model_ready("spare")  # in the repository, not loaded
    assert not client.is_model_ready("nope")


def test_server_metadata_lists_only_the_working_extensions_when_asked(client):
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "reward-server" and meta["version"]
    assert meta["extensions"] == list(EXTENSIONS)


def test_model_metadata_shows_the_tensor_view_when_asked(client):
    meta = client.get_model_metadata("tiny", as_json=True)
    assert meta["name"] == "tiny" and meta["versions"] == ["1"] and meta["platform"] == "pytorch"
    inputs = {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"]}
    assert inputs == {
        "sentences": ("BYTES", [-1, -1]),
        "messages": ("BYTES", [-1, 1]),
        "tokens": ("INT64", [-1, -1]),
        "sequence_lengths": ("INT64", [-1, 1]),
    }
    outputs = {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in meta["outputs"]}
    assert outputs == {
        "rewards": ("FP32", [-1, 1]),
        "num_tokens": ("INT32", [-1, 1]),
        "num_truncated_tokens": ("INT32", [-1, 1]),
    }


def test_model_config_maps_config_pbtxt_with_an_explicit_instance_kind_when_asked(client):
    config = client.get_model_config("tiny", as_json=True)["config"]
    assert config["name"] == "tiny" and config["backend"] == "pytorch" and config["max_batch_size"] == 8
    # JSON conversion drops proto3 defaults: the kind must be there, so it is not KIND_AUTO.
    assert config["instance_group"] == [{"name": "tiny_0", "kind": "KIND_CPU", "count": 1}]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == "2000"
    assert config["version_policy"] == {"latest": {"num_versions": 1}}
    # the forward serving the version, as GetModelMetadata reports it
    assert config["parameters"] == {"forward": {"string_value": "packed+traced+last-position+unmasked"}}
    assert [(i["name"], i["data_type"], i.get("optional")) for i in config["input"]] == [
        ("sentences", "TYPE_STRING", True),
        ("messages", "TYPE_STRING", True),
        ("tokens", "TYPE_INT64", True),
        ("sequence_lengths", "TYPE_INT64", True),
    ]
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == [
        ("rewards", "TYPE_FP32", ["1"]),
        ("num_tokens", "TYPE_INT32", ["1"]),
        ("num_truncated_tokens", "TYPE_INT32", ["1"]),
    ]


@pytest.mark.parametrize("rows", [TEXTS[:1], TEXTS], ids=["alone", "batch"])
def test_infer_rewards_equal_score_when_sent_as_sentences(client, reward, rows):
    result = client.infer("tiny", [_bytes_input("sentences", rows)])
    expected = reward.score(rows)
    _assert_close(result.as_numpy("rewards"), [r.score for r in expected])
    assert result.as_numpy("num_tokens")[:, 0].tolist() == [r.num_tokens for r in expected]
    assert result.as_numpy("num_truncated_tokens")[:, 0].tolist() == [0] * len(rows)
    assert result.get_response().model_version == "1"


@pytest.mark.parametrize("chats", [[CHAT_1], [CHAT_1, CHAT_2, CHAT_1]], ids=["alone", "batch"])
def test_infer_rewards_equal_score_when_sent_as_messages(client, reward, chats):
    result = client.infer("tiny", [_bytes_input("messages", [json.dumps(c) for c in chats], column=False)])
    _assert_close(result.as_numpy("rewards"), [r.score for r in reward.score(chats)])


@pytest.mark.parametrize("rows", [TOKENS[:1], TOKENS], ids=["alone", "batch"])
def test_infer_rewards_equal_score_when_sent_as_padded_tokens(client, reward, rows):
    result = client.infer("tiny", _token_inputs(rows))
    _assert_close(result.as_numpy("rewards"), [r.score for r in reward.score(rows)])
    assert result.as_numpy("num_tokens")[:, 0].tolist() == [len(r) for r in rows]


def test_infer_returns_only_the_requested_outputs_when_a_subset_is_asked(client):
    result = client.infer(
        "tiny", [_bytes_input("sentences", TEXTS)], outputs=[triton.InferRequestedOutput("num_tokens")]
    )
    assert [o.name for o in result.get_response().outputs] == ["num_tokens"]
    assert result.as_numpy("rewards") is None


@pytest.mark.parametrize(
    "names, message", [(["scores"], "unknown output 'scores'"), (["rewards", "rewards"], "requested twice")]
)
def test_infer_answers_invalid_argument_when_the_requested_outputs_are_wrong(client, names, message):
    with pytest.raises(InferenceServerException) as e:
        client.infer(
            "tiny",
            [_bytes_input("sentences", TEXTS[:1])],
            outputs=[triton.InferRequestedOutput(n) for n in names],
        )
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and message in e.value.message()


def test_infer_accepts_typed_contents_when_inputs_are_not_raw(stub, reward):
    request = pb.ModelInferRequest(model_name="tiny")
    tensor = request.inputs.add(name="tokens", datatype="INT64", shape=[1, 5])
    tensor.contents.int64_contents.extend(TOKENS[0])
    response = stub.ModelInfer(request)
    (score,) = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
    assert score == pytest.approx(reward.score([TOKENS[0]])[0].score, rel=1e-6)


def test_async_infer_scores_when_called_with_a_callback(client, reward):
    done: queue.Queue = queue.Queue()
    client.async_infer(
        "tiny", [_bytes_input("sentences", TEXTS)], callback=lambda result, error: done.put((result, error))
    )
    result, error = done.get(timeout=30)
    assert error is None
    _assert_close(result.as_numpy("rewards"), [r.score for r in reward.score(TEXTS)])


def test_stream_answers_in_order_and_goes_on_when_a_request_fails(server, reward):
    answers: queue.Queue = queue.Queue()
    with triton.InferenceServerClient(server.target) as c:
        c.start_stream(callback=partial(lambda q, result, error: q.put((result, error)), answers))
        for index, text in enumerate([TEXTS[0], "", TEXTS[1], TEXTS[0]]):  # "" is an invalid sentence
            c.async_stream_infer("tiny", [_bytes_input("sentences", [text])], request_id=str(index))
        got = [answers.get(timeout=30) for _ in range(4)]
        c.stop_stream()
    assert [result.get_response().id if result else None for result, _ in got] == ["0", None, "2", "3"]
    assert "INVALID_ARGUMENT" in str(got[1][1]) and "empty text" in str(got[1][1])
    expected = [r.score for r in reward.score([TEXTS[0], TEXTS[1], TEXTS[0]])]
    _assert_close(np.concatenate([got[i][0].as_numpy("rewards") for i in (0, 2, 3)]), expected)


def test_statistics_count_the_inferences_when_requests_are_served(client):
    def stats():
        (model,) = client.get_inference_statistics("tiny", as_json=True)["model_stats"]
        return model

    before = stats()
    client.infer("tiny", [_bytes_input("sentences", ["statistics one", "statistics two"])])
    after = stats()
    assert after["name"] == "tiny" and after["version"] == "1"
    assert int(after["inference_count"]) - int(before.get("inference_count", 0)) == 2
    assert int(after["execution_count"]) > int(before.get("execution_count", 0))
    assert int(after["last_inference"]) > 0
    infer = after["inference_stats"]
    counts = {
        k: int(infer[k].get("count", 0))
        for k in ("success", "queue", "compute_input", "compute_infer", "compute_output")
    }
    assert len(set(counts.values())) == 1 and counts["success"] == int(after["inference_count"])
    assert int(infer["compute_infer"]["ns"]) > 0 and int(infer["success"]["ns"]) >= int(
        infer["compute_infer"]["ns"]
    )
    assert sum(int(b["compute_infer"]["count"]) for b in after["batch_stats"]) == int(
        after["execution_count"]
    )
    every = client.get_inference_statistics(as_json=True)["model_stats"]
    assert [(m["name"], m["version"]) for m in every] == [("tiny", "1")]


def test_repository_rpcs_load_and_unload_when_the_mode_is_explicit(client, server):
    index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
    assert index["tiny"]["state"] == "READY" and index["tiny"]["version"] == "1"
    assert index["spare"]["state"] == "UNAVAILABLE"
    client.load_model("spare")
    assert client.is_model_ready("spare")
    assert client.infer("spare", [_bytes_input("sentences", TEXTS[:1])]).as_numpy("rewards").shape == (1, 1)
    ready = [m["name"] for m in client.get_model_repository_index(as_json=True)["models"]]
    assert ready == ["spare", "tiny"]
    client.unload_model("spare")
    assert not client.is_model_ready("spare")
    assert client.is_server_ready()  # a model unloaded by request is not one the server should serve
    client.unload_model("spare")  # as Triton: unloading an unloaded model succeeds
    with pytest.raises(InferenceServerException) as e:
        client.load_model("nope")
    assert e.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as e:
        client.load_model("tiny", config='{"max_batch_size": 4}')
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and "not supported" in e.value.message()


@pytest.mark.parametrize(
    "method", ["SystemSharedMemoryStatus", "CudaSharedMemoryRegister", "TraceSetting", "LogSettings"]
)
def test_unsupported_rpcs_answer_unimplemented_when_called(stub, method):
    request_type = {
        "SystemSharedMemoryStatus": pb.SystemSharedMemoryStatusRequest,
        "CudaSharedMemoryRegister": pb.CudaSharedMemoryRegisterRequest,
        "TraceSetting": pb.TraceSettingRequest,
        "LogSettings": pb.LogSettingsRequest,
    }[method]
    with pytest.raises(grpc.RpcError) as e:
        getattr(stub, method)(request_type())
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED and "not implemented" in e.value.details()


def _request(*tensors, raw=None, model="tiny") -> pb.ModelInferRequest:
    """tensors: (name, datatype, shape, raw bytes) each; `raw` overrides raw_input_contents."""
    request = pb.ModelInferRequest(model_name=model)
    for name, datatype, shape, _ in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.extend(raw if raw is not None else [t[3] for t in tensors])
    return request


def _int64(*values) -> bytes:
    return np.array(values, dtype="<i8").tobytes()


def _text(*rows: str | bytes) -> bytes:
    return encode_bytes_raw(rows)


BAD_TENSORS = {
    "unknown input": (_request(("prompt", "BYTES", [1, 1], _text("hi"))), "unknown input 'prompt'"),
    "two kinds": (
        _request(("sentences", "BYTES", [1, 1], _text("hi")), ("tokens", "INT64", [1, 1], _int64(3))),
        "exactly one kind",
    ),
    "no input": (_request(), "got none"),
    "wrong datatype": (
        _request(("tokens", "INT32", [1, 2], np.array([1, 2], "<i4").tobytes())),
        "'tokens': datatype INT32, expected INT64",
    ),
    "shape vs data": (_request(("tokens", "INT64", [1, 3], _int64(1, 2))), "shape [1, 3] of INT64 takes 24"),
    "raw count": (
        _request(("sentences", "BYTES", [1, 1], _text("hi")), raw=[_text("hi"), _text("x")]),
        "raw_input_contents has 2 entries for 1 inputs",
    ),
    "prefix past the end": (
        _request(("sentences", "BYTES", [1, 1], struct.pack("<I", 50) + b"short")),
        "length prefix of 50 bytes, past the end",
    ),
    "not UTF-8": (
        _request(("sentences", "BYTES", [1, 1], _text(b"\xff\xfe"))),
        "'sentences' row 0: not UTF-8",
    ),
    "messages not a list": (
        _request(("messages", "BYTES", [1, 1], _text('{"role": "user"}'))),
        "non-empty JSON list",
    ),
    "messages not JSON": (_request(("messages", "BYTES", [1, 1], _text("hello"))), "not JSON"),
    "messages nested too deeply": (
        _request(("messages", "BYTES", [1, 1], _text("[" * 100_000 + "]" * 100_000))),
        "not JSON (nested too deeply)",
    ),
    "message without content": (
        _request(("messages", "BYTES", [1], _text('[{"role": "user"}]'))),
        'string "role" and "content"',
    ),
    "unknown role": (
        _request(("messages", "BYTES", [1], _text('[{"role": "robot", "content": "x"}]'))),
        "unknown role 'robot'",
    ),
    "length zero": (
        _request(("tokens", "INT64", [1, 2], _int64(4, 5)), ("sequence_lengths", "INT64", [1, 1], _int64(0))),
        "'sequence_lengths' row 0: length 0 is outside 1..2",
    ),
    "length beyond the row": (
        _request(("tokens", "INT64", [1, 2], _int64(4, 5)), ("sequence_lengths", "INT64", [1, 1], _int64(3))),
        "length 3 is outside 1..2",
    ),
    "negative id": (_request(("tokens", "INT64", [1, 2], _int64(4, -5))), "negative token id -5"),
    "id out of vocabulary": (
        _request(("tokens", "INT64", [1, 2], _int64(4, 10**9))),
        "outside the vocabulary",
    ),
    "unknown datatype": (
        _request(("tokens", "INT128", [1, 1], b"\0" * 16)),
        "unknown or unsupported datatype",
    ),
    "too long a text": (_request(("sentences", "BYTES", [1], _text("x" * 501))), "--max-chars-per-message"),
}


@pytest.mark.parametrize("case", list(BAD_TENSORS))
def test_infer_answers_invalid_argument_and_keeps_serving_when_a_tensor_is_bad(stub, case):
    request, message = BAD_TENSORS[case]
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(request)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in e.value.details()
    good = stub.ModelInfer(_request(("sentences", "BYTES", [1, 1], _text("still scoring"))))
    assert np.isfinite(np.frombuffer(good.raw_output_contents[0], dtype="<f4")).all()


def test_infer_answers_not_found_when_the_model_is_unknown(client):
    with pytest.raises(InferenceServerException) as e:
        client.infer("nope", [_bytes_input("sentences", TEXTS[:1])])
    assert e.value.status() == "StatusCode.NOT_FOUND"


def test_auth_guards_every_kserve_rpc_when_the_server_has_a_token(tiny_checkpoint, tmp_path):
    add_model(tmp_path, "tiny", tiny_checkpoint)
    with serve_repo(tmp_path, auth_token="s3cret") as s:
        with triton.InferenceServerClient(s.target) as c:
            with pytest.raises(InferenceServerException) as e:
                c.infer("tiny", [_bytes_input("sentences", TEXTS[:1])])
            assert e.value.status() == "StatusCode.UNAUTHENTICATED"
            with pytest.raises(InferenceServerException) as e:
                c.get_model_metadata("tiny", headers={"authorization": "Bearer wrong"})
            assert e.value.status() == "StatusCode.PERMISSION_DENIED"
            good = {"authorization": "Bearer s3cret"}
            assert c.infer("tiny", [_bytes_input("sentences", TEXTS[:1])], headers=good).as_numpy(
                "rewards"
            ).shape == (1, 1)
            answers: queue.Queue = queue.Queue()
            c.start_stream(callback=partial(lambda q, result, error: q.put((result, error)), answers))
            # The guard refuses a stream without the token as a whole, before it reads a request: the
            # client may hear of it before or after it sends one.
            with contextlib.suppress(InferenceServerException):
                c.async_stream_infer("tiny", [_bytes_input("sentences", TEXTS[:1])])
            result, error = answers.get(timeout=30)
            with contextlib.suppress(InferenceServerException):
                c.stop_stream()
            assert result is None and "UNAUTHENTICATED" in str(error)


def test_server_ready_turns_false_when_the_server_drains(tiny_checkpoint, tmp_path):
    add_model(tmp_path, "tiny", tiny_checkpoint)
    with serve_repo(tmp_path) as s, triton.InferenceServerClient(s.target) as c:
        assert c.is_server_ready() and c.is_model_ready("tiny")
        # The port stays open while calls keep coming during the drain (RewardServer.stop's quiet window).
        # quiet_s wide: a busy machine may leave a second between two of this test's calls
        drain = asyncio.run_coroutine_threadsafe(s.running.stop(grace=10, quiet_s=3.0), s.loop)
        deadline = time.monotonic() + 30
        while c.is_server_ready() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not c.is_server_ready() and not c.is_model_ready("tiny")
        with pytest.raises(InferenceServerException) as e:
            c.infer("tiny", [_bytes_input("sentences", TEXTS[:1])])
        assert e.value.status() == "StatusCode.UNAVAILABLE"
        drain.result(30)


def test_pytriton_client_scores_over_grpc_when_sent_as_nemo_aligner_does(server, reward):
    # PyTriton's client parses ModelConfig (an instance kind must be present) before it sends anything.
    client_module = pytest.importorskip("pytriton.client")
    width = max(len(r) for r in TOKENS)
    tokens = np.array([r + [0] * (width - len(r)) for r in TOKENS], dtype=np.int64)
    lengths = np.array([[len(r)] for r in TOKENS], dtype=np.int64)
    expected = [r.score for r in reward.score(TOKENS)]
    with client_module.ModelClient(f"grpc://{server.target}", "tiny", init_timeout_s=60) as c:
        _assert_close(c.infer_batch(tokens=tokens, sequence_lengths=lengths)["rewards"], expected)
        sentences = c.infer_batch(sentences=np.array([[t.encode()] for t in TEXTS]))["rewards"]
    _assert_close(sentences, [r.score for r in reward.score(TEXTS)])
    with client_module.FuturesModelClient(f"grpc://{server.target}", "tiny") as futures:
        _assert_close(
            futures.infer_batch(tokens=tokens, sequence_lengths=lengths).result(60)["rewards"], expected
        )
