"""`reward-server export`: a PyTorch model version -> an onnxruntime version (model.onnx).

The graph holds everything the PyTorch backend runs: backbone, reward head with its bias, and the
pooling at the last attention-mask position, so both backends take the same token ids and return the
same scores. The exporter is optimum's: its ONNX config for the backbone's architecture (inputs,
dynamic batch and sequence axes, opset handling) drives `optimum.exporters.onnx.export`. Optimum's
task-level `main_export` cannot express our head and pooling, so the model it exports is a thin
PreTrainedModel wrapper around the server's own RewardModel, so the graph holds the attention that
backend runs: eager for models that cap the attention logits (Gemma2's attn_logit_softcapping, which
SDPA drops), recorded in the graph's metadata. After export the graph is run with onnxruntime against
the PyTorch scores; a graph that disagrees is never published.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from reward_server.backends.ort_session import META_ATTENTION, META_DTYPE, META_HEAD_BIAS, MODEL_FILE
from reward_server.checkpoint import read_checkpoint
from reward_server.errors import ConfigError, ExportRefused, LoadError
from reward_server.folder_files import check_version_folder
from reward_server.repository.config import (
    CONFIG_FILENAME,
    ModelConfig,
    RewardDefaults,
    config_pbtxt,
    conflict_with,
    parse_model_config,
)
from reward_server.repository.layout import MODEL_NAME, ModelFolder, inside, version_folders
from reward_server.repository.writer import publish_version

log = logging.getLogger(__name__)

TASK = "text-classification"  # optimum's ONNX config for this task: input_ids, attention_mask -> logits
OPSET = 17
TOKENIZER_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "added_tokens.json",
)
PROBE = [[1, 5, 6, 7, 8, 9], [2], list(range(3, 40)), [4, 4, 4, 4]]
TOLERANCE = {"float32": 1e-4, "float16": 5e-2}
STEPS = 5


def _step(number: int, what: str) -> None:
    log.info("[%d/%d] %s", number, STEPS, what)


def onnx_config_for(model_config: Any) -> Any:
    import optimum.exporters.onnx.model_configs  # noqa: F401  (registers the architectures)
    from optimum.exporters.tasks import TasksManager

    try:
        constructor = TasksManager.get_exporter_config_constructor(
            exporter="onnx", model_type=model_config.model_type, task=TASK, library_name="transformers"
        )
    except (KeyError, ValueError) as e:
        raise ExportRefused(
            f"architecture {model_config.model_type!r} is not supported by optimum's ONNX exporter"
        ) from e
    return constructor(model_config)


def _exportable(reward_model: Any, model_config: Any) -> Any:
    """The RewardModel as the PreTrainedModel optimum's exporter expects, returning `logits` [batch, 1]."""
    from transformers import PreTrainedModel
    from transformers.modeling_outputs import SequenceClassifierOutput

    class ExportableRewardModel(PreTrainedModel):
        config_class = type(model_config)  # type: ignore[assignment]  # transformers declares it None on the base
        base_model_prefix = "reward"
        _supports_sdpa = True

        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.reward = reward_model

        def forward(self, input_ids: Any, attention_mask: Any, **_: Any) -> Any:
            return SequenceClassifierOutput(logits=self.reward(input_ids, attention_mask).unsqueeze(-1))

    return ExportableRewardModel(model_config).eval()


def _to_fp16(path: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=False)
    large = model.ByteSize() > 1_800_000_000  # protobuf's 2 GiB limit: weights go to external data
    onnx.save(model, str(path), save_as_external_data=large, location=f"{MODEL_FILE}.data" if large else None)


def _set_metadata(path: Path, values: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)  # external weights stay where they are
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def _verify(folder: Path, torch_backend: Any, dtype: str) -> float:
    """Load the exported version folder with the onnxruntime backend (CPU; it runs fp16 graphs too),
    score probe inputs against the fp32 PyTorch scores, and refuse the graph if they disagree."""
    from reward_server.backends.ort_session import OnnxRuntimeBackend

    exported = read_checkpoint(folder)
    probe = [ids for ids in PROBE if max(ids) < exported.model_config.vocab_size] or [[0]]
    got = OnnxRuntimeBackend(exported, "cpu", dtype).score_batch(probe)
    want = torch_backend.score_batch(probe)
    worst = max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(got, want))
    if worst > TOLERANCE[dtype]:
        raise ExportRefused(
            f"the exported graph disagrees with PyTorch: relative difference {worst:.2e} "
            f"> {TOLERANCE[dtype]:.0e}"
        )
    return worst


