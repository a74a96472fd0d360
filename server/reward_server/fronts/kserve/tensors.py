"""The tensor view of a reward model: KServe v2 / Triton tensors <-> the core's inputs and results.

Every served model shows the same inputs (all optional, exactly one kind per request, batch dimension
first) and outputs:

    sentences                    BYTES [B] or [B, 1]  rendered text, one string per row        = Text
    messages                     BYTES [B] or [B, 1]  a JSON list of {"role", "content"} a row  = Conversation
    tokens (+ sequence_lengths)  INT64 [B, L] ([B, 1]) right-padded ids and each row's length = TokenIds
    rewards                      FP32  [B, 1]
    num_tokens                   INT32 [B, 1]
    num_truncated_tokens         INT32 [B, 1]

Wire decoding stops at `tensor_from_raw` / `tensor_from_contents`: a front turns its bytes or lists into
InferTensor and everything past that is protocol-neutral. Every failure is an InvalidArgument naming the
tensor and what is wrong with it.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from reward_server.datatypes import Conversation, Message, ScoreInput, ScoreResult, Text, TokenIds
from reward_server.errors import InvalidArgument

# Roles and the roles whose content may not be empty: the rules of RewardService's conversations.
ROLES = ("system", "user", "assistant")
NON_EMPTY_ROLES = ("system", "user")

SENTENCES, MESSAGES, TOKENS, SEQUENCE_LENGTHS = "sentences", "messages", "tokens", "sequence_lengths"
REWARDS, NUM_TOKENS, NUM_TRUNCATED_TOKENS = "rewards", "num_tokens", "num_truncated_tokens"

# name -> (datatype, dims without the batch dimension), in the order metadata lists them.
INPUTS: dict[str, tuple[str, tuple[int, ...]]] = {
    SENTENCES: ("BYTES", (-1,)),
    MESSAGES: ("BYTES", (1,)),
    TOKENS: ("INT64", (-1,)),
    SEQUENCE_LENGTHS: ("INT64", (1,)),
}
OUTPUTS: dict[str, tuple[str, tuple[int, ...]]] = {
    REWARDS: ("FP32", (1,)),
    NUM_TOKENS: ("INT32", (1,)),
    NUM_TRUNCATED_TOKENS: ("INT32", (1,)),
}

# KServe v2 datatype -> numpy dtype of its raw (little-endian) encoding; BYTES is an object array of bytes.
NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class InferTensor:
    """One named tensor. `data` holds prod(shape) elements (any layout; request_inputs reshapes it)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


def _element_count(name: str, shape: Sequence[int]) -> int:
    for dim in shape:
        if dim < 0:
            raise InvalidArgument(f"tensor {name!r}: shape {list(shape)} has a negative dimension")
    return math.prod(shape)


