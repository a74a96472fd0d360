"""Parse config.pbtxt (text protobuf, schema in proto/reward_api/v1/model_config.proto), validate it
fully, and freeze it. Every message names the file, the field and the bad value."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from reward_api.v1 import model_config_pb2 as mc
from reward_server.backends.settings import ONNXRUNTIME_DEFAULTS, ORT_OPTIMIZATION_LEVELS, PYTORCH_DEFAULTS
from reward_server.errors import ConfigError
from reward_server.folder_files import CONFIG_PBTXT_LIMIT, read_file
from reward_server.formats import FORMATS

CONFIG_FILENAME = "config.pbtxt"
BACKENDS = ("pytorch", "onnxruntime")
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class VersionPolicy:
    kind: str  # "latest" | "all" | "specific"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of the numeric folders present, ascending."""
        ordered = sorted(available)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[-self.num_versions :]

    def candidates(self, available: list[int]) -> list[int]:
        """The versions that may serve, newest first. For `latest`, every version: when a newer one fails
        to load, the next older one that loads takes its place."""
        if self.kind == "latest":
            return sorted(available, reverse=True)
        return sorted(self.select(available), reverse=True)

    def wanted(self, available: list[int]) -> int:
        """How many versions the policy serves out of those present (when they load)."""
        return len(self.select(available))


@dataclass(frozen=True)
class InstanceGroup:
    kind: str  # "auto" | "gpu" | "cpu"
    count: int
    gpus: tuple[int, ...]


@dataclass(frozen=True)
class Warmup:
    """`count` batches of `batch_size` synthetic inputs of `sequence_length` tokens (0: the defaults)."""

    batch_size: int
    sequence_length: int
    count: int


DEFAULT_WARMUP_LENGTH = 64


@dataclass(frozen=True)
class ModelConfig:
    name: str
    path: Path  # the config.pbtxt it came from
    backend: str
    max_batch_size: int
    version_policy: VersionPolicy
    max_queue_delay_s: float
    preferred_batch_sizes: tuple[int, ...]
    max_queue_size: int  # 0 = unbounded
    max_batch_tokens: int | None  # 0 = no token budget; None = tuned on the device at load
    instance_groups: tuple[InstanceGroup, ...]
    default_model_filename: str
    prompt_format: str
    max_sequence_length: int  # 0 = from the model's config
    truncation: bool
    truncation_side: str  # "left" | "right"
    dtype: str
    reward_token_id: int | None
    add_special_tokens: bool | None  # None: the prompt format's default
    head_bias: bool | None  # None: whatever the weights have
    # The backend blocks, flat; backends get them typed (backends/settings.py, which holds the defaults).
    ort_graph_optimization_level: str
    ort_intra_op_threads: int
    torchscript: bool
    torch_intra_op_threads: int
    last_position_only: bool
    packed_batches: bool
    warmup: tuple[Warmup, ...] = ()  # parse_model_config always sets at least one
    special_tokens_in_content: str = "keep"  # "keep" | "escape" | "refuse" (formats/special_tokens.py)


# Upper bounds of the numeric fields: each far above what a real deployment sets, and low enough that a
# typo (a count in the millions, a delay near 2^63) is refused at load instead of stalling the server.
MAX_BATCH_SIZE = 4096
MAX_QUEUE_DELAY_US = 60_000_000  # one minute: longer, every request waits to its deadline
MAX_QUEUE_SIZE = 1_000_000
MAX_BATCH_TOKENS = 1 << 24
MAX_PREFERRED_BATCH_SIZES = 64
MAX_INSTANCE_GROUPS = 16
MAX_INSTANCES_PER_GROUP = 64
MAX_GPU_ORDINAL = 1023
MAX_WARMUPS = 64
MAX_WARMUP_COUNT = 1000
MAX_WARMUP_SEQUENCE_LENGTH = 1 << 20
MAX_THREADS = 1024
MAX_LATEST_VERSIONS = 64
MAX_SPECIFIC_VERSIONS = 1024


def _fail(path: Path, field: str, value: object, why: str) -> ConfigError:
    shown = repr(value)
    if len(shown) > 80:  # a value is named, never dumped
        shown = shown[:77] + "..."
    return ConfigError(f"{path}: field '{field}' = {shown}: {why}")


def _at_most(path: Path, field: str, value: int, limit: int, low: int = 0) -> int:
    if not low <= value <= limit:
        raise _fail(path, field, value, f"must be in {low}..{limit}")
    return value


def _read_text(path: Path, root: Path | None) -> str:
    """config.pbtxt's text: a regular file inside the repository, under the size cap, UTF-8."""
    try:
        data = read_file(path, root or path.parent, CONFIG_PBTXT_LIMIT, "config.pbtxt", ConfigError)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e}", public=f"{path}: cannot read") from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (a bad byte at offset {e.start})") from e


