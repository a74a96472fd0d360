"""deploy/kserve/ agrees with the server: the ClusterServingRuntime's args parse with the real CLI parser
and its ports, metrics and model format are what the InferenceService example relies on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reward_server.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kserve"
HTTP_FLAG = "--http-port"


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    docs = [d for path in sorted(MANIFESTS.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert sorted(by_kind) == ["ClusterServingRuntime", "InferenceService"]
    return by_kind


@pytest.fixture(scope="module")
def runtime(manifests) -> dict:
    return manifests["ClusterServingRuntime"]


@pytest.fixture(scope="module")
def container(runtime) -> dict:
    (only,) = runtime["spec"]["containers"]
    return only


def parsed_args(container: dict):
    """The runtime's args through our CLI parser: every one must parse."""
    args, left = build_parser().parse_known_args(container["args"])
    assert args.command == "serve"
    assert left == []
    return args


def test_runtime_args_parse_with_the_server_cli_when_read_from_the_manifest(container):
    args = parsed_args(container)
    assert container["name"] == "kserve-container"  # the container name KServe looks for
    assert args.model_repository == "/mnt/models"  # where KServe's storage initializer puts storageUri
    assert args.port == 9000
    assert f"{HTTP_FLAG}=8080" in container["args"]
    assert args.http_port == 8080


def test_runtime_speaks_v2_on_both_protocols_and_exports_the_metrics_port_it_serves(runtime, container):
    spec = runtime["spec"]
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert set(spec["protocolVersions"]) == {"v2", "grpc-v2"}
    assert int(spec["annotations"]["prometheus.kserve.io/port"]) == parsed_args(container).metrics_port
    assert spec["annotations"]["prometheus.kserve.io/path"] == "/metrics"
    formats = {f["name"]: f for f in spec["supportedModelFormats"]}
    assert formats["reward-repository"]["autoSelect"] is True
    assert container["securityContext"]["runAsNonRoot"] is True


def test_inference_service_selects_the_runtime_and_routes_grpc_to_its_port(runtime, container, manifests):
    isvc = manifests["InferenceService"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert model["storageUri"]
    # Knative routes one port per container; gRPC must be h2c on the runtime's gRPC port.
    (port,) = model["ports"]
    assert port["name"] == "h2c" and port["containerPort"] == parsed_args(container).port
    assert parsed_args(container).grace_period < 30  # the pod's default terminationGracePeriodSeconds
