"""The fast paths of the KServe tensor view against the general ones they stand in for: one BYTES element
read without the loop, JSON scanned without json.loads's wrapping, raw outputs packed with `array`, and the
gRPC response built from a cached template of its output descriptions. Each must give the same values,
the same bytes and the same errors as the general path, edge cases included."""

from __future__ import annotations

import json
import struct
import sys
from itertools import permutations

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2 as pb

from reward_server.datatypes import Conversation, Message, ScoreResult, Text
from reward_server.errors import InvalidArgument
from reward_server.fronts.kserve import grpc_front, tensors
from reward_server.fronts.kserve.service import InferResults
from reward_server.fronts.kserve.tensors import (
    OUTPUTS,
    InferTensor,
    decode_bytes_raw,
    encode_bytes_raw,
    output_names,
    output_raw,
    request_inputs,
    result_tensors,
    tensor_from_contents,
    tensor_from_raw,
    tensor_raw,
)

# Buffers of one BYTES element: well formed (empty, ASCII, non-ASCII, not UTF-8) and malformed (prefix
# past the end, bytes left after the element, shorter than a prefix).
ONE_ELEMENT = {
    "empty string": encode_bytes_raw([b""]),
    "ascii": encode_bytes_raw(["hello"]),
    "non-ascii": encode_bytes_raw(["héllo wörld 😀 你好"]),
    "not utf-8": encode_bytes_raw([b"\xff\xfe\x00"]),
    "prefix past the end": struct.pack("<I", 50) + b"short",
    "prefix one past the end": struct.pack("<I", 6) + b"short",
    "bytes after the element": struct.pack("<I", 2) + b"short",
    "two elements for one": encode_bytes_raw(["a", "b"]),
    "no bytes": b"",
    "part of a prefix": b"\x01\x00",
    "prefix only, nonzero": struct.pack("<I", 1),
    "huge prefix": struct.pack("<I", 2**32 - 1) + b"x",
}


def _outcome(call, *args):
    """(result, None) or (None, the InvalidArgument's message)."""
    try:
        return call(*args), None
    except InvalidArgument as e:
        return None, str(e)


@pytest.mark.parametrize("case", list(ONE_ELEMENT))
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_decode_bytes_raw_matches_the_general_loop_when_the_tensor_has_one_element(case, kind):
    buf = kind(ONE_ELEMENT[case])
    fast = _outcome(decode_bytes_raw, buf, 1, "messages")
    general = _outcome(tensors._bytes_elements, buf, 1, "messages")
    assert fast == general
    items, error = fast
    assert error is not None or all(type(item) is bytes for item in items)


@pytest.mark.parametrize("count", [0, 2, 3])
@pytest.mark.parametrize("case", list(ONE_ELEMENT))
def test_decode_bytes_raw_takes_the_general_loop_when_the_count_is_not_one(case, count):
    buf = ONE_ELEMENT[case]
    assert _outcome(decode_bytes_raw, buf, count, "") == _outcome(tensors._bytes_elements, buf, count, "")


def test_decode_bytes_raw_names_the_tensor_in_the_same_errors_when_its_one_element_is_truncated():
    with pytest.raises(InvalidArgument, match="tensor 'messages': element 0 has a length prefix of 50"):
        decode_bytes_raw(ONE_ELEMENT["prefix past the end"], 1, "messages")
    with pytest.raises(InvalidArgument, match="BYTES tensor: raw data ends before element 0 of 1"):
        decode_bytes_raw(b"\x01", 1)
    with pytest.raises(InvalidArgument, match="3 bytes of raw data after the 1 elements"):
        decode_bytes_raw(ONE_ELEMENT["bytes after the element"], 1, "sentences")


@pytest.mark.parametrize(
    "rows",
    [[b""], ["héllo 😀".encode()], [b"\xff"], [b"a", b"", "ü".encode()]],
    ids=["empty", "non-ascii", "not-utf8", "three"],
)
@pytest.mark.parametrize("column", [True, False])
def test_decode_inputs_gives_tritonclients_elements_when_built_by_infer_input(rows, column):
    data = np.array([[r] for r in rows] if column else rows, dtype=object)
    given = triton.InferInput("sentences", list(data.shape), "BYTES")
    given.set_data_from_numpy(data)
    request = pb.ModelInferRequest(model_name="tiny")
    request.inputs.extend([given._get_tensor()])
    request.raw_input_contents.append(given._get_content())
    (tensor,) = grpc_front.decode_inputs(request)
    assert (tensor.name, tensor.datatype, tensor.shape) == ("sentences", "BYTES", data.shape)
    assert tensor.data.dtype == object and list(tensor.data) == rows