def _source(repository: Path, model: str, version: int | None) -> tuple[ModelConfig, int, Path]:
    folder = repository / model
    if not MODEL_NAME.match(model) or not folder.is_dir() or not inside(repository, folder):
        raise ExportRefused(f"unknown model {model!r} in {repository}")
    try:
        config = parse_model_config(folder / CONFIG_FILENAME, model, repository)
        versions = version_folders(ModelFolder(model, folder), repository)
    except ConfigError as e:
        raise ExportRefused(str(e)) from e
    if config.backend != "pytorch":
        raise ExportRefused(f"model {model!r} is served by {config.backend!r}; export takes a PyTorch model")
    if not versions:
        raise ExportRefused(f"model {model!r} has no version folders")
    chosen = max(versions) if version is None else version
    if chosen not in versions:
        raise ExportRefused(f"model {model!r} has no version {chosen} (found: {sorted(versions)})")
    try:  # what the export reads: inside the repository, regular files, as the server would load them
        check_version_folder(versions[chosen], repository)
    except LoadError as e:
        raise ExportRefused(str(e)) from e
    return config, chosen, versions[chosen]


def export_version(
    repository: Path,
    model: str,
    *,
    version: int | None = None,
    fp16: bool = False,
    name: str | None = None,
    output_version: int | None = None,
) -> tuple[Path, int]:
    """Export `model` (newest version by default) as a version of the onnxruntime model `name`
    (default `<model>-onnx`). Returns (version folder, version)."""
    from reward_server.backends.pytorch import PyTorchBackend

    repository = Path(repository)
    config, source_version, source = _source(repository, model, version)
    target = name or f"{model}-onnx"
    if target == model:
        raise ExportRefused(
            f"{model!r} is a PyTorch model; the backend is per model, so export under another --name"
        )
    _step(1, f"loading {model} version {source_version} from {source}")
    try:
        checkpoint = read_checkpoint(source, config.default_model_filename)
        onnx_config = onnx_config_for(checkpoint.model_config)
        torch_backend = PyTorchBackend(checkpoint, "cpu", "float32")
    except LoadError as e:
        raise ExportRefused(f"cannot load {model} version {source_version}: {e}") from e
    dtype = "float16" if fp16 else "float32"

    def fill(folder: Path) -> None:
        from optimum.exporters.onnx import export

        graph = folder / MODEL_FILE
        _step(2, f"exporting with optimum ({checkpoint.model_config.model_type}, opset {OPSET})")
        export(
            model=_exportable(torch_backend.module, checkpoint.model_config),
            config=onnx_config,
            output=graph,
            opset=OPSET,
        )
        if fp16:
            _step(3, "converting the graph to float16")
            _to_fp16(graph)
        _set_metadata(
            graph,
            {
                META_DTYPE: dtype,
                META_HEAD_BIAS: str(torch_backend.head_bias).lower(),
                META_ATTENTION: torch_backend.module.attention,
                "reward_exported_from": f"{model}/{source_version}",
            },
        )
        for file in TOKENIZER_FILES:
            if (source / file).is_file():
                shutil.copy2(source / file, folder / file)
        _step(4, "checking the graph against PyTorch with onnxruntime")
        worst = _verify(folder, torch_backend, dtype)
        log.info("largest relative difference from PyTorch on the probe batch: %.2e", worst)
        _step(5, "publishing")

    reward = RewardDefaults(
        prompt_format=config.prompt_format,
        max_sequence_length=config.max_sequence_length,
        truncation=config.truncation,
        truncation_side=config.truncation_side,
        dtype="auto",
        reward_token_id=config.reward_token_id,
        add_special_tokens=config.add_special_tokens,
        head_bias=torch_backend.head_bias,
    )

    def accept_existing(existing: ModelConfig) -> None:
        fields = (
            "prompt_format",
            "reward_token_id",
            "add_special_tokens",
            "truncation_side",
            "max_sequence_length",
        )
        if reason := conflict_with(existing, "onnxruntime", {f: getattr(config, f) for f in fields}):
            raise ExportRefused(f"{reason}; export under another --name")

    comment = f"Exported from {model} version {source_version} by `reward-server export`."
    return publish_version(
        repository,
        target,
        fill,
        new_model_config=config_pbtxt(
            target,
            reward,
            comment=comment,
            backend="onnxruntime",
            max_batch_size=config.max_batch_size,
            max_queue_delay_us=int(config.max_queue_delay_s * 1e6),
            max_queue_size=config.max_queue_size,
        ),
        accept_existing=accept_existing,
        version=output_version,
        error=ExportRefused,
    )
