from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelVersionPolicy(_message.Message):
    __slots__ = ("latest", "all", "specific")
    class Latest(_message.Message):
        __slots__ = ("num_versions",)
        NUM_VERSIONS_FIELD_NUMBER: _ClassVar[int]
        num_versions: int
        def __init__(self, num_versions: _Optional[int] = ...) -> None: ...
    class All(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...
    class Specific(_message.Message):
        __slots__ = ("versions",)
        VERSIONS_FIELD_NUMBER: _ClassVar[int]
        versions: _containers.RepeatedScalarFieldContainer[int]
        def __init__(self, versions: _Optional[_Iterable[int]] = ...) -> None: ...
    LATEST_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    SPECIFIC_FIELD_NUMBER: _ClassVar[int]
    latest: ModelVersionPolicy.Latest
    all: ModelVersionPolicy.All
    specific: ModelVersionPolicy.Specific
    def __init__(self, latest: _Optional[_Union[ModelVersionPolicy.Latest, _Mapping]] = ..., all: _Optional[_Union[ModelVersionPolicy.All, _Mapping]] = ..., specific: _Optional[_Union[ModelVersionPolicy.Specific, _Mapping]] = ...) -> None: ...

class ModelQueuePolicy(_message.Message):
    __slots__ = ("max_queue_size",)
    MAX_QUEUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    max_queue_size: int
    def __init__(self, max_queue_size: _Optional[int] = ...) -> None: ...

class ModelDynamicBatching(_message.Message):
    __slots__ = ("preferred_batch_size", "max_queue_delay_microseconds", "default_queue_policy", "max_batch_tokens")
    PREFERRED_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_DELAY_MICROSECONDS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_QUEUE_POLICY_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_TOKENS_FIELD_NUMBER: _ClassVar[int]
    preferred_batch_size: _containers.RepeatedScalarFieldContainer[int]
    max_queue_delay_microseconds: int
    default_queue_policy: ModelQueuePolicy
    max_batch_tokens: int
    def __init__(self, preferred_batch_size: _Optional[_Iterable[int]] = ..., max_queue_delay_microseconds: _Optional[int] = ..., default_queue_policy: _Optional[_Union[ModelQueuePolicy, _Mapping]] = ..., max_batch_tokens: _Optional[int] = ...) -> None: ...

class ModelInstanceGroup(_message.Message):
    __slots__ = ("name", "kind", "count", "gpus")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_AUTO: _ClassVar[ModelInstanceGroup.Kind]
        KIND_GPU: _ClassVar[ModelInstanceGroup.Kind]
        KIND_CPU: _ClassVar[ModelInstanceGroup.Kind]
    KIND_AUTO: ModelInstanceGroup.Kind
    KIND_GPU: ModelInstanceGroup.Kind
    KIND_CPU: ModelInstanceGroup.Kind
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ModelInstanceGroup.Kind
    count: int
    gpus: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ModelInstanceGroup.Kind, str]] = ..., count: _Optional[int] = ..., gpus: _Optional[_Iterable[int]] = ...) -> None: ...