# Texts for the JSON scan: documents, whitespace around them, BOM, trailing data, broken documents,
# escapes, lone surrogates, non-finite numbers, and what is not a list of messages.
JSON_TEXTS = [
    '[{"role": "user", "content": "hi"}]',
    ' [{"role": "user", "content": "hi"}]',
    '[{"role": "user", "content": "hi"}] \n',
    "\t[]\r\n",
    "\ufeff[]",
    "[] []",
    "[]x",
    "[1,",
    "",
    "   ",
    "hello",
    '"\\ud800"',
    '["\\u00e9\\n", "😀"]',
    "[NaN, Infinity, -Infinity, 1e999]",
    '{"role": "user"}',
    '{"a": 1, "a": 2}',
    "[" * 50 + "]" * 50,
    "[" * 50,
]


def _json_outcome(parse, text):
    try:
        return "ok", parse(text)
    except ValueError as e:
        return type(e).__name__, str(e)


@pytest.mark.parametrize("text", JSON_TEXTS)
def test_json_scan_matches_json_loads_when_the_text_is_any_of_the_edge_cases(text):
    fast, general = _json_outcome(tensors._json, text), _json_outcome(json.loads, text)
    if fast[0] == "ok" and isinstance(fast[1], list) and fast[1] and fast[1][0] != fast[1][0]:
        assert general[0] == "ok" and str(fast[1]) == str(general[1])  # NaN != NaN: compare as text
    else:
        assert fast == general


def test_json_scan_raises_recursion_error_as_json_loads_does_when_the_nesting_is_too_deep():
    text = "[" * (sys.getrecursionlimit() * 10) + "]" * (sys.getrecursionlimit() * 10)
    with pytest.raises(RecursionError):
        json.loads(text)
    with pytest.raises(RecursionError):
        tensors._json(text)


def _messages(*rows: bytes, shape=None) -> InferTensor:
    return tensor_from_raw("messages", "BYTES", shape or (len(rows), 1), encode_bytes_raw(rows))


CONVERSATION_ERRORS = {
    b"[]": 'input \'messages\' row 0: expected a non-empty JSON list of {"role", "content"} objects',
    b" [1": "input 'messages' row 0: not JSON (Expecting ',' delimiter: line 1 column 4 (char 3))",
    b'[{"role": "user", "content": "a"}, 3]': (
        'input \'messages\' row 0 message 1: expected an object with string "role" and "content"'
    ),
    b'[{"role": "user", "content": 3}]': (
        'input \'messages\' row 0 message 0: expected an object with string "role" and "content"'
    ),
    b'[{"content": "x"}]': (
        'input \'messages\' row 0 message 0: expected an object with string "role" and "content"'
    ),
    b'[{"role": "robot", "content": "x"}]': (
        "input 'messages' row 0 message 0: unknown role 'robot' (expected one of system, user, assistant)"
    ),
    b'[{"role": "system", "content": ""}]': (
        "input 'messages' row 0 message 0: empty content in a system message"
    ),
    b"\xef\xbb\xbf[]": (
        "input 'messages' row 0: not JSON (Unexpected UTF-8 BOM (decode using utf-8-sig): "
        "line 1 column 1 (char 0))"
    ),
}


@pytest.mark.parametrize("row", list(CONVERSATION_ERRORS))
def test_request_inputs_names_the_row_and_message_when_a_conversation_is_bad(row):
    good = b'[{"role": "user", "content": "fine"}]'
    with pytest.raises(InvalidArgument) as e:
        request_inputs([_messages(row)])
    assert str(e.value) == CONVERSATION_ERRORS[row]
    with pytest.raises(InvalidArgument) as e:
        request_inputs([_messages(good, row)])
    assert str(e.value) == CONVERSATION_ERRORS[row].replace("row 0", "row 1")


