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
import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter

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
# The scanner json.loads scans with (a decoder without hooks): (text, index) -> (value, end).
_SCAN_JSON = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # set in __init__; not in typeshed


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
    # One element filling the buffer (one text or conversation per request, the usual call): its prefix is
    # read in place and checked against the buffer's size. Anything else, every malformed buffer included,
    # takes the general loop and its errors.
    if count == 1 and len(buf) >= 4 and _LENGTH.unpack_from(buf)[0] == len(buf) - 4:
        return [bytes(buf[4:])]
    return _bytes_elements(buf, count, name)


def _bytes_elements(buf: bytes, count: int, name: str) -> list[bytes]:
    """decode_bytes_raw's general path: any count, every check."""
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
        # Bytes objects are scalars to numpy: a flat object array of `count` elements, whatever they hold.
        data = np.array(decode_bytes_raw(raw, count, name), dtype=object)
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


def _check(tensor: InferTensor) -> None:
    """An input's datatype, its data's size against its shape, and its batch dimension."""
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


def _checked(tensor: InferTensor) -> np.ndarray:
    """The tensor's data as an array of its shape, after the datatype and size checks."""
    _check(tensor)
    return tensor.data.reshape(tensor.shape)


def _rows_of_one(tensor: InferTensor) -> list[bytes]:
    """A BYTES input of one element per row: shape [B] or [B, 1]."""
    _check(tensor)
    shape = tensor.shape  # checked on the shape itself: no reshaped copy of the data is needed
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise InvalidArgument(
            f"input {tensor.name!r}: shape {list(shape)}: one element per row is expected ([B] or [B, 1])"
        )
    flat = tensor.data.reshape(-1)
    # tolist() hands back an object array's elements as they are, far cheaper than list() over the array.
    return flat.tolist() if flat.dtype == object else list(flat)


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


def _json(text: str) -> object:
    """json.loads(text). A document that starts at the first character and ends at the last (what clients
    send) is scanned directly, without json.loads's whitespace and BOM handling around the scan; any other
    text, and any text that fails, goes through json.loads for its result or its exact error."""
    try:
        parsed, end = _SCAN_JSON(text, 0)
    except (StopIteration, ValueError, RecursionError):
        return json.loads(text)
    return parsed if end == len(text) else json.loads(text)


def _conversation(name: str, row: int, text: str) -> Conversation:
    try:
        parsed = _json(text)
    except ValueError as e:
        raise InvalidArgument(f"{_row(name, row)}: not JSON ({e})") from e
    except RecursionError:  # a hostile document nested deeper than the parser's recursion limit
        raise InvalidArgument(f"{_row(name, row)}: not JSON (nested too deeply)") from None
    if not isinstance(parsed, list) or not parsed:
        raise InvalidArgument(
            f'{_row(name, row)}: expected a non-empty JSON list of {{"role", "content"}} objects'
        )
    messages = []
    for index, m in enumerate(parsed):
        if not isinstance(m, dict):
            role = content = None
        else:
            role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise InvalidArgument(
                f'{_row(name, row)} message {index}: expected an object with string "role" and "content"'
            )
        if role not in ROLES:
            raise InvalidArgument(
                f"{_row(name, row)} message {index}: unknown role {role!r} "
                f"(expected one of {', '.join(ROLES)})"
            )
        if role in NON_EMPTY_ROLES and not content:
            raise InvalidArgument(f"{_row(name, row)} message {index}: empty content in a {role} message")
        messages.append(Message(role, content))
    return Conversation(tuple(messages))


def _row(name: str, row: int) -> str:
    """Where an error is, for its message (formatted only when there is one)."""
    return f"input {name!r} row {row}"


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


def output_names(requested: Sequence[str] | None = None) -> tuple[str, ...]:
    """The outputs a request gets: all three, or the `requested` ones in that order (checked)."""
    names = tuple(OUTPUTS) if not requested else tuple(requested)
    for name in names:
        if name not in OUTPUTS:
            raise InvalidArgument(f"unknown output {name!r} (outputs: {', '.join(OUTPUTS)})")
    if len(set(names)) != len(names):
        raise InvalidArgument(f"an output is requested twice: {list(names)}")
    return names


def output_shape(name: str, batch: int) -> tuple[int, ...]:
    """The shape of output `name` for `batch` results."""
    return (batch, *OUTPUTS[name][1])


# Output name -> the ScoreResult field it holds.
_COLUMNS = {
    REWARDS: attrgetter("score"),
    NUM_TOKENS: attrgetter("num_tokens"),
    NUM_TRUNCATED_TOKENS: attrgetter("num_truncated_tokens"),
}


def result_tensors(
    results: Sequence[ScoreResult], requested: Sequence[str] | None = None
) -> list[InferTensor]:
    """The output tensors of a request's results: all three, or the `requested` ones in that order."""
    batch = len(results)
    return [
        InferTensor(
            name,
            OUTPUTS[name][0],
            output_shape(name, batch),
            np.array([_COLUMNS[name](r) for r in results], dtype=NUMPY_DTYPES[OUTPUTS[name][0]]).reshape(
                output_shape(name, batch)
            ),
        )
        for name in output_names(requested)
    ]


# Output datatype -> the `array` typecode of its C type. A few values pack faster with `array` than through
# a numpy array, into the same bytes (C float / int: IEEE single / 32-bit on every platform CPython runs
# on; checked at import below all the same).
_ARRAY_CODES = {"FP32": "f", "INT32": "i"}
if any(array(code).itemsize != NUMPY_DTYPES[datatype].itemsize for datatype, code in _ARRAY_CODES.items()):
    raise ImportError(f"array typecodes {_ARRAY_CODES} do not match the sizes of KServe's datatypes here")
_BIG_ENDIAN = sys.byteorder == "big"
# Output name -> (array typecode, the ScoreResult field it holds).
_RAW_COLUMNS = {name: (_ARRAY_CODES[datatype], _COLUMNS[name]) for name, (datatype, _) in OUTPUTS.items()}


def output_raw(name: str, results: Sequence[ScoreResult]) -> bytes:
    """Output `name`'s raw bytes for `results`: tensor_raw of its result tensor, without building it."""
    code, field = _RAW_COLUMNS[name]
    column = array(code, [field(r) for r in results])
    if _BIG_ENDIAN:  # raw data is little-endian
        column.byteswap()
    return column.tobytes()


def tensor_raw(tensor: InferTensor) -> bytes:
    """A tensor's raw bytes (gRPC raw_output_contents, HTTP binary data): little-endian, row-major."""
    if tensor.datatype == "BYTES":
        return encode_bytes_raw(tensor.data.reshape(-1))
    return np.ascontiguousarray(tensor.data, dtype=NUMPY_DTYPES[tensor.datatype]).tobytes()