def decode_bytes_raw(buf: bytes, count: int, name: str = "") -> list[bytes]:
    """`count` elements of BYTES raw data: each a 4-byte little-endian length, then that many bytes."""
    where = f"tensor {name!r}" if name else "BYTES tensor"
    view = memoryview(buf)
    items, offset = [], 0
    for index in range(count):
        if offset + 4 > len(view):
            raise InvalidArgument(
                f"{where}: raw data ends before element {index} of {count} (no length prefix)"
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidArgument(
                f"{where}: element {index} has a length prefix of {length} bytes, past the end "
                f"of the raw data ({len(view) - offset} bytes left)"
            )
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != len(view):
        raise InvalidArgument(
            f"{where}: {len(view) - offset} bytes of raw data after the {count} elements of its shape"
        )
    return items


def encode_bytes_raw(items: Iterable[bytes | str]) -> bytes:
    """BYTES raw data: each element as a 4-byte little-endian length prefix and its bytes."""
    parts = []
    for item in items:
        data = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def _known_dtype(name: str, datatype: str) -> np.dtype:
    dtype = NUMPY_DTYPES.get(datatype)
    if dtype is None:
        raise InvalidArgument(
            f"tensor {name!r}: unknown or unsupported datatype {datatype!r} "
            f"(one of {', '.join(NUMPY_DTYPES)})"
        )
    return dtype


def tensor_from_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> InferTensor:
    """A tensor from its raw bytes (gRPC raw_input_contents, HTTP binary data); checks size against shape."""
    dtype = _known_dtype(name, datatype)
    count = _element_count(name, shape)
    if datatype == "BYTES":
        data = np.empty(count, dtype=object)
        data[:] = decode_bytes_raw(raw, count, name)
    else:
        if len(raw) != count * dtype.itemsize:
            raise InvalidArgument(
                f"tensor {name!r}: {len(raw)} bytes of raw data, but shape {list(shape)} of "
                f"{datatype} takes {count * dtype.itemsize}"
            )
        data = np.frombuffer(raw, dtype=dtype)
    return InferTensor(name, datatype, tuple(shape), data)


def tensor_from_contents(name: str, datatype: str, shape: Sequence[int], values: Sequence) -> InferTensor:
    """A tensor from a flat list of values (gRPC typed contents, HTTP JSON `data` flattened); BYTES
    values may be bytes or str (str is UTF-8 encoded)."""
    dtype = _known_dtype(name, datatype)
    _element_count(name, shape)
    if datatype == "BYTES":
        data = np.empty(len(values), dtype=object)
        data[:] = [v.encode() if isinstance(v, str) else bytes(v) for v in values]
    else:
        try:
            data = np.asarray(values, dtype=dtype)
        except (TypeError, ValueError, OverflowError) as e:
            raise InvalidArgument(f"tensor {name!r}: values are not {datatype}: {e}") from e
    return InferTensor(name, datatype, tuple(shape), data.reshape(-1))


def _checked(tensor: InferTensor) -> np.ndarray:
    """The tensor's data as an array of its shape, after the datatype and size checks."""
    datatype, _ = INPUTS[tensor.name]
    if tensor.datatype != datatype:
        raise InvalidArgument(f"input {tensor.name!r}: datatype {tensor.datatype}, expected {datatype}")
    count = _element_count(tensor.name, tensor.shape)
    if tensor.data.size != count:
        raise InvalidArgument(
            f"input {tensor.name!r}: shape {list(tensor.shape)} holds {count} elements, "
            f"the data has {tensor.data.size}"
        )
    if not tensor.shape or tensor.shape[0] < 1:
        raise InvalidArgument(
            f"input {tensor.name!r}: shape {list(tensor.shape)}: the first dimension is the "
            f"batch and must be at least 1"
        )
    return tensor.data.reshape(tensor.shape)


def _rows_of_one(tensor: InferTensor) -> list[bytes]:
    """A BYTES input of one element per row: shape [B] or [B, 1]."""
    data = _checked(tensor)
    if data.ndim > 2 or (data.ndim == 2 and data.shape[1] != 1):
        raise InvalidArgument(
            f"input {tensor.name!r}: shape {list(tensor.shape)}: one element per row "
            f"is expected ([B] or [B, 1])"
        )
    return list(data.reshape(-1))


def _text(name: str, row: int, value: object) -> str:
    try:
        return bytes(value).decode("utf-8")  # type: ignore[call-overload]
    except (UnicodeDecodeError, TypeError) as e:
        raise InvalidArgument(f"input {name!r} row {row}: not UTF-8 text ({e})") from e


def _sentences(tensor: InferTensor) -> list[ScoreInput]:
    out: list[ScoreInput] = []
    for row, value in enumerate(_rows_of_one(tensor)):
        text = _text(tensor.name, row, value)
        if not text:
            raise InvalidArgument(f"input {tensor.name!r} row {row}: empty text")
        out.append(Text(text))
    return out


def _conversation(name: str, row: int, text: str) -> Conversation:
    where = f"input {name!r} row {row}"
    try:
        parsed = json.loads(text)
    except ValueError as e:
        raise InvalidArgument(f"{where}: not JSON ({e})") from e
    if not isinstance(parsed, list) or not parsed:
        raise InvalidArgument(f'{where}: expected a non-empty JSON list of {{"role", "content"}} objects')
    messages = []
    for index, m in enumerate(parsed):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise InvalidArgument(
                f'{where} message {index}: expected an object with string "role" and "content"'
            )
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise InvalidArgument(
                f"{where} message {index}: unknown role {role!r} (expected one of {', '.join(ROLES)})"
            )
        if role in NON_EMPTY_ROLES and not content:
            raise InvalidArgument(f"{where} message {index}: empty content in a {role} message")
        messages.append(Message(role, content))
    return Conversation(tuple(messages))


def _messages(tensor: InferTensor) -> list[ScoreInput]:
    return [
        _conversation(tensor.name, row, _text(tensor.name, row, value))
        for row, value in enumerate(_rows_of_one(tensor))
    ]


def _token_rows(tokens: InferTensor, lengths: InferTensor | None) -> list[ScoreInput]:
    ids = _checked(tokens)
    if ids.ndim != 2:
        raise InvalidArgument(
            f"input {TOKENS!r}: shape {list(tokens.shape)}: expected [B, L] (right-padded rows)"
        )
    if ids.size and int(ids.min()) < 0:
        row, column = (int(i[0]) for i in np.nonzero(ids < 0))
        raise InvalidArgument(f"input {TOKENS!r} row {row}: negative token id {int(ids[row, column])}")
    batch, width = ids.shape
    if lengths is None:
        row_lengths = [width] * batch
    else:
        given = _checked(lengths)
        if given.size != batch or (given.ndim == 2 and given.shape[1] != 1) or given.ndim > 2:
            raise InvalidArgument(
                f"input {SEQUENCE_LENGTHS!r}: shape {list(lengths.shape)}: expected [{batch}, 1] "
                f"or [{batch}], one length per row of {TOKENS!r}"
            )
        row_lengths = [int(n) for n in given.reshape(-1)]
        for row, n in enumerate(row_lengths):
            if not 1 <= n <= width:
                raise InvalidArgument(
                    f"input {SEQUENCE_LENGTHS!r} row {row}: length {n} is outside 1..{width} "
                    f"(the width of {TOKENS!r})"
                )
    return [TokenIds(tuple(ids[row, :n].tolist())) for row, n in enumerate(row_lengths)]


def request_inputs(tensors: Sequence[InferTensor]) -> list[ScoreInput]:
    """The core's inputs for one infer request's tensors (exactly one kind: sentences, messages, or
    tokens with optional sequence_lengths)."""
    by_name: dict[str, InferTensor] = {}
    for tensor in tensors:
        if tensor.name not in INPUTS:
            raise InvalidArgument(f"unknown input {tensor.name!r} (inputs: {', '.join(INPUTS)})")
        if tensor.name in by_name:
            raise InvalidArgument(f"input {tensor.name!r} is given twice")
        by_name[tensor.name] = tensor
    kinds = [k for k in (SENTENCES, MESSAGES, TOKENS) if k in by_name]
    if SEQUENCE_LENGTHS in by_name and TOKENS not in by_name:
        raise InvalidArgument(f"input {SEQUENCE_LENGTHS!r} needs {TOKENS!r}")
    if len(kinds) != 1:
        raise InvalidArgument(
            f"give exactly one kind of input: {SENTENCES!r}, {MESSAGES!r} or {TOKENS!r} "
            f"(+ {SEQUENCE_LENGTHS!r}); got " + (", ".join(repr(n) for n in by_name) or "none")
        )
    kind = kinds[0]
    if kind == SENTENCES:
        return _sentences(by_name[SENTENCES])
    if kind == MESSAGES:
        return _messages(by_name[MESSAGES])
    return _token_rows(by_name[TOKENS], by_name.get(SEQUENCE_LENGTHS))


def result_tensors(
    results: Sequence[ScoreResult], requested: Sequence[str] | None = None
) -> list[InferTensor]:
    """The output tensors of a request's results: all three, or the `requested` ones in that order."""
    names = list(OUTPUTS) if not requested else list(requested)
    for name in names:
        if name not in OUTPUTS:
            raise InvalidArgument(f"unknown output {name!r} (outputs: {', '.join(OUTPUTS)})")
    if len(set(names)) != len(names):
        raise InvalidArgument(f"an output is requested twice: {names}")
    batch = len(results)
    columns = {
        REWARDS: lambda: [r.score for r in results],
        NUM_TOKENS: lambda: [r.num_tokens for r in results],
        NUM_TRUNCATED_TOKENS: lambda: [r.num_truncated_tokens for r in results],
    }
    return [
        InferTensor(
            name,
            OUTPUTS[name][0],
            (batch, 1),
            np.array(columns[name](), dtype=NUMPY_DTYPES[OUTPUTS[name][0]]).reshape(batch, 1),
        )
        for name in names
    ]


def tensor_raw(tensor: InferTensor) -> bytes:
    """A tensor's raw bytes (gRPC raw_output_contents, HTTP binary data): little-endian, row-major."""
    if tensor.datatype == "BYTES":
        return encode_bytes_raw(tensor.data.reshape(-1))
    return np.ascontiguousarray(tensor.data, dtype=NUMPY_DTYPES[tensor.datatype]).tobytes()
