"""KServe v2 REST on the HTTP port, through Triton's own client (tritonclient.http) and raw HTTP: health,
metadata, config, infer in JSON and in the binary tensor extension with each input kind, statistics,
the repository extension, bad tensors and bodies, limits, request ids, metrics, auth, TLS and drain.
Every reward is compared with RewardClient's (gRPC Score) for the same input."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import ssl
import struct
import time

import numpy as np
import pytest
import tritonclient.http as tc
import tritonclient.http.aio as tc_aio
from tritonclient.utils import InferenceServerException

from helpers import CHAT_1, CHAT_2, ServerProcess, add_model, close, serve_repo
from reward_client import RewardClient

TEXTS = ["hello world", "a longer text for the reward model to read, 你好 😀"]
CHATS = [CHAT_1, CHAT_2]
TOKENS = [[5, 6, 7], [8, 9, 10, 11, 12, 13]]
TOKEN = "an-http-token"


@pytest.fixture(scope="module")
def server(tiny_repo):
    with serve_repo(
        tiny_repo,
        http_port=0,
        max_items_per_request=64,
        max_chars_per_message=2000,
        max_message_bytes=256 * 1024,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def url(server) -> str:
    return f"127.0.0.1:{server.server.http.port}"


@pytest.fixture(scope="module")
def client(url):
    with tc.InferenceServerClient(url) as c:
        yield c


@pytest.fixture(scope="module")
def rm(server):
    with RewardClient(server.target, model="tiny") as c:
        yield c


def post(url: str, path: str, body: bytes, headers: dict | None = None, method: str = "POST"):
    """(status, headers, body) of one raw HTTP request."""
    host, port = url.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def bytes_input(name: str, rows: list, binary: bool) -> tc.InferInput:
    array = np.array([[r.encode() if isinstance(r, str) else r] for r in rows], dtype=object)
    tensor = tc.InferInput(name, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def token_inputs(rows: list[list[int]], binary: bool) -> list[tc.InferInput]:
    """Right-padded with 0 and each row's length, as NeMo-Aligner's RemoteGPTRMClient sends them."""
    width = max(len(r) for r in rows)
    tokens = np.array([r + [0] * (width - len(r)) for r in rows], dtype=np.int64)
    lengths = np.array([[len(r)] for r in rows], dtype=np.int64)
    out = [
        tc.InferInput("tokens", list(tokens.shape), "INT64"),
        tc.InferInput("sequence_lengths", [len(rows), 1], "INT64"),
    ]
    out[0].set_data_from_numpy(tokens, binary_data=binary)
    out[1].set_data_from_numpy(lengths, binary_data=binary)
    return out


def kind_inputs(kind: str, count: int, binary: bool) -> tuple[list[tc.InferInput], list]:
    """(the tensors of the first `count` inputs of a kind, the same inputs as RewardClient takes them)."""
    if kind == "sentences":
        return [bytes_input("sentences", TEXTS[:count], binary)], TEXTS[:count]
    if kind == "messages":
        return [bytes_input("messages", [json.dumps(c) for c in CHATS[:count]], binary)], CHATS[:count]
    return token_inputs(TOKENS[:count], binary), TOKENS[:count]


def test_http_health_and_metadata_answer_when_a_model_is_served(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1")
    assert not client.is_model_ready("nope") and not client.is_model_ready("tiny", "7")
    meta = client.get_server_metadata()
    assert meta["name"] == "reward-server" and "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata("tiny")
    assert model["versions"] == ["1"] and {t["name"] for t in model["inputs"]} == {
        "sentences",
        "messages",
        "tokens",
        "sequence_lengths",
    }
    assert client.get_model_metadata("tiny", "1") == model
    config = client.get_model_config("tiny")
    assert config["name"] == "tiny" and config["max_batch_size"] == 8
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    assert config["parameters"] == {"forward": {"string_value": "packed+traced+last-position+unmasked"}}
    with pytest.raises(InferenceServerException, match="unknown model") as e:
        client.get_model_metadata("nope")
    assert e.value.status() == "404"


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("kind", ["sentences", "messages", "tokens"])
def test_http_infer_matches_reward_client_when_each_input_kind_is_sent(client, rm, kind, binary):
    for count in (1, 2):
        inputs, same = kind_inputs(kind, count, binary)
        outputs = [tc.InferRequestedOutput(n, binary_data=binary) for n in ("rewards", "num_tokens")]
        result = client.infer("tiny", inputs, outputs=outputs, request_id="r-1")
        expected = rm.score(same)
        rewards, tokens = result.as_numpy("rewards"), result.as_numpy("num_tokens")
        assert rewards.shape == (count, 1) and rewards.dtype == np.float32 and tokens.dtype == np.int32
        assert all(close(r, e.score) for r, e in zip(rewards[:, 0], expected))
        assert [int(t) for t in tokens[:, 0]] == [e.num_tokens for e in expected]
        response = result.get_response()
        assert (
            response["model_name"] == "tiny" and response["model_version"] == "1" and response["id"] == "r-1"
        )
        assert ("binary_data_size" in response["outputs"][0].get("parameters", {})) == binary


def test_http_infer_returns_every_output_in_binary_when_none_is_named(client, rm):
    result = client.infer("tiny", [bytes_input("sentences", TEXTS, binary=True)], model_version="1")
    assert [o["name"] for o in result.get_response()["outputs"]] == [
        "rewards",
        "num_tokens",
        "num_truncated_tokens",
    ]
    assert all(close(r, e.score) for r, e in zip(result.as_numpy("rewards")[:, 0], rm.score(TEXTS)))
    assert result.as_numpy("num_truncated_tokens").tolist() == [[0], [0]]


def test_http_infer_returns_the_subset_in_order_when_outputs_are_named(client):
    outputs = [tc.InferRequestedOutput("num_tokens", binary_data=False), tc.InferRequestedOutput("rewards")]
    result = client.infer("tiny", [bytes_input("sentences", TEXTS[:1], binary=False)], outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["num_tokens", "rewards"]
    assert "data" in result.get_response()["outputs"][0]  # its own binary_data=False wins


def test_http_infer_accepts_gzip_bodies_and_answers_compressed_when_asked(url, client, rm):
    result = client.infer(
        "tiny",
        [bytes_input("sentences", TEXTS, binary=True)],
        request_compression_algorithm="gzip",
        response_compression_algorithm="deflate",
    )
    assert all(close(r, e.score) for r, e in zip(result.as_numpy("rewards")[:, 0], rm.score(TEXTS)))
    rows = [f"row {i}" for i in range(40)]
    status, headers, body = post(
        url, "/v2/models/tiny/infer", _json_infer([_s(rows)]), {"Accept-Encoding": "gzip"}
    )
    assert status == 200 and headers.get("Content-Encoding") == "gzip"
    rewards = json.loads(gzip.decompress(body))["outputs"][0]["data"]
    assert all(close(r, e.score) for r, e in zip(rewards, rm.score(rows)))
    _, headers, _ = post(
        url, "/v2/models/tiny/infer", _json_infer([_s(rows[:1])]), {"Accept-Encoding": "gzip"}
    )
    assert "Content-Encoding" not in headers  # under a KiB: not worth compressing


def test_http_async_infer_scores_each_request_when_many_are_in_flight(url, client, rm):
    expected = rm.score(TEXTS)
    pending = [
        client.async_infer("tiny", [bytes_input("sentences", [TEXTS[i % 2]], binary=i % 3 == 0)])
        for i in range(16)
    ]
    for i, request in enumerate(pending):
        assert close(request.get_result(timeout=60).as_numpy("rewards")[0, 0], expected[i % 2].score)

    async def aio() -> list[float]:
        async with tc_aio.InferenceServerClient(url) as c:
            results = await asyncio.gather(
                *(c.infer("tiny", [bytes_input("sentences", [t], binary=True)]) for t in TEXTS * 4)
            )
        return [float(r.as_numpy("rewards")[0, 0]) for r in results]

    assert all(close(r, expected[i % 2].score) for i, r in enumerate(asyncio.run(aio())))


def test_http_statistics_count_inferences_when_traffic_flows(client):
    def counts() -> tuple[int, int]:
        stats = client.get_inference_statistics("tiny")["model_stats"]
        assert [s["version"] for s in stats] == ["1"]
        return stats[0]["inference_count"], stats[0]["inference_stats"]["success"]["count"]

    before = counts()
    client.infer("tiny", [bytes_input("sentences", ["statistics " + str(time.monotonic())], binary=True)])
    after = counts()
    assert after[0] == before[0] + 1 and after[1] == before[1] + 1
    assert client.get_inference_statistics()["model_stats"][0]["name"] == "tiny"
    assert client.get_inference_statistics("tiny", "1")["model_stats"][0]["version"] == "1"


def test_http_repository_load_and_unload_change_readiness_when_mode_is_explicit(tiny_checkpoint, tmp_path):
    add_model(tmp_path, "tiny", tiny_checkpoint)
    add_model(tmp_path, "spare", tiny_checkpoint)
    with serve_repo(tmp_path, http_port=0, model_control_mode="explicit", load_models=("tiny",)) as running:
        with tc.InferenceServerClient(f"127.0.0.1:{running.server.http.port}") as c:
            index = {m["name"]: m for m in c.get_model_repository_index()}
            assert index["tiny"]["state"] == "READY" and "spare" in index and not c.is_model_ready("spare")
            c.load_model("spare")
            assert c.is_model_ready("spare")
            assert c.infer("spare", [bytes_input("sentences", TEXTS[:1], binary=True)]).as_numpy(
                "rewards"
            ).shape == (1, 1)
            c.unload_model("spare")
            assert not c.is_model_ready("spare") and c.is_model_ready("tiny")
            with pytest.raises(InferenceServerException, match="not supported") as e:
                c.load_model("spare", config="{}")
            assert e.value.status() == "400"


def test_http_repository_load_is_refused_when_mode_is_none(client):
    with pytest.raises(InferenceServerException) as e:
        client.load_model("tiny")
    assert e.value.status() == "400"


def _json_infer(inputs: list, outputs: list | None = None) -> bytes:
    return json.dumps({"inputs": inputs, **({"outputs": outputs} if outputs else {})}).encode()


def _binary_infer(inputs: list, raw: bytes) -> tuple[bytes, dict]:
    header = json.dumps({"inputs": inputs}).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


def _bytes_raw(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def _s(data, shape=None, datatype="BYTES", name="sentences"):
    return {"name": name, "datatype": datatype, "shape": shape or [len(data), 1], "data": data}


def _raw(size, shape, datatype="BYTES", name="sentences"):
    return {"name": name, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}}


# (body, headers, a fragment of the error message), each answered 400.
BAD_REQUESTS = {
    "not json": (b"{not json", {}, "not valid JSON"),
    "not an object": (b"[1, 2]", {}, "must be a JSON object"),
    "nested too deeply": (b"[" * 100_000 + b"]" * 100_000, {}, "nested too deeply"),
    "no inputs": (b'{"inputs": []}', {}, "non-empty 'inputs'"),
    "unknown input": (_json_infer([_s(["x"], name="texts")]), {}, "unknown input 'texts'"),
    "two kinds": (
        _json_infer([_s(["x"]), _s(['[{"role": "user", "content": "x"}]'], name="messages")]),
        {},
        "exactly one kind",
    ),
    "wrong datatype": (_json_infer([_s([1], datatype="INT64")]), {}, "datatype INT64, expected BYTES"),
    "unknown datatype": (_json_infer([_s(["x"], datatype="STRING")]), {}, "unknown datatype"),
    "shape vs data": (_json_infer([_s(["x", "y"], shape=[3, 1])]), {}, "has 3 elements but 'data' has 2"),
    "string for int": (
        _json_infer([_s([["5", "6"]], shape=[1, 2], datatype="INT64", name="tokens")]),
        {},
        "must hold only integers",
    ),
    "float for int": (
        _json_infer([_s([[5.5, 6]], shape=[1, 2], datatype="INT64", name="tokens")]),
        {},
        "must hold only integers",
    ),
    "bad messages row": (
        _json_infer([_s(['{"role": "user"}'], name="messages")]),
        {},
        "input 'messages' row 0",
    ),
    "unknown role": (
        _json_infer([_s(['[{"role": "robot", "content": "x"}]'], name="messages")]),
        {},
        "unknown role",
    ),
    "length beyond row": (
        _json_infer(
            [
                _s([[5, 6]], shape=[1, 2], datatype="INT64", name="tokens"),
                _s([[3]], shape=[1, 1], datatype="INT64", name="sequence_lengths"),
            ]
        ),
        {},
        "outside 1..2",
    ),
    "length zero": (
        _json_infer(
            [
                _s([[5, 6]], shape=[1, 2], datatype="INT64", name="tokens"),
                _s([[0]], shape=[1, 1], datatype="INT64", name="sequence_lengths"),
            ]
        ),
        {},
        "outside 1..2",
    ),
    "negative id": (
        _json_infer([_s([[5, -6]], shape=[1, 2], datatype="INT64", name="tokens")]),
        {},
        "negative token id",
    ),
    "id beyond int64": (
        _json_infer([_s([[5, 10**30]], shape=[1, 2], datatype="INT64", name="tokens")]),
        {},
        "values are not INT64",
    ),
    "out of vocabulary id": (
        _json_infer([_s([[5, 10**9]], shape=[1, 2], datatype="INT64", name="tokens")]),
        {},
        "vocab",
    ),
    "unknown output": (_json_infer([_s(["x"])], [{"name": "logits"}]), {}, "unknown output 'logits'"),
    "empty text": (_json_infer([_s([""])]), {}, "empty text"),
    "binary past the end": (
        *_binary_infer([_raw(50, [1, 1])], _bytes_raw(b"abc")),
        "runs past the binary data",
    ),
    "length prefix past the buffer": (
        *_binary_infer([_raw(7, [1, 1])], struct.pack("<I", 100) + b"abc"),
        "length prefix of 100 bytes",
    ),
    "non utf-8": (*_binary_infer([_raw(6, [1, 1])], _bytes_raw(b"\xff\xfe")), "not UTF-8"),
    "raw size vs shape": (
        *_binary_infer([_raw(12, [1, 2], "INT64", "tokens")], struct.pack("<3i", 1, 2, 3)),
        "takes 16",
    ),
    "unclaimed binary": (*_binary_infer([_s(["x"])], b"extra"), "no input claims"),
    "header length past body": (
        b'{"inputs": []}',
        {"Inference-Header-Content-Length": "999"},
        "but the body has",
    ),
    "header length not a number": (
        b'{"inputs": []}',
        {"Inference-Header-Content-Length": "ten"},
        "must be an integer",
    ),
    "too many items": (_json_infer([_s(["x"] * 65)]), {}, "at most 64"),
    "too many characters": (_json_infer([_s(["x" * 2001])]), {}, "2001 characters; at most 2000 are allowed"),
    "too many characters in a message": (
        _json_infer([_s([json.dumps([{"role": "user", "content": "é" * 2001}])], name="messages")]),
        {},
        "2001 characters; at most 2000 are allowed",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_http_infer_is_400_naming_the_problem_and_the_server_keeps_serving_when_the_request_is_bad(
    url, rm, case
):
    body, headers, fragment = BAD_REQUESTS[case]
    status, _, answer = post(url, "/v2/models/tiny/infer", body, headers)
    assert status == 400, answer
    assert fragment in json.loads(answer)["error"]
    status, _, answer = post(url, "/v2/models/tiny/infer", _json_infer([_s(["hello world"])]))
    assert status == 200 and close(
        json.loads(answer)["outputs"][0]["data"][0], rm.score(["hello world"])[0].score
    )


def test_http_bad_tensor_through_tritonclient_is_400_when_sent_json_or_binary(client):
    for binary in (False, True):
        tokens = tc.InferInput("tokens", [1, 2], "INT32")
        tokens.set_data_from_numpy(np.array([[5, 6]], dtype=np.int32), binary_data=binary)
        with pytest.raises(InferenceServerException, match="datatype INT32, expected INT64") as e:
            client.infer("tiny", [tokens])
        assert e.value.status() == "400"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/v2/models/nope/infer", 404),
        ("POST", "/v2/models/tiny/versions/9/infer", 404),
        ("POST", "/v2/models/tiny/versions/x/infer", 400),
        ("GET", "/v2/models/tiny/infer", 405),
        ("GET", "/v2/nothing/here", 404),
    ],
)
def test_http_error_status_and_json_body_when_route_model_or_version_is_wrong(url, method, path, status):
    got, headers, answer = post(
        url, path, _json_infer([_s(["x"])]) if method == "POST" else b"", method=method
    )
    assert got == status and json.loads(answer)["error"]
    assert headers["x-request-id"]


def test_http_body_over_the_size_limit_is_413_when_it_is_huge(url, rm):
    body = _json_infer([_s(["x" * 1000] * 300)])  # > 256 KiB
    status, _, answer = post(url, "/v2/models/tiny/infer", body)
    assert status == 413 and "error" in json.loads(answer)
    gzipped = gzip.compress(body)  # small on the wire, too large once inflated
    status, _, _ = post(url, "/v2/models/tiny/infer", gzipped, {"Content-Encoding": "gzip"})
    assert status == 413
    assert close(
        json.loads(post(url, "/v2/models/tiny/infer", _json_infer([_s(["ok"])]))[2])["outputs"][0]["data"][0],
        rm.score(["ok"])[0].score,
    )


def test_http_infer_is_504_when_the_triton_timeout_passes_before_compute(url, rm):
    body = json.dumps({"inputs": [_s(["deadline"])], "parameters": {"timeout": 1}}).encode()  # 1 microsecond
    status, _, answer = post(url, "/v2/models/tiny/infer", body)
    assert status == 504 and json.loads(answer)["error"]
    body = json.dumps({"inputs": [_s(["deadline"])], "parameters": {"timeout": 60_000_000}}).encode()
    status, _, answer = post(url, "/v2/models/tiny/infer", body)
    assert status == 200 and close(
        json.loads(answer)["outputs"][0]["data"][0], rm.score(["deadline"])[0].score
    )


def test_http_request_id_is_echoed_or_made_when_the_header_is_absent(url):
    _, headers, _ = post(url, "/v2/models/tiny/infer", _json_infer([_s(["x"])]), {"x-request-id": "abc-123"})
    assert headers["x-request-id"] == "abc-123"
    _, first, _ = post(url, "/v2", b"", method="GET")
    _, second, _ = post(url, "/v2", b"", method="GET")
    assert first["x-request-id"] and first["x-request-id"] != second["x-request-id"]


def test_http_metrics_count_http_requests_by_method_when_served_on_the_http_port(url):
    post(url, "/v2/models/tiny/infer", _json_infer([_s(["metrics"])]))
    post(url, "/v2/models/tiny/infer", b"{bad")
    status, headers, text = post(url, "/metrics", b"", method="GET")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    body = text.decode()
    assert 'reward_request_success_total{method="http:ModelInfer",model="tiny",version="1"}' in body
    assert 'method="http:ModelInfer",model="",version=""' in body and 'code="INVALID_ARGUMENT"' in body


def test_http_draining_server_answers_503_and_not_ready_when_stopping(tiny_repo):
    running = serve_repo(tiny_repo, http_port=0)
    url = f"127.0.0.1:{running.server.http.port}"
    assert (
        post(url, "/v2", b"", method="GET")[0] == 200
    )  # a recent call: the drain keeps the port open quiet_s
    # quiet_s wide: a busy machine may leave seconds between two of this test's calls
    stopping = asyncio.run_coroutine_threadsafe(running.server.stop(10.0, quiet_s=3.0), running.loop)
    try:
        deadline = time.monotonic() + 30
        while (answer := post(url, "/v2/models/tiny/infer", _json_infer([_s(["x"])])))[0] == 200:
            assert time.monotonic() < deadline
        status, _, body = answer
        assert status == 503 and "shutting down" in json.loads(body)["error"]
        assert post(url, "/v2/health/ready", b"", method="GET")[0] == 503
        assert post(url, "/v2/health/live", b"", method="GET")[0] == 200
    finally:
        stopping.result(30)
        running.loop.call_soon_threadsafe(running.loop.stop)
    with pytest.raises(OSError):
        post(url, "/v2/health/live", b"", method="GET")


def _https(
    port: int, path: str, context: ssl.SSLContext, headers: dict | None = None, body: bytes | None = None
):
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    try:
        connection.request("POST" if body is not None else "GET", path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_http_tls_and_token_admit_the_right_credentials_and_refuse_the_wrong_ones(tiny_repo, pki, rm):
    with serve_repo(
        tiny_repo, http_port=0, tls_cert=pki["server"].cert, tls_key=pki["server"].key, auth_token=TOKEN
    ) as running:
        port = running.server.http.port
        context = ssl.create_default_context(cafile=str(pki["server_ca"]))
        # Health is open without a token; everything else needs it.
        assert _https(port, "/v2/health/ready", context)[0] == 200
        assert _https(port, "/v2/models/tiny/ready", context)[0] == 200
        body = _json_infer([_s(["hello world"])])
        status, answer = _https(port, "/v2/models/tiny/infer", context, body=body)
        assert status == 401 and "Bearer" in json.loads(answer)["error"]
        status, _ = _https(port, "/v2/models/tiny/infer", context, {"Authorization": "Bearer wrong"}, body)
        assert status == 403
        assert _https(port, "/metrics", context)[0] == 401
        status, answer = _https(
            port, "/v2/models/tiny/infer", context, {"Authorization": f"Bearer {TOKEN}"}, body
        )
        assert status == 200 and close(
            json.loads(answer)["outputs"][0]["data"][0], rm.score(["hello world"])[0].score
        )
        # tritonclient over TLS with the token
        with tc.InferenceServerClient(
            f"127.0.0.1:{port}", ssl=True, ssl_options={"ca_certs": str(pki["server_ca"])}
        ) as c:
            with pytest.raises(InferenceServerException) as e:
                c.get_model_metadata("tiny")
            assert e.value.status() == "401"
            assert (
                c.get_model_metadata("tiny", headers={"Authorization": f"Bearer {TOKEN}"})["name"] == "tiny"
            )
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            post(f"127.0.0.1:{port}", "/v2/health/live", b"", method="GET")  # plaintext to the TLS port
        untrusting = ssl.create_default_context()  # the system CAs: not ours
        with pytest.raises(ssl.SSLError):
            _https(port, "/v2/health/live", untrusting)


def test_http_mutual_tls_admits_a_client_certificate_of_the_ca_and_refuses_none(tiny_repo, pki):
    with serve_repo(
        tiny_repo,
        http_port=0,
        tls_cert=pki["server"].cert,
        tls_key=pki["server"].key,
        tls_client_ca=pki["client_ca"],
    ) as running:
        port = running.server.http.port
        context = ssl.create_default_context(cafile=str(pki["server_ca"]))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _https(port, "/v2/health/live", context)
        context.load_cert_chain(str(pki["client"].cert), str(pki["client"].key))
        assert _https(port, "/v2/health/live", context)[0] == 200


def test_build_server_refuses_to_start_when_the_http_port_is_taken(tiny_repo):
    import socket

    from reward_server.server import StartupError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(StartupError, match=f"cannot serve HTTP on port {taken.getsockname()[1]}"):
            serve_repo(tiny_repo, http_port=taken.getsockname()[1])


def test_http_package_imports_first_when_nothing_else_is_loaded():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "import reward_server.fronts.http"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_serve_command_serves_http_on_the_port_it_logs_when_http_port_is_0(tiny_repo):
    import re

    server = ServerProcess(tiny_repo, "--http-port", "0").wait_started()
    try:
        deadline = time.monotonic() + 30
        while not (found := re.search(r"KServe v2 HTTP on 127\.0\.0\.1:(\d+)", server.log())):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        url = f"127.0.0.1:{found.group(1)}"
        with tc.InferenceServerClient(url) as c:
            assert c.is_server_ready()
            assert c.infer("tiny", [bytes_input("sentences", TEXTS[:1], binary=True)]).as_numpy(
                "rewards"
            ).shape == (1, 1)
        server.terminate()
        assert server.wait_exit(60) == 0
    finally:
        server.kill()