def _parse_error_kind(message: str) -> str:
    if "has no field named" in message:
        return "unknown field"
    if "parse" in message.lower() or "invalid" in message.lower():
        return "a value of the wrong type or form"
    return "syntax error"


def _read_proto(path: Path, root: Path | None) -> mc.ModelConfig:
    proto = mc.ModelConfig()
    try:
        text_format.Parse(_read_text(path, root), proto)
    except text_format.ParseError as e:
        # The parser quotes what it read; a config.pbtxt symlinked to a secret would have it sent to
        # clients. The log gets the parser's words; clients get the line, the column and the kind.
        where = f"line {e.GetLine()} column {e.GetColumn()}" if e.GetLine() else "unparseable"
        raise ConfigError(
            f"{path}: {e}",
            public=f"{path}: {where}: {_parse_error_kind(str(e))} (not a valid ModelConfig text protobuf)",
        ) from e
    return proto


def _version_policy(path: Path, proto: mc.ModelVersionPolicy) -> VersionPolicy:
    choice = proto.WhichOneof("policy_choice")
    if choice == "all":
        return VersionPolicy("all")
    if choice == "specific":
        versions = tuple(proto.specific.versions)
        if not versions:
            raise _fail(path, "version_policy.specific.versions", [], "list at least one version")
        _at_most(path, "version_policy.specific.versions (how many)", len(versions), MAX_SPECIFIC_VERSIONS)
        for v in versions:
            if v < 1:
                raise _fail(path, "version_policy.specific.versions", v, "versions are positive integers")
        return VersionPolicy("specific", versions=versions)
    num = proto.latest.num_versions if choice == "latest" else 1
    if num < 1:
        raise _fail(path, "version_policy.latest.num_versions", num, "must be >= 1")
    _at_most(path, "version_policy.latest.num_versions", num, MAX_LATEST_VERSIONS, 1)
    return VersionPolicy("latest", num_versions=num)


def _instance_group(path: Path, i: int, g: mc.ModelInstanceGroup) -> InstanceGroup:
    field = f"instance_group[{i}]"
    count = g.count or 1
    if count < 1:
        raise _fail(path, f"{field}.count", g.count, "must be >= 1")
    _at_most(path, f"{field}.count", count, MAX_INSTANCES_PER_GROUP, 1)
    kind = mc.ModelInstanceGroup.Kind.Name(g.kind).removeprefix("KIND_").lower()
    if kind == "cpu" and g.gpus:
        raise _fail(path, f"{field}.gpus", list(g.gpus), "a KIND_CPU group takes no gpus")
    for gpu in g.gpus:
        if gpu < 0:
            raise _fail(path, f"{field}.gpus", gpu, "GPU ordinals are >= 0")
        _at_most(path, f"{field}.gpus", gpu, MAX_GPU_ORDINAL)
    return InstanceGroup(kind, count, tuple(g.gpus))


def _instance_groups(path: Path, groups: list[mc.ModelInstanceGroup]) -> tuple[InstanceGroup, ...]:
    if not groups:
        return (InstanceGroup("auto", 1, ()),)
    _at_most(path, "instance_group (how many groups)", len(groups), MAX_INSTANCE_GROUPS)
    return tuple(_instance_group(path, i, g) for i, g in enumerate(groups))


def _special_tokens_in_content(path: Path, reward: mc.RewardSettings) -> str:
    """reward.special_tokens_in_content as "keep" | "escape" | "refuse" (unset: keep)."""
    modes = {
        mc.RewardSettings.SPECIAL_TOKENS_IN_CONTENT_UNSPECIFIED: "keep",
        mc.RewardSettings.KEEP: "keep",
        mc.RewardSettings.ESCAPE: "escape",
        mc.RewardSettings.REFUSE: "refuse",
    }
    value = reward.special_tokens_in_content
    if value not in modes:
        raise _fail(path, "reward.special_tokens_in_content", value, "expected KEEP, ESCAPE or REFUSE")
    return modes[value]


def _warmups(path: Path, max_batch_size: int, entries: list[mc.ModelWarmup]) -> tuple[Warmup, ...]:
    if not entries:
        return (Warmup(max_batch_size, 0, 1),)
    _at_most(path, "model_warmup (how many entries)", len(entries), MAX_WARMUPS)
    out = []
    for i, w in enumerate(entries):
        if w.batch_size > max_batch_size:
            raise _fail(
                path,
                f"model_warmup[{i}].batch_size",
                w.batch_size,
                f"must be <= max_batch_size ({max_batch_size})",
            )
        _at_most(path, f"model_warmup[{i}].count", w.count, MAX_WARMUP_COUNT)
        _at_most(path, f"model_warmup[{i}].sequence_length", w.sequence_length, MAX_WARMUP_SEQUENCE_LENGTH)
        out.append(Warmup(w.batch_size or max_batch_size, w.sequence_length, w.count or 1))
    return tuple(out)


