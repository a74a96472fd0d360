"""`reward-server` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reward_server import __version__

log = logging.getLogger("reward_server")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_LEVEL_ENV = "REWARD_SERVER_LOG_LEVEL"
DEFAULT_LOG_LEVEL = "INFO"


def _serve(args: argparse.Namespace) -> int:
    from reward_server.server import StartupError, serve
    from reward_server.settings import settings_from_options

    try:
        settings = settings_from_options(vars(args), os.environ)
    except (ValueError, OSError) as e:
        log.error("%s", e)
        return 2
    try:
        asyncio.run(serve(settings))
    except StartupError as e:
        log.error("%s", e)
        return 1
    return 0


def _import(args: argparse.Namespace) -> int:
    from reward_server.errors import ImportRefused
    from reward_server.offline.importers import import_checkpoint

    try:
        folder, version = import_checkpoint(
            args.source,
            Path(args.repository),
            args.name,
            family=args.family,
            base=Path(args.base) if args.base else None,
            revision=args.revision,
            dtype=args.dtype,
        )
    except ImportRefused as e:
        log.error("import refused: %s", e)
        return 1
    print(f"imported {args.source} as {args.name} version {version}: {folder}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from reward_server.errors import ExportRefused
    from reward_server.offline.onnx_export import export_version

    try:
        folder, version = export_version(
            Path(args.repository),
            args.model,
            version=args.version,
            fp16=args.fp16,
            name=args.name,
            output_version=args.output_version,
        )
    except ExportRefused as e:
        log.error("export refused: %s", e)
        return 1
    print(f"exported {args.model} as {folder.parent.name} version {version}: {folder}")
    return 0


class _Repeated(argparse.Action):
    """A repeatable flag whose values on the command line replace the default (or the environment's)
    instead of adding to it, as argparse's "append" would."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        current = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, [*(current if isinstance(current, list) else []), values])


_METAVARS: dict[type, str] = {int: "N", float: "SECONDS", str: "TEXT", Path: "PATH"}


def add_serve_options(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
    """The flags of `serve`, one per option declared in settings.ServerSettings. With `environ`, an
    option whose variable is set defaults to it (parsed, and refused if bad, when settings are built)."""
    from reward_server.settings import env_defaults, serve_options

    env = env_defaults(environ or {})
    for opt in serve_options():
        kwargs: dict[str, Any] = {"help": opt.help_text().replace("%", "%%"), "dest": opt.dest}
        if opt.kind is not bool and not opt.choices:
            kwargs["metavar"] = opt.spec.metavar or _METAVARS.get(opt.kind, "VALUE")
        if opt.kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif opt.repeated:
            kwargs["action"] = _Repeated
        else:
            # Text for paths and choices (the namespace keeps what was typed); parsed into settings later.
            kwargs["type"] = str if opt.choices or opt.kind is Path else opt.kind
            kwargs["choices"] = opt.choices
        if opt.required and opt.dest not in env:
            kwargs["required"] = True
        action = parser.add_argument(opt.flag, **kwargs)
        # Set after: BooleanOptionalAction would append its own "(default: ...)" to the help.
        default = list(opt.default) if opt.repeated else opt.default  # a list, as argparse's own "append" has
        action.default = env.get(opt.dest, None if opt.required else default)


def _log_level_option(parser: argparse.ArgumentParser, default: str | None, dest: str) -> None:
    parser.add_argument(
        "--log-level",
        default=default,
        choices=LOG_LEVELS,
        dest=dest,
        help=f"level of the server's own loggers (default {DEFAULT_LOG_LEVEL}; env {LOG_LEVEL_ENV}); "
        "DEBUG logs one line per request; other libraries log WARNING and above",
    )


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The `reward-server` parser. `environ` (main passes os.environ) supplies the defaults of the options
    whose REWARD_SERVER_* variable is set; without it, every default is the declared one."""
    parser = argparse.ArgumentParser(prog="reward-server", description="gRPC reward-model server")
    parser.add_argument("--version", action="version", version=f"reward-server {__version__}")
    _log_level_option(parser, DEFAULT_LOG_LEVEL, "log_level")
    # --log-level after the command too, under its own name: a command's defaults overwrite the values
    # parsed before the command, so one name would lose a level given before it.
    after = argparse.ArgumentParser(add_help=False)
    _log_level_option(after, None, "command_log_level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve a model repository over gRPC and HTTP",
        parents=[after],
        description="Serve a model repository over gRPC and HTTP. Every option can also be set "
        "by its environment variable; the command line wins over it.",
    )
    add_serve_options(serve, environ)
    serve.set_defaults(run=_serve)

    from reward_server.offline.importers import DTYPES, FAMILIES

    imp = commands.add_parser(
        "import",
        parents=[after],
        help="import an original reward-model checkpoint as a new model version",
        description="Convert a checkpoint in its authors' layout (local folder or hub id) into "
        "the canonical layout (safetensors, transformers config, fast tokenizer) "
        "as the next version of a model, with a config.pbtxt. No code from the "
        "checkpoint is executed; .bin pickles are read with weights_only=True.",
    )
    imp.add_argument("source", help="a local folder, or a hub id (owner/name) to download")
    imp.add_argument("--repository", required=True, help="model repository to write into")
    imp.add_argument("--name", required=True, help="model name (folder) in the repository")
    imp.add_argument(
        "--family", choices=list(FAMILIES), default=None, help="skip detection and use this family"
    )
    imp.add_argument(
        "--base",
        default=None,
        help="folder with the base model's config.json / tokenizer, when the checkpoint lacks them",
    )
    imp.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) to download")
    imp.add_argument(
        "--dtype", choices=DTYPES, default="keep", help="dtype of the stored weights (default: keep)"
    )
    imp.set_defaults(run=_import)

    exp = commands.add_parser(
        "export",
        parents=[after],
        help="export a PyTorch model version to ONNX (onnxruntime backend)",
        description="Export a model version with optimum's ONNX exporter (head, bias and "
        "pooling inside the graph), check it against PyTorch with onnxruntime, "
        "and publish it as a version of an onnxruntime model.",
    )
    exp.add_argument("model", help="the PyTorch model to export")
    exp.add_argument("--repository", required=True, help="model repository")
    exp.add_argument("--version", type=int, default=None, help="version to export (default: the newest)")
    exp.add_argument(
        "--fp16", action="store_true", help="convert the graph to float16 (for the CUDA provider)"
    )
    exp.add_argument("--name", default=None, help="onnxruntime model to write into (default: MODEL-onnx)")
    exp.add_argument(
        "--output-version",
        type=int,
        default=None,
        help="version number to create (default: the next free one; an existing one is refused)",
    )
    exp.set_defaults(run=_export)
    return parser


def configure_logging(level: str) -> None:
    """Our loggers at `level`; every other library's (grpc, asyncio, transformers) at WARNING."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("reward_server").setLevel(level)


def chosen_log_level(args: argparse.Namespace) -> str:
    """--log-level after the command, else before it, else $REWARD_SERVER_LOG_LEVEL, else INFO."""
    return str(getattr(args, "command_log_level", None) or args.log_level)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(os.environ)
    level = os.environ.get(LOG_LEVEL_ENV, DEFAULT_LOG_LEVEL).strip().upper()
    if level not in LOG_LEVELS:
        parser.error(
            f"${LOG_LEVEL_ENV}={os.environ[LOG_LEVEL_ENV]!r}: expected one of {', '.join(LOG_LEVELS)}"
        )
    parser.set_defaults(log_level=level)
    args = parser.parse_args(argv)
    configure_logging(chosen_log_level(args))
    return int(args.run(args))