class RewardSettings(_message.Message):
    __slots__ = ("prompt_format", "max_sequence_length", "truncation", "truncation_side", "dtype", "reward_token_id", "add_special_tokens", "head_bias", "special_tokens_in_content")
    class TruncationSide(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TRUNCATION_SIDE_UNSPECIFIED: _ClassVar[RewardSettings.TruncationSide]
        LEFT: _ClassVar[RewardSettings.TruncationSide]
        RIGHT: _ClassVar[RewardSettings.TruncationSide]
    TRUNCATION_SIDE_UNSPECIFIED: RewardSettings.TruncationSide
    LEFT: RewardSettings.TruncationSide
    RIGHT: RewardSettings.TruncationSide
    class SpecialTokensInContent(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SPECIAL_TOKENS_IN_CONTENT_UNSPECIFIED: _ClassVar[RewardSettings.SpecialTokensInContent]
        KEEP: _ClassVar[RewardSettings.SpecialTokensInContent]
        ESCAPE: _ClassVar[RewardSettings.SpecialTokensInContent]
        REFUSE: _ClassVar[RewardSettings.SpecialTokensInContent]
    SPECIAL_TOKENS_IN_CONTENT_UNSPECIFIED: RewardSettings.SpecialTokensInContent
    KEEP: RewardSettings.SpecialTokensInContent
    ESCAPE: RewardSettings.SpecialTokensInContent
    REFUSE: RewardSettings.SpecialTokensInContent
    PROMPT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQUENCE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_SIDE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    REWARD_TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    ADD_SPECIAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    HEAD_BIAS_FIELD_NUMBER: _ClassVar[int]
    SPECIAL_TOKENS_IN_CONTENT_FIELD_NUMBER: _ClassVar[int]
    prompt_format: str
    max_sequence_length: int
    truncation: bool
    truncation_side: RewardSettings.TruncationSide
    dtype: str
    reward_token_id: int
    add_special_tokens: bool
    head_bias: bool
    special_tokens_in_content: RewardSettings.SpecialTokensInContent
    def __init__(self, prompt_format: _Optional[str] = ..., max_sequence_length: _Optional[int] = ..., truncation: _Optional[bool] = ..., truncation_side: _Optional[_Union[RewardSettings.TruncationSide, str]] = ..., dtype: _Optional[str] = ..., reward_token_id: _Optional[int] = ..., add_special_tokens: _Optional[bool] = ..., head_bias: _Optional[bool] = ..., special_tokens_in_content: _Optional[_Union[RewardSettings.SpecialTokensInContent, str]] = ...) -> None: ...

class OnnxRuntimeSettings(_message.Message):
    __slots__ = ("graph_optimization_level", "intra_op_threads")
    GRAPH_OPTIMIZATION_LEVEL_FIELD_NUMBER: _ClassVar[int]
    INTRA_OP_THREADS_FIELD_NUMBER: _ClassVar[int]
    graph_optimization_level: str
    intra_op_threads: int
    def __init__(self, graph_optimization_level: _Optional[str] = ..., intra_op_threads: _Optional[int] = ...) -> None: ...

class PyTorchSettings(_message.Message):
    __slots__ = ("torchscript", "intra_op_threads", "last_position_only", "packed_batches")
    TORCHSCRIPT_FIELD_NUMBER: _ClassVar[int]
    INTRA_OP_THREADS_FIELD_NUMBER: _ClassVar[int]
    LAST_POSITION_ONLY_FIELD_NUMBER: _ClassVar[int]
    PACKED_BATCHES_FIELD_NUMBER: _ClassVar[int]
    torchscript: bool
    intra_op_threads: int
    last_position_only: bool
    packed_batches: bool
    def __init__(self, torchscript: _Optional[bool] = ..., intra_op_threads: _Optional[int] = ..., last_position_only: _Optional[bool] = ..., packed_batches: _Optional[bool] = ...) -> None: ...

class ModelWarmup(_message.Message):
    __slots__ = ("name", "batch_size", "sequence_length", "count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    batch_size: int
    sequence_length: int
    count: int
    def __init__(self, name: _Optional[str] = ..., batch_size: _Optional[int] = ..., sequence_length: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class ModelConfig(_message.Message):
    __slots__ = ("name", "backend", "max_batch_size", "version_policy", "dynamic_batching", "instance_group", "default_model_filename", "reward", "onnxruntime", "model_warmup", "pytorch")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    VERSION_POLICY_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_BATCHING_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_GROUP_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FILENAME_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    ONNXRUNTIME_FIELD_NUMBER: _ClassVar[int]
    MODEL_WARMUP_FIELD_NUMBER: _ClassVar[int]
    PYTORCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    backend: str
    max_batch_size: int
    version_policy: ModelVersionPolicy
    dynamic_batching: ModelDynamicBatching
    instance_group: _containers.RepeatedCompositeFieldContainer[ModelInstanceGroup]
    default_model_filename: str
    reward: RewardSettings
    onnxruntime: OnnxRuntimeSettings
    model_warmup: _containers.RepeatedCompositeFieldContainer[ModelWarmup]
    pytorch: PyTorchSettings
    def __init__(self, name: _Optional[str] = ..., backend: _Optional[str] = ..., max_batch_size: _Optional[int] = ..., version_policy: _Optional[_Union[ModelVersionPolicy, _Mapping]] = ..., dynamic_batching: _Optional[_Union[ModelDynamicBatching, _Mapping]] = ..., instance_group: _Optional[_Iterable[_Union[ModelInstanceGroup, _Mapping]]] = ..., default_model_filename: _Optional[str] = ..., reward: _Optional[_Union[RewardSettings, _Mapping]] = ..., onnxruntime: _Optional[_Union[OnnxRuntimeSettings, _Mapping]] = ..., model_warmup: _Optional[_Iterable[_Union[ModelWarmup, _Mapping]]] = ..., pytorch: _Optional[_Union[PyTorchSettings, _Mapping]] = ...) -> None: ...
