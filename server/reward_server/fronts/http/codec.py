"""The body of KServe v2 `/infer` over HTTP, in JSON and in the binary tensor extension, both ways.

Binary extension (Triton's `binary_data`): the body is a JSON header of `Inference-Header-Content-Length`
bytes followed by the raw tensors, in the order of the inputs whose `parameters.binary_data_size` gives
their length; the rest of the inputs carry `data` in the JSON. Outputs go back raw when the request asks
(`outputs[i].parameters.binary_data`, or `parameters.binary_data_output` for all), as the same layout.
Raw numbers are little-endian; raw BYTES elements are each a 4-byte little-endian length then the bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from reward_server.errors import InvalidArgument
from reward_server.fronts.kserve.tensors import (
    NUMPY_DTYPES,
    InferTensor,
    tensor_from_contents,
    tensor_from_raw,
    tensor_raw,
)

HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None  # parameters.binary_data; None: the request's binary_data_output decides


@dataclass(frozen=True)
class InferBody:
    """A decoded /infer request: its inputs as tensors and the outputs it asks for (empty: all)."""

    id: str
    inputs: tuple[InferTensor, ...]
    outputs: tuple[RequestedOutput, ...]
    binary_output: bool  # parameters.binary_data_output: the default for outputs not listed
    timeout_us: int | None  # parameters.timeout (Triton's per-request timeout), None when absent


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def _parameters(value: dict[str, Any], where: str) -> dict[str, Any]:
    return _object(value.get("parameters") or {}, f"{where}.parameters")


def parse_json(data: bytes, what: str = "request body") -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidArgument(f"the {what} is not valid JSON: {e}") from None
    except RecursionError:
        raise InvalidArgument(f"the {what} is not valid JSON: nested too deeply") from None


def _shape(tensor: dict[str, Any], where: str) -> tuple[int, ...]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidArgument(f"{where}: 'shape' must be a list of non-negative integers, got {shape!r}")
    return tuple(shape)


def _flatten(data: Any, where: str) -> list[Any]:
    """Row-major elements of `data`, nested lists or flat (both are allowed by KServe v2)."""
    if not isinstance(data, list):
        raise InvalidArgument(f"{where}: 'data' must be a JSON array, got {type(data).__name__}")
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _json_tensor(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> InferTensor:
    """JSON `data` (nested or flat, row-major) checked element by element: JSON has one number type, so
    1.5 or true for an INT64 input is refused here rather than cast."""
    where = f"input {name!r}"
    flat = _flatten(data, where)
    count = math.prod(shape)
    if len(flat) != count:
        raise InvalidArgument(f"{where}: shape {list(shape)} has {count} elements but 'data' has {len(flat)}")
    kind = NUMPY_DTYPES[datatype].kind
    if kind == "O":
        ok, expected = all(isinstance(x, str) for x in flat), "strings"
    elif kind == "b":
        ok, expected = all(isinstance(x, bool) for x in flat), "booleans"
    elif kind in "iu":
        ok, expected = all(isinstance(x, int) and not isinstance(x, bool) for x in flat), "integers"
    else:
        ok, expected = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in flat), "numbers"
    if not ok:
        raise InvalidArgument(f"{where}: {datatype} 'data' must hold only {expected}")
    return tensor_from_contents(name, datatype, shape, flat)


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary data) of a request body by its `Inference-Header-Content-Length`
    (None: all JSON)."""
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise InvalidArgument(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
    if not 0 <= length <= len(body):
        raise InvalidArgument(f"{HEADER_LENGTH} is {length} but the body has {len(body)} bytes")
    return body[:length], body[length:]


def _binary_size(tensor: dict[str, Any], parameters: dict[str, Any], where: str) -> int | None:
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgument(f"{where}: binary_data_size must be a non-negative integer, got {size!r}")
    if "data" in tensor:
        raise InvalidArgument(f"{where} has both 'data' and binary_data_size")
    return size


def _input_tensor(index: int, raw_tensor: Any, binary: bytes, offset: int) -> tuple[InferTensor, int]:
    """inputs[index] as a tensor, and the offset of the next input's binary data."""
    tensor = _object(raw_tensor, f"inputs[{index}]")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"inputs[{index}] needs a 'name' string")
    where = f"input {name!r}"
    datatype = tensor.get("datatype")
    if datatype not in NUMPY_DTYPES:
        raise InvalidArgument(f"{where}: unknown datatype {datatype!r}")
    shape = _shape(tensor, where)
    parameters = _parameters(tensor, where)
    if "shared_memory_region" in parameters:
        raise InvalidArgument(f"{where}: shared memory is not supported by this server")
    size = _binary_size(tensor, parameters, where)
    if size is not None:
        if offset + size > len(binary):
            raise InvalidArgument(
                f"{where}: binary_data_size {size} runs past the binary data "
                f"({len(binary) - offset} bytes left)"
            )
        return tensor_from_raw(name, datatype, shape, binary[offset : offset + size]), offset + size
    if "data" in tensor:
        return _json_tensor(name, datatype, shape, tensor["data"]), offset
    raise InvalidArgument(f"{where} has neither 'data' nor parameters.binary_data_size")