def _check_top_level(path: Path, proto: mc.ModelConfig, folder_name: str) -> None:
    if proto.name and proto.name != folder_name:
        raise _fail(path, "name", proto.name, f"must match the model folder name {folder_name!r}")
    if (proto.backend or "pytorch") not in BACKENDS:
        raise _fail(path, "backend", proto.backend, f"expected one of {', '.join(BACKENDS)}")
    if proto.max_batch_size < 1:
        raise _fail(path, "max_batch_size", proto.max_batch_size, "must be >= 1")
    _at_most(path, "max_batch_size", proto.max_batch_size, MAX_BATCH_SIZE, 1)
    filename = proto.default_model_filename
    if filename and (Path(filename).name != filename or filename in (".", "..")):
        raise _fail(
            path, "default_model_filename", filename, "must be a plain file name inside the version folder"
        )


@dataclass(frozen=True)
class _Batching:
    max_queue_delay_s: float
    preferred_batch_sizes: tuple[int, ...]
    max_queue_size: int
    max_batch_tokens: int | None


def _batching(path: Path, proto: mc.ModelConfig) -> _Batching:
    batching = proto.dynamic_batching
    _at_most(
        path,
        "dynamic_batching.preferred_batch_size (how many)",
        len(batching.preferred_batch_size),
        MAX_PREFERRED_BATCH_SIZES,
    )
    for size in batching.preferred_batch_size:
        if not 1 <= size <= proto.max_batch_size:
            raise _fail(
                path,
                "dynamic_batching.preferred_batch_size",
                size,
                f"must be in 1..max_batch_size ({proto.max_batch_size})",
            )
    delay_us = _at_most(
        path,
        "dynamic_batching.max_queue_delay_microseconds",
        batching.max_queue_delay_microseconds,
        MAX_QUEUE_DELAY_US,
    )
    queue = _at_most(
        path,
        "dynamic_batching.default_queue_policy.max_queue_size",
        batching.default_queue_policy.max_queue_size,
        MAX_QUEUE_SIZE,
    )
    tokens = None
    if batching.HasField("max_batch_tokens"):
        tokens = _at_most(
            path, "dynamic_batching.max_batch_tokens", batching.max_batch_tokens, MAX_BATCH_TOKENS
        )
    return _Batching(delay_us / 1e6, tuple(sorted(set(batching.preferred_batch_size))), queue, tokens)


def _ort_level(path: Path, ort: mc.OnnxRuntimeSettings) -> str:
    ort_level = ort.graph_optimization_level or ONNXRUNTIME_DEFAULTS.graph_optimization_level
    if ort_level not in ORT_OPTIMIZATION_LEVELS:
        raise _fail(
            path,
            "onnxruntime.graph_optimization_level",
            ort.graph_optimization_level,
            f"expected one of {', '.join(ORT_OPTIMIZATION_LEVELS)}",
        )
    return ort_level


def _threads(path: Path, field: str, value: int) -> int:
    if value < 0:
        raise _fail(path, field, value, "must be >= 0")
    return _at_most(path, field, value, MAX_THREADS)


def _flag(message: object, field: str, default: bool) -> bool:
    return bool(getattr(message, field)) if message.HasField(field) else default  # type: ignore[attr-defined]


