"""The Dockerfile and deploy/kubernetes/ agree with the server: their arguments parse with the real
CLI parser, and ports, probes, volumes and the headless Service match what those arguments say."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from reward_server.cli import build_parser
from reward_server.transport.server import SERVICE_NAME

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"


def serve_args(argv: list[str]):
    args = build_parser().parse_args(argv)
    assert args.command == "serve"
    return args


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    docs = [d for path in sorted(MANIFESTS.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert {"Deployment", "Service"} <= set(by_kind), sorted(by_kind)
    return by_kind


@pytest.fixture(scope="module")
def container(manifests) -> dict:
    (only,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def grpc_port(container: dict) -> dict:
    (port,) = [p for p in container["ports"] if p["name"] == "grpc"]
    return port


def test_deployment_args_parse_with_the_server_cli_and_name_the_container_port(container):
    args = serve_args(container["args"])
    assert grpc_port(container)["containerPort"] == args.port
    assert args.model_repository in [m["mountPath"] for m in container["volumeMounts"]]
    if args.auth_token_file:
        assert any(args.auth_token_file.startswith(m["mountPath"] + "/") for m in container["volumeMounts"])


def test_deployment_probes_are_native_grpc_on_a_plaintext_health_port_of_the_server(container):
    args = serve_args(container["args"])
    # kubelet's gRPC probes speak plaintext: with TLS on the serving port they need --health-port.
    assert args.tls_cert is None or args.health_port is not None
    probe_port = args.port if args.health_port is None else args.health_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == probe_port, probe
    # Readiness asks for the RewardService by the name the server registers in grpc.health.v1.
    assert container["readinessProbe"]["grpc"]["service"] == SERVICE_NAME


def test_deployment_requests_a_gpu_runs_non_root_and_outlasts_the_drain(manifests, container):
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["terminationGracePeriodSeconds"] > serve_args(container["args"]).grace_period


def test_service_is_headless_and_routes_the_grpc_port_to_the_deployment_pods(manifests, container):
    service, deployment = manifests["Service"], manifests["Deployment"]
    assert service["spec"]["clusterIP"] == "None"  # DNS returns every pod: the client balances
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in ("grpc", grpc_port(container)["containerPort"])
    assert port["port"] == serve_args(container["args"]).port


def dockerfile() -> dict[str, list[str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    instructions: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            instructions.setdefault(word.upper(), []).append(rest.strip())
    return instructions


def test_dockerfile_serves_a_mounted_repository_as_non_root_with_a_grpc_health_check():
    docker = dockerfile()
    assert docker["FROM"][0].startswith("nvidia/cuda:") and "runtime" in docker["FROM"][0]
    (entrypoint,), (cmd,) = docker["ENTRYPOINT"], docker["CMD"]
    assert json.loads(entrypoint) == ["reward-server"]
    args = serve_args(json.loads(cmd))
    assert json.loads(docker["VOLUME"][0]) == [args.model_repository]
    assert docker["EXPOSE"] == [str(args.port)]
    assert docker["USER"][-1] not in ("root", "0")
    (health,) = docker["HEALTHCHECK"]
    assert "grpc_health" in health and f"127.0.0.1:{args.port}" in health


def test_readme_kubernetes_example_targets_the_headless_service(manifests):
    # The client example for the Service lives in the README or a page of docs/.
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    readme = "\n".join(page.read_text() for page in pages)
    name = manifests["Service"]["metadata"]["name"]
    port = manifests["Service"]["spec"]["ports"][0]["port"]
    assert re.search(rf"dns:///{name}\.[^\"']*:{port}", readme), "the docs' client example for the Service"