def test_request_inputs_reads_each_row_when_the_data_has_another_layout():
    chat = [{"role": "user", "content": "héllo"}, {"role": "assistant", "content": ""}]
    rows = [json.dumps(chat).encode(), json.dumps(chat[:1], ensure_ascii=False).encode()]
    expected = [
        Conversation((Message("user", "héllo"), Message("assistant", ""))),
        Conversation((Message("user", "héllo"),)),
    ]
    flat = _messages(*rows)
    column = InferTensor("messages", "BYTES", (2, 1), flat.data.reshape(2, 1))
    listed = tensor_from_contents("messages", "BYTES", (2,), [r.decode() for r in rows])
    assert request_inputs([flat]) == request_inputs([column]) == request_inputs([listed]) == expected
    texts = InferTensor("sentences", "BYTES", (2,), np.array([b"a", "ü".encode()], dtype=object))
    assert request_inputs([texts]) == [Text("a"), Text("ü")]


@pytest.mark.parametrize("shape", [(1, 2), (2, 1, 1), (1, 1, 1)])
def test_request_inputs_refuses_rows_of_several_elements_when_the_shape_says_so(shape):
    count = int(np.prod(shape))
    tensor = tensor_from_raw("sentences", "BYTES", shape, encode_bytes_raw([b"x"] * count))
    with pytest.raises(InvalidArgument, match=r"one element per row is expected \(\[B\] or \[B, 1\]\)"):
        request_inputs([tensor])


# Results whose values test the packing: float32 rounding, signed zero, non-finite, overflow to inf, and
# the int32 range.
RESULTS = (
    ScoreResult(0.1, 1, 0),
    ScoreResult(-0.0, 2**31 - 1, 2**31 - 1),
    ScoreResult(float("nan"), 0, 0),
    ScoreResult(float("-inf"), 7, 3),
    ScoreResult(1e300, 8, 0),
    ScoreResult(-3.4028236e38, 9, 0),
    ScoreResult(1e-50, -(2**31), 5),
    ScoreResult(1.0000000596046448, 10, 1),
)
NAME_ORDERS = [None, *(p for n in range(1, 4) for p in permutations(OUTPUTS, n))]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("batch", [0, 1, 3, len(RESULTS)])
def test_output_raw_gives_the_bytes_of_the_result_tensor_when_the_values_are_extreme(batch):
    results = RESULTS[:batch]
    for tensor in result_tensors(results):
        assert output_raw(tensor.name, results) == tensor_raw(tensor)


def _encode_as_before(model: str, version: str, request_id: str, outputs: list[InferTensor]):
    """The response as the front built it from result tensors, field by field (the reference)."""
    return pb.ModelInferResponse(
        model_name=model,
        model_version=version,
        id=request_id,
        outputs=[
            pb.ModelInferResponse.InferOutputTensor(name=t.name, datatype=t.datatype, shape=t.shape)
            for t in outputs
        ],
        raw_output_contents=[tensor_raw(t) for t in outputs],
    )


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("names", NAME_ORDERS, ids=str)
@pytest.mark.parametrize("batch", [1, 2, len(RESULTS)])
def test_encode_response_is_byte_identical_to_the_tensor_path_when_any_outputs_are_asked(names, batch):
    results = RESULTS[:batch]
    for model, version, request_id in (("tiny", "1", ""), ("rm-ü", "12", "req-7"), ("m", "3", "x" * 300)):
        done = InferResults(model, version, results, output_names(names))
        expected = _encode_as_before(model, version, request_id, result_tensors(results, names))
        for _ in range(2):  # the second one comes from the cached template
            got = grpc_front.encode_response(done, request_id)
            assert got.SerializeToString() == expected.SerializeToString()
            assert got == expected


def test_encode_response_leaves_the_template_alone_when_a_response_is_changed():
    done = InferResults("tiny", "1", RESULTS[:1], output_names(None))
    first = grpc_front.encode_response(done, "a")
    first.outputs[0].shape[0] = 99
    first.outputs.add(name="extra")
    second = grpc_front.encode_response(done, "b")
    assert [list(o.shape) for o in second.outputs] == [[1, 1]] * 3 and len(second.outputs) == 3


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        (
            ["rewards", "logits"],
            "unknown output 'logits' (outputs: rewards, num_tokens, num_truncated_tokens)",
        ),
        (["rewards", "rewards"], "an output is requested twice: ['rewards', 'rewards']"),
    ],
)
def test_output_names_refuses_as_result_tensors_did_when_the_outputs_are_wrong(requested, message):
    with pytest.raises(InvalidArgument) as e:
        output_names(requested)
    assert str(e.value) == message
    with pytest.raises(InvalidArgument) as e:
        result_tensors((), requested)
    assert str(e.value) == message