def _requested_output(index: int, raw_output: Any) -> RequestedOutput:
    output = _object(raw_output, f"outputs[{index}]")
    name = output.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"outputs[{index}] needs a 'name' string")
    parameters = _parameters(output, f"output {name!r}")
    if "shared_memory_region" in parameters:
        raise InvalidArgument(f"output {name!r}: shared memory is not supported by this server")
    wants_raw = parameters.get("binary_data")
    return RequestedOutput(name, None if wants_raw is None else bool(wants_raw))


def decode_infer(body: bytes, header_length: str | None) -> InferBody:
    """The request, from its body and its `Inference-Header-Content-Length` header (None: all JSON)."""
    header, binary = _split_body(body, header_length)
    request = _object(parse_json(header, "inference request header"), "the inference request")
    inputs_json = request.get("inputs")
    if not isinstance(inputs_json, list) or not inputs_json:
        raise InvalidArgument("the inference request needs a non-empty 'inputs' list")
    inputs: list[InferTensor] = []
    offset = 0
    for index, raw_tensor in enumerate(inputs_json):
        tensor, offset = _input_tensor(index, raw_tensor, binary, offset)
        inputs.append(tensor)
    if offset != len(binary):
        raise InvalidArgument(
            f"the body has {len(binary) - offset} bytes of binary data that no input claims"
        )
    outputs = [_requested_output(index, raw) for index, raw in enumerate(request.get("outputs") or [])]
    parameters = _parameters(request, "the inference request")
    timeout = parameters.get("timeout")
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0):
        raise InvalidArgument(
            f"parameters.timeout must be a non-negative integer (microseconds), got {timeout!r}"
        )
    request_id = request.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidArgument(f"'id' must be a string, got {type(request_id).__name__}")
    return InferBody(
        request_id, tuple(inputs), tuple(outputs), bool(parameters.get("binary_data_output", False)), timeout
    )


def output_binary(body: InferBody, names: Sequence[str]) -> dict[str, bool]:
    """Whether each output goes back raw: its own binary_data, else the request's binary_data_output."""
    listed = {o.name: o.binary for o in body.outputs}
    return {name: body.binary_output if listed.get(name) is None else bool(listed[name]) for name in names}


def _json_data(tensor: InferTensor) -> list[Any]:
    flat = np.asarray(tensor.data).ravel()
    if tensor.datatype == "BYTES":
        return [bytes(b).decode("utf-8", "replace") for b in flat]
    return flat.tolist()


def encode_infer(
    model: str, version: str, request_id: str, outputs: Sequence[InferTensor], binary: dict[str, bool]
) -> tuple[bytes, int | None]:
    """(body, JSON header length or None when all of it is JSON); `binary[name]`: send that output raw."""
    described, chunks = [], []
    for tensor in outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if binary.get(tensor.name, False):
            raw = tensor_raw(tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_data(tensor)
        described.append(entry)
    response: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": described}
    if request_id:
        response["id"] = request_id
    header = json.dumps(response, separators=(",", ":")).encode()
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)