def parse_model_config(path: Path, folder_name: str, root: Path | None = None) -> ModelConfig:
    """Read and validate `path`; `folder_name` is the model's folder, which `name` must match. `root`:
    the model repository, which the file must resolve inside (default: the model's own folder)."""
    proto = _read_proto(path, root)
    _check_top_level(path, proto, folder_name)
    batching = _batching(path, proto)

    reward = proto.reward
    prompt_format = reward.prompt_format or "chat_template"
    if prompt_format not in FORMATS:
        raise _fail(
            path, "reward.prompt_format", reward.prompt_format, f"expected one of {', '.join(FORMATS)}"
        )
    reward_token_id = reward.reward_token_id if reward.HasField("reward_token_id") else None
    if reward_token_id is not None and reward_token_id < 0:
        raise _fail(path, "reward.reward_token_id", reward_token_id, "must be >= 0")
    if prompt_format == "internlm2" and reward_token_id is None:
        raise _fail(
            path, "reward.reward_token_id", None, "prompt_format 'internlm2' needs the reward token id"
        )
    if reward.max_sequence_length < 0:
        raise _fail(path, "reward.max_sequence_length", reward.max_sequence_length, "must be >= 0")
    dtype = reward.dtype or "auto"
    if dtype not in DTYPES:
        raise _fail(path, "reward.dtype", reward.dtype, f"expected one of {', '.join(DTYPES)}")
    side = "right" if reward.truncation_side == mc.RewardSettings.RIGHT else "left"

    return ModelConfig(
        name=folder_name,
        path=path,
        backend=proto.backend or "pytorch",
        max_batch_size=proto.max_batch_size,
        version_policy=_version_policy(path, proto.version_policy),
        max_queue_delay_s=batching.max_queue_delay_s,
        preferred_batch_sizes=batching.preferred_batch_sizes,
        max_queue_size=batching.max_queue_size,
        max_batch_tokens=batching.max_batch_tokens,
        instance_groups=_instance_groups(path, list(proto.instance_group)),
        default_model_filename=proto.default_model_filename,
        prompt_format=prompt_format,
        max_sequence_length=reward.max_sequence_length,
        truncation=reward.truncation if reward.HasField("truncation") else True,
        truncation_side=side,
        dtype=dtype,
        reward_token_id=reward_token_id,
        add_special_tokens=reward.add_special_tokens if reward.HasField("add_special_tokens") else None,
        head_bias=reward.head_bias if reward.HasField("head_bias") else None,
        ort_graph_optimization_level=_ort_level(path, proto.onnxruntime),
        ort_intra_op_threads=_threads(
            path, "onnxruntime.intra_op_threads", proto.onnxruntime.intra_op_threads
        ),
        torchscript=_flag(proto.pytorch, "torchscript", PYTORCH_DEFAULTS.torchscript),
        torch_intra_op_threads=_threads(path, "pytorch.intra_op_threads", proto.pytorch.intra_op_threads),
        last_position_only=_flag(proto.pytorch, "last_position_only", PYTORCH_DEFAULTS.last_position_only),
        packed_batches=_flag(proto.pytorch, "packed_batches", PYTORCH_DEFAULTS.packed_batches),
        warmup=_warmups(path, proto.max_batch_size, list(proto.model_warmup)),
        special_tokens_in_content=_special_tokens_in_content(path, reward),
    )


@dataclass(frozen=True)
class RewardDefaults:
    """What a model family needs in the `reward` block of its config.pbtxt."""

    prompt_format: str = "chat_template"
    max_sequence_length: int = 0
    truncation: bool = True
    truncation_side: str = "left"
    dtype: str = "auto"
    reward_token_id: int | None = None
    add_special_tokens: bool | None = None
    head_bias: bool | None = None


def config_pbtxt(
    name: str,
    reward: RewardDefaults,
    *,
    comment: str = "",
    backend: str = "pytorch",
    max_batch_size: int = 16,
    max_queue_delay_us: int = 2000,
    max_queue_size: int = 4096,
) -> str:
    """A config.pbtxt for a new model, in the text form users edit."""

    def flag(value: bool) -> str:
        return "true" if value else "false"

    lines = [f"# {line}" for line in comment.splitlines()]
    lines += [
        f'name: "{name}"',
        f'backend: "{backend}"',
        f"max_batch_size: {max_batch_size}",
        "dynamic_batching {",
        f"  max_queue_delay_microseconds: {max_queue_delay_us}",
        f"  default_queue_policy {{ max_queue_size: {max_queue_size} }}",
        "}",
        "instance_group [ { kind: KIND_AUTO count: 1 } ]",
        "reward {",
        f'  prompt_format: "{reward.prompt_format}"',
    ]
    if reward.max_sequence_length:
        lines.append(f"  max_sequence_length: {reward.max_sequence_length}")
    if not reward.truncation:
        lines.append("  truncation: false")
    lines += [f"  truncation_side: {reward.truncation_side.upper()}", f'  dtype: "{reward.dtype}"']
    if reward.reward_token_id is not None:
        lines.append(f"  reward_token_id: {reward.reward_token_id}")
    if reward.add_special_tokens is not None:
        lines.append(f"  add_special_tokens: {flag(reward.add_special_tokens)}")
    if reward.head_bias is not None:
        lines.append(f"  head_bias: {flag(reward.head_bias)}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def conflict_with(existing: ModelConfig, backend: str, wanted: dict[str, object]) -> str | None:
    """Why a new version with this backend and these settings would not be servable under an existing
    model's config.pbtxt, or None. A wanted value of None means any value will do."""
    if existing.backend != backend:
        return f"{existing.path}: model {existing.name!r} is served by {existing.backend!r}, not {backend!r}"
    for field, need in wanted.items():
        have = getattr(existing, field)
        if need is not None and have != need:
            return f"{existing.path}: field 'reward.{field}' is {have!r} but the new version needs {need!r}"
    return None
