"""`reward-server` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from . import __version__

log = logging.getLogger("reward_server")

DEFAULT_PORT = 50051


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _serve(args: argparse.Namespace) -> int:
    from .settings import ServerSettings, read_auth_token
    from .transport import StartupError, serve

    try:
        settings = ServerSettings(
            model_repository=Path(args.model_repository),
            host=args.host,
            port=args.port,
            strict=args.strict,
            max_items_per_request=args.max_items_per_request,
            auth_token=read_auth_token(args.auth_token_file),
            grace_period_s=args.grace_period,
            tls_cert=_path(args.tls_cert),
            tls_key=_path(args.tls_key),
            tls_client_ca=_path(args.tls_client_ca),
            health_port=args.health_port,
            max_message_bytes=args.max_message_bytes,
            max_chars_per_message=args.max_chars_per_message,
            max_concurrent_rpcs=args.max_concurrent_rpcs,
            reuse_port=args.reuse_port,
            max_connection_age_s=args.max_connection_age,
            model_control_mode=args.model_control_mode,
            repository_poll_s=args.repository_poll_secs,
            load_models=tuple(args.load_model),
            metrics_port=args.metrics_port,
            http_port=None if args.http_port == -1 else args.http_port,
        )
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
    from .errors import ImportRefused
    from .importers import import_checkpoint

    try:
        folder, version = import_checkpoint(
            args.source, Path(args.repository), args.name, family=args.family,
            base=Path(args.base) if args.base else None, revision=args.revision, dtype=args.dtype,
        )
    except ImportRefused as e:
        log.error("import refused: %s", e)
        return 1
    print(f"imported {args.source} as {args.name} version {version}: {folder}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .errors import ExportRefused
    from .onnx_export import export_version

    try:
        folder, version = export_version(Path(args.repository), args.model, version=args.version, fp16=args.fp16,
                                         name=args.name, output_version=args.output_version)
    except ExportRefused as e:
        log.error("export refused: %s", e)
        return 1
    print(f"exported {args.model} as {folder.parent.name} version {version}: {folder}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reward-server", description="gRPC reward-model server")
    parser.add_argument("--version", action="version", version=f"reward-server {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="logging level (default INFO; DEBUG logs one line per request)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve a model repository over gRPC")
    serve.add_argument("--model-repository", required=True, help="path of the Triton-style model repository")
    serve.add_argument("--host", default="[::]", help="address to bind (default [::], every interface)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"gRPC port (default {DEFAULT_PORT}; 0 picks one)")
    serve.add_argument("--strict", action=argparse.BooleanOptionalAction, default=True,
                       help="refuse to start when a model fails to load (default); --no-strict serves the others")
    serve.add_argument("--max-items-per-request", type=int, default=4096,
                       help="most inputs one Score or Rank request may carry (default 4096)")
    serve.add_argument("--auth-token-file", default=None,
                       help="require this bearer token (else $REWARD_SERVER_AUTH_TOKEN if set; else no auth)")
    serve.add_argument("--grace-period", type=float, default=30.0,
                       help="seconds requests in flight may take to finish after SIGTERM (default 30)")
    serve.add_argument("--tls-cert", default=None, help="PEM certificate chain of the server (enables TLS)")
    serve.add_argument("--tls-key", default=None, help="PEM private key of the server")
    serve.add_argument("--tls-client-ca", default=None,
                       help="PEM CA bundle; clients must present a certificate it signed (mutual TLS)")
    serve.add_argument("--health-port", type=int, default=None,
                       help="also serve grpc.health.v1 alone, in plaintext, on this port (for probes that cannot "
                            "speak TLS; 0 picks one; default: off)")
    serve.add_argument("--max-message-bytes", type=int, default=64 * 1024 * 1024,
                       help="largest request or response message (default 64 MiB; larger -> RESOURCE_EXHAUSTED)")
    serve.add_argument("--max-chars-per-message", type=int, default=1_000_000,
                       help="most characters in one chat message or text input (default 1000000; more -> "
                            "INVALID_ARGUMENT)")
    serve.add_argument("--max-concurrent-rpcs", type=int, default=1024,
                       help="most RPCs handled at once, health checks excepted (default 1024; more -> "
                            "RESOURCE_EXHAUSTED)")
    serve.add_argument("--reuse-port", action="store_true",
                       help="let several server processes listen on the same port (SO_REUSEPORT)")
    serve.add_argument("--max-connection-age", type=float, default=None,
                       help="end each client connection after this many seconds, so that clients re-resolve "
                            "DNS and find new replicas (default: never)")
    serve.add_argument("--model-control-mode", choices=["none", "explicit", "poll"], default="none",
                       help="none: load every model at start (default); explicit: LoadModel/UnloadModel RPCs "
                            "and --load-model; poll: rescan the repository every --repository-poll-secs")
    serve.add_argument("--repository-poll-secs", type=float, default=15.0,
                       help="poll mode: seconds between rescans of the repository (default 15)")
    serve.add_argument("--load-model", action="append", default=[], metavar="NAME",
                       help="explicit mode: a model to load at start (repeatable)")
    serve.add_argument("--metrics-port", type=int, default=None,
                       help="serve Prometheus metrics on http://HOST:PORT/metrics (0 picks a port; default: off)")
    serve.add_argument("--http-port", type=int, default=8000,
                       help="KServe v2 REST (Triton's HTTP API) and /metrics on this port (default 8000, as "
                            "Triton; 0 picks one; -1: no HTTP)")
    serve.set_defaults(run=_serve)

    from .importers import DTYPES, FAMILIES

    imp = commands.add_parser("import", help="import an original reward-model checkpoint as a new model version",
                              description="Convert a checkpoint in its authors' layout (local folder or hub id) into "
                                          "the canonical layout (safetensors, transformers config, fast tokenizer) "
                                          "as the next version of a model, with a config.pbtxt. No code from the "
                                          "checkpoint is executed; .bin pickles are read with weights_only=True.")
    imp.add_argument("source", help="a local folder, or a hub id (owner/name) to download")
    imp.add_argument("--repository", required=True, help="model repository to write into")
    imp.add_argument("--name", required=True, help="model name (folder) in the repository")
    imp.add_argument("--family", choices=list(FAMILIES), default=None, help="skip detection and use this family")
    imp.add_argument("--base", default=None,
                     help="folder with the base model's config.json / tokenizer, when the checkpoint lacks them")
    imp.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) to download")
    imp.add_argument("--dtype", choices=DTYPES, default="keep", help="dtype of the stored weights (default: keep)")
    imp.set_defaults(run=_import)

    exp = commands.add_parser("export", help="export a PyTorch model version to ONNX (onnxruntime backend)",
                              description="Export a model version with optimum's ONNX exporter (head, bias and "
                                          "pooling inside the graph), check it against PyTorch with onnxruntime, "
                                          "and publish it as a version of an onnxruntime model.")
    exp.add_argument("model", help="the PyTorch model to export")
    exp.add_argument("--repository", required=True, help="model repository")
    exp.add_argument("--version", type=int, default=None, help="version to export (default: the newest)")
    exp.add_argument("--fp16", action="store_true", help="convert the graph to float16 (for the CUDA provider)")
    exp.add_argument("--name", default=None, help="onnxruntime model to write into (default: MODEL-onnx)")
    exp.add_argument("--output-version", type=int, default=None,
                     help="version number to create (default: the next free one; an existing one is refused)")
    exp.set_defaults(run=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return args.run(args)
