"""Deployment: the image, the installs and deploy/kubernetes/ agree with the server and with each other.

Manifests: their arguments parse with the real CLI parser; ports, probes, volumes, the Service, the
autoscaler's metric and the monitor match what those arguments say; they pass `kubernetes-validate
--strict` for every Kubernetes version we claim and the checkov security linter. Installs: one
constraints file pins what CI installs and what the image installs; the server's distribution ships
the client and names no distribution of ours. Readiness: the health name the probe and the client
watch goes NOT_SERVING when a model the server must serve is not ready, and stays SERVING after an
unload by request (a real server).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import zipfile
from importlib import metadata
from pathlib import Path

import grpc
import pytest
import tomllib
import yaml
from grpc_health.v1 import health_pb2
from packaging.requirements import Requirement
from packaging.version import Version

from helpers import (
    CHAT_1,
    ServerProcess,
    add_model,
    config_text,
    health_of,
    publish,
    serve_repo,
    unloadable_weights,
    wait_until,
)
from reward_api.v1 import reward_pb2, reward_pb2_grpc
from reward_client import RewardClient, UnavailableError
from reward_client._calls import READY_SERVICE
from reward_server.cli import build_parser
from reward_server.metrics import ServerMetrics
from reward_server.server import READY_SERVICE_NAME

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
CONSTRAINTS = ROOT / "constraints.txt"
# The Kubernetes versions docs/deploying.md claims: native gRPC probes (1.27), PDB
# unhealthyPodEvictionPolicy and topology spread matchLabelKeys (on by default from 1.27 / 1.30).
KUBERNETES_VERSIONS = [f"1.{minor}" for minor in range(30, 38)]
# Kinds from CRDs (Prometheus Operator, KEDA) and kustomize's own files: no schema in kubernetes-validate.
CUSTOM_KINDS = {"PodMonitor", "PrometheusRule", "ScaledObject"}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def serve_args(argv: list[str]):
    args = build_parser().parse_args(argv)
    assert args.command == "serve"
    return args


def manifest_files() -> list[Path]:
    return sorted(p for p in MANIFESTS.rglob("*.yaml") if p.name != "kustomization.yaml")


@pytest.fixture(scope="module")
def resources() -> dict[tuple[str, str], dict]:
    docs = [d for path in manifest_files() for d in yaml.safe_load_all(path.read_text()) if d]
    by_key = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert len(by_key) == len(docs), "two resources with one kind and name"
    return by_key


@pytest.fixture(scope="module")
def deployment(resources) -> dict:
    return resources["Deployment", "reward-server"]


@pytest.fixture(scope="module")
def container(deployment) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def named_port(container: dict, name: str) -> int:
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return port


def pod_templates(resources) -> list[tuple[str, dict]]:
    return [
        (name, d["spec"]["template"]["spec"])
        for (kind, name), d in resources.items()
        if kind in ("Deployment", "Job")
    ]


# --- the manifests against the server -----------------------------------------------------------


def test_deployment_args_parse_with_the_server_cli_and_name_the_container_ports(container):
    args = serve_args(container["args"])
    assert named_port(container, "grpc") == args.port
    assert named_port(container, "metrics") == args.metrics_port
    assert named_port(container, "http") == args.http_port
    assert args.model_repository in [m["mountPath"] for m in container["volumeMounts"]]
    if args.auth_token_file:
        assert any(args.auth_token_file.startswith(m["mountPath"] + "/") for m in container["volumeMounts"])


def test_deployment_probes_ask_readiness_for_the_models_and_liveness_for_the_process(container):
    args = serve_args(container["args"])
    # kubelet's gRPC probes speak plaintext: with TLS on the serving port they need --health-port.
    assert args.tls_cert is None or args.health_port is not None
    probe_port = args.port if args.health_port is None else args.health_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == probe_port, probe
    assert container["readinessProbe"]["grpc"]["service"] == READY_SERVICE_NAME
    assert container["livenessProbe"]["grpc"].get("service", "") == ""  # cheap: the process answers
    assert container["startupProbe"]["grpc"].get("service", "") == ""


def test_client_watches_the_health_name_the_readiness_probe_asks_for():
    assert READY_SERVICE == READY_SERVICE_NAME


def test_every_pod_runs_restricted_non_root_without_a_service_account_token(resources):
    templates = pod_templates(resources)
    assert {name for name, _ in templates} >= {"reward-server"} and len(templates) >= 2
    for name, pod in templates:
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] != 0, name
        assert security["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        assert resources["ServiceAccount", pod["serviceAccountName"]]["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], name
    namespace = next(d for (kind, _), d in resources.items() if kind == "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_deployment_requests_a_gpu_and_outlasts_the_drain(deployment, container):
    pod = deployment["spec"]["template"]["spec"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert pod["terminationGracePeriodSeconds"] > serve_args(container["args"]).grace_period


def test_service_is_headless_and_routes_the_grpc_and_metrics_ports_to_the_deployment_pods(
    resources, deployment, container
):
    service = resources["Service", "reward-server"]
    assert service["spec"]["clusterIP"] == "None"  # DNS returns every pod: the client balances
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    args = serve_args(container["args"])
    assert ports["grpc"]["port"] == args.port and ports["grpc"]["targetPort"] == "grpc"
    assert ports["metrics"]["port"] == args.metrics_port and ports["metrics"]["targetPort"] == "metrics"
    assert ports["http"]["port"] == args.http_port and ports["http"]["targetPort"] == "http"


def test_disruption_budget_spread_and_network_policy_select_the_deployment_pods(
    resources, deployment, container
):
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pdb = resources["PodDisruptionBudget", "reward-server"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} >= {"kubernetes.io/hostname"}
    assert all(c["labelSelector"]["matchLabels"].items() <= labels.items() for c in spread)
    policy = resources["NetworkPolicy", "reward-server"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    opened = {port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]}
    assert opened == {"grpc", "http", "metrics"} and all(named_port(container, name) for name in opened)
    assert policy["spec"]["egress"] == []  # the server opens no connection: models come from the volume


def test_import_job_writes_the_volume_the_deployment_reads_in_poll_mode(resources, deployment, container):
    args = serve_args(container["args"])
    assert args.model_control_mode == "poll"  # a new version rolls in without a restart
    (job_container,) = resources["Job", "reward-import-internlm2-7b-reward"]["spec"]["template"]["spec"][
        "containers"
    ]
    job = build_parser().parse_args(job_container["args"])
    assert job.command == "import"

    def claim_at(pod: dict, c: dict, path: str) -> tuple[str, bool]:
        (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == path]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        return volume["persistentVolumeClaim"]["claimName"], mount.get("readOnly", False)

    job_pod = resources["Job", "reward-import-internlm2-7b-reward"]["spec"]["template"]["spec"]
    assert claim_at(job_pod, job_container, job.repository) == ("reward-models", False)
    assert claim_at(deployment["spec"]["template"]["spec"], container, args.model_repository) == (
        "reward-models",
        True,
    )
    # Replicas on several nodes read it while the Job writes it.
    assert resources["PersistentVolumeClaim", "reward-models"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_autoscaler_targets_the_deployment_on_a_metric_the_server_exports_and_prometheus_scrapes(
    resources, deployment, container
):
    scaled = resources["ScaledObject", "reward-server"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert 1 <= scaled["spec"]["minReplicaCount"] < scaled["spec"]["maxReplicaCount"]
    (trigger,) = scaled["spec"]["triggers"]
    query = trigger["metadata"]["query"]
    exported = {m.name for m in ServerMetrics().registry.collect()}
    used = set(re.findall(r"\b(reward_[a-z_]+)\b", query))
    assert used and used <= exported, (used, exported)
    monitor = resources["PodMonitor", "reward-server"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert named_port(container, endpoint["port"]) == serve_args(container["args"]).metrics_port
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    job = labels[monitor["spec"]["jobLabel"]]  # Prometheus' job label: the query selects it
    assert f'job="{job}"' in query and f'namespace="{deployment["metadata"]["namespace"]}"' in query
    # With the autoscaler, the applied Deployment carries no replica count (apply would reset KEDA's).
    (patch,) = yaml.safe_load((MANIFESTS / "autoscaling" / "kustomization.yaml").read_text())["patches"]
    assert patch["target"] == {"kind": "Deployment", "name": deployment["metadata"]["name"]}
    assert yaml.safe_load(patch["patch"]) == [{"op": "remove", "path": "/spec/replicas"}]


def test_every_kustomization_lists_exactly_the_manifests_of_its_folder():
    kustomizations = sorted(MANIFESTS.rglob("kustomization.yaml"))
    assert len(kustomizations) >= 4
    for path in kustomizations:
        listed = set(yaml.safe_load(path.read_text())["resources"])
        present = {p.name for p in path.parent.glob("*.yaml") if p.name != "kustomization.yaml"}
        assert listed == present, path
    covered = {p.parent / r for p in kustomizations for r in yaml.safe_load(p.read_text())["resources"]}
    assert covered == set(manifest_files())


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_pass_kubernetes_validate_strict(resources, version):
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the test extra")
    for (kind, _), resource in resources.items():
        if kind in CUSTOM_KINDS:
            continue
        kv.validate(resource, version, strict=True)  # raises ValidationError with the path of the bad field


def find_checkov() -> str | None:
    for candidate in (
        os.environ.get("CHECKOV"),
        str(ROOT / ".venv-tools" / "bin" / "checkov"),
        shutil.which("checkov"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def test_manifests_pass_the_checkov_security_linter_with_every_skip_justified():
    checkov = find_checkov()
    if checkov is None:
        pytest.skip(
            "checkov not found: `make tools` installs it in .venv-tools (it cannot share the test venv: "
            "it pins packaging and networkx below what torch and our pins need)"
        )
    done = subprocess.run(
        [checkov, "-d", str(MANIFESTS), "--framework", "kubernetes", "--skip-download", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(done.stdout)
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["resource_count"] >= len(manifest_files())
    results = report["results"]
    failed = [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
    assert failed == [], failed
    assert len(results["passed_checks"]) > 100, "checkov checked next to nothing"
    for skipped in results["skipped_checks"]:  # annotations checkov.io/skipN: ID=reason
        assert len(skipped["check_result"].get("suppress_comment", "")) > 20, skipped["check_id"]


# --- readiness: the health name the probe and the client watch ------------------------------------


def test_ready_health_goes_not_serving_when_a_model_the_server_must_serve_is_not_ready(
    tiny_checkpoint, tmp_path
):
    add_model(tmp_path, "rm", tiny_checkpoint, config_text("rm"))
    add_model(tmp_path, "other", tiny_checkpoint, config_text("other"))
    with serve_repo(tmp_path, model_control_mode="explicit", load_models=("rm", "other")) as server:
        assert health_of(server.target, READY_SERVICE_NAME) == SERVING
        # Control calls on a raw channel: a client that watches the ready name sends nothing to a
        # server that is not ready (docs/deploying.md).
        with (
            grpc.insecure_channel(server.target) as channel,
            RewardClient(server.target, model="other", timeout=30) as client,
        ):
            control = reward_pb2_grpc.RewardServiceStub(channel)
            assert isinstance(client.get_score(CHAT_1), float)

            # A model loaded later, and failing, does not gate the server (on a shared volume it would
            # take every replica out at once); its own health name says NOT_SERVING.
            late = tmp_path / "late"
            late.mkdir()
            (late / "config.pbtxt").write_text(config_text("late"))
            publish(tiny_checkpoint, late, 1, unloadable_weights)
            with pytest.raises(grpc.RpcError):
                control.LoadModel(reward_pb2.LoadModelRequest(model="late"), timeout=60)
            assert health_of(server.target, "late") == NOT_SERVING
            assert health_of(server.target, READY_SERVICE_NAME) == SERVING

            # An unload by request is the operator's choice, not a fault: the replica stays in rotation
            # for the models it still serves (taking it out would stop those too), as KServe's
            # ServerReady says (one rule, docs/model-management.md). The model's own name says NOT_SERVING.
            control.UnloadModel(reward_pb2.UnloadModelRequest(model="rm"), timeout=60)
            assert health_of(server.target, "rm") == NOT_SERVING
            assert health_of(server.target, READY_SERVICE_NAME) == SERVING
            assert isinstance(client.get_score(CHAT_1, timeout=30), float)

            # Loaded again, it is required again: left with no ready version (its only version replaced
            # by one that fails to load), it makes the server not ready.
            control.LoadModel(reward_pb2.LoadModelRequest(model="rm"), timeout=60)
            shutil.rmtree(tmp_path / "rm" / "1")
            publish(tiny_checkpoint, tmp_path / "rm", 2, unloadable_weights)
            with pytest.raises(grpc.RpcError):
                control.LoadModel(reward_pb2.LoadModelRequest(model="rm"), timeout=60)
            assert health_of(server.target, "rm") == NOT_SERVING
            wait_until(lambda: health_of(server.target, READY_SERVICE_NAME) == NOT_SERVING, timeout=10)
            assert health_of(server.target, "other") == SERVING  # per model, the other one still serves
            assert health_of(server.target, "") == SERVING  # liveness: the process is fine
            # The client watches the ready name: a replica out of rotation gets no calls.
            with pytest.raises(UnavailableError):
                client.get_score(CHAT_1, timeout=5)

            shutil.copytree(tiny_checkpoint, tmp_path / "rm" / "3")
            control.LoadModel(reward_pb2.LoadModelRequest(model="rm"), timeout=60)
            wait_until(lambda: health_of(server.target, READY_SERVICE_NAME) == SERVING, timeout=10)
            wait_until(lambda: _scores(client))


def _scores(client: RewardClient) -> bool:
    try:
        return isinstance(client.get_score(CHAT_1, timeout=5), float)
    except UnavailableError:
        return False


def test_ready_health_goes_not_serving_when_the_server_drains(tiny_checkpoint, tmp_path):
    # A batch that waits 3 s to fill keeps a request in flight, so the draining server keeps its port open.
    add_model(tmp_path, "rm", tiny_checkpoint, config_text("rm", delay_us=3_000_000))
    server = serve_repo(tmp_path)
    try:
        assert health_of(server.target, READY_SERVICE_NAME) == SERVING
        with RewardClient(server.target, model="rm", timeout=30) as client:
            answered: list[float] = []
            caller = threading.Thread(target=lambda: answered.append(client.get_score(CHAT_1)))
            caller.start()
            wait_until(lambda: server.running.guard.in_flight > 0, timeout=10)
            stopping = asyncio.run_coroutine_threadsafe(server.running.stop(grace=10), server.loop)
            wait_until(lambda: health_of(server.target, READY_SERVICE_NAME) == NOT_SERVING, timeout=5)
            caller.join(30)
            stopping.result(30)
        assert len(answered) == 1  # the request in flight was answered
    finally:
        server._close_loop()


# --- the container health check -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_healthcheck():
    spec = importlib.util.spec_from_file_location("healthcheck", ROOT / "deploy" / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_follows_the_running_servers_port_and_health_port(tmp_path):
    shutil.copytree(ROOT / "model_repository", tmp_path / "repo")
    port, health_port = free_port(), free_port()
    server = ServerProcess(tmp_path / "repo", "--health-port", str(health_port), port=port).wait_started()
    try:
        script = [sys.executable, str(ROOT / "deploy" / "healthcheck.py"), "--pid", str(server.proc.pid)]
        done = subprocess.run(script, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert f"127.0.0.1:{health_port} {READY_SERVICE_NAME}: SERVING" in done.stdout
        not_a_server = subprocess.run(
            [*script[:2], "--pid", str(os.getpid())], capture_output=True, text=True, timeout=60
        )
        assert not_a_server.returncode == 1 and "no `reward-server serve`" in not_a_server.stderr
    finally:
        server.kill()


def test_healthcheck_asks_the_serving_port_without_a_health_port_and_refuses_tls_without_one():
    healthcheck = load_healthcheck()
    assert (
        healthcheck.target(["serve", "--model-repository", "/models", "--port", "6000"]) == "127.0.0.1:6000"
    )
    assert (
        healthcheck.target(["serve", "--model-repository", "/m", "--host", "10.0.0.5", "--port", "7"])
        == "10.0.0.5:7"
    )
    with pytest.raises(SystemExit, match="--health-port"):
        healthcheck.target(["serve", "--model-repository", "/m", "--tls-cert", "c.pem", "--tls-key", "k.pem"])
    cmdline = [
        "/opt/venv/bin/python3",
        "/opt/venv/bin/reward-server",
        "--log-level",
        "DEBUG",
        "serve",
        "--port",
        "1",
    ]
    assert healthcheck.server_argv(cmdline) == ["--log-level", "DEBUG", "serve", "--port", "1"]
    assert healthcheck.server_argv(["python3", "-m", "reward_server", "import", "x"]) is None


# --- the image -------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


def final_stage() -> list[tuple[str, str]]:
    steps = dockerfile()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_dockerfile_serves_a_mounted_repository_as_non_root_with_a_health_check_that_reads_its_args():
    stage = dict(final_stage())  # the last of each instruction in the runtime stage
    assert json.loads(stage["ENTRYPOINT"]) == ["reward-server"]
    args = serve_args(json.loads(stage["CMD"]))
    assert json.loads(stage["VOLUME"]) == [args.model_repository]
    assert stage["EXPOSE"].split() == [str(args.port), str(args.http_port)]
    assert stage["USER"] not in ("root", "0")
    assert "healthcheck.py" in stage["HEALTHCHECK"] and str(args.port) not in stage["HEALTHCHECK"]


def test_dockerfile_installs_the_pinned_dependencies_before_it_copies_the_code():
    steps = dockerfile()
    assert not any(
        word == "FROM" and "nvidia/cuda" in rest for word, rest in steps
    )  # CUDA comes from the wheels
    first_code = min(
        i
        for i, (word, rest) in enumerate(steps)
        if word == "COPY" and rest.split()[0] in ("server", "client")
    )
    installs = [i for i, (word, rest) in enumerate(steps) if word == "RUN" and "-c constraints.txt" in rest]
    assert installs and installs[0] < first_code
    copied_before = " ".join(rest for word, rest in steps[: installs[0]] if word == "COPY")
    assert "constraints.txt" in copied_before and "pyproject.toml" in copied_before
    # The runtime stage takes the dependencies' venv as one layer, then installs the code's wheel on top
    # without touching a dependency: a code change never re-ships the dependencies.
    stage = final_stage()
    copies = [rest for word, rest in stage if word == "COPY" and rest.startswith("--from=")]
    assert copies[0] == "--from=deps /opt/venv /opt/venv", copies
    (code_install,) = [rest for word, rest in stage if word == "RUN" and "pip install" in rest]
    assert "--no-deps" in code_install and ".whl" in code_install


def test_image_requirements_are_the_pyproject_dependencies_with_the_gpu_extra():
    spec = importlib.util.spec_from_file_location("requirements", ROOT / "deploy" / "requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = {Requirement(r).name for r in module.requirements(str(ROOT / "pyproject.toml"), ["gpu"])}
    assert {"torch", "onnxruntime-gpu", "transformers", "grpcio", "protobuf"} <= names
    assert "onnxruntime" not in names  # the CPU build and the GPU build cannot be installed together


# --- one constraints file for CI and the image ---------------------------------------------------


def pins() -> dict[str, str]:
    found = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            found[canonical(requirement.name)] = spec.version
    return found


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_constraints_pin_every_dependency_of_the_server_within_its_range():
    project = pyproject()
    pinned = pins()
    extras = project["optional-dependencies"]
    requirements = project["dependencies"] + [r for extra in ("cpu", "gpu", "test") for r in extras[extra]]
    for line in requirements:
        requirement = Requirement(line)
        name = canonical(requirement.name)
        assert name in pinned, f"{name} is not pinned in constraints.txt"
        assert Version(pinned[name]) in requirement.specifier, (line, pinned[name])
    # The image (onnxruntime-gpu) runs the onnxruntime version CI (onnxruntime) tests.
    assert pinned["onnxruntime"] == pinned["onnxruntime-gpu"]
    assert "+" not in pinned["torch"]  # one pin for the CPU build (CI) and the CUDA build (image)


def test_makefile_and_dockerfile_install_from_the_one_constraints_file():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^CONSTRAINTS := constraints\.txt$", makefile, re.M)
    assert re.search(r"pip install .*-c \$\(CONSTRAINTS\) -e \"\.\[cpu,test\]\"", makefile)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    steps = dockerfile()
    assert any(word == "COPY" and "constraints.txt" in rest for word, rest in steps)
    assert any(word == "RUN" and "pip install -c constraints.txt" in rest for word, rest in steps)


def test_installed_versions_are_the_pinned_ones_in_a_venv_made_by_make_setup():
    stamp = Path(sys.prefix) / ".installed"
    expected = hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()
    if not stamp.is_file() or stamp.read_text().strip() != expected:
        pytest.skip("this venv was not installed from this constraints.txt by `make setup` (CI's is)")
    wrong = {}
    for name, version in pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # e.g. onnxruntime-gpu: the image's, not CI's
        if Version(installed).public != Version(version).public:
            wrong[name] = (installed, version)
    assert wrong == {}


def test_server_distribution_ships_the_client_and_names_no_distribution_of_ours(tmp_path):
    ours = {"reward-client", "reward-server"}
    for line in pyproject()["dependencies"] + [
        r for rs in pyproject()["optional-dependencies"].values() for r in rs
    ]:
        assert canonical(Requirement(line).name) not in ours, line  # never looked up on an index
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("server", "client"):
        shutil.copytree(
            ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(source),
            "-w",
            str(tmp_path / "dist"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("reward_server-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for member in (
        "reward_server/cli.py",
        "reward_client/__init__.py",
        "reward_client/py.typed",
        "reward_api/v1/reward_pb2.py",
        "reward_api/v1/reward_pb2.pyi",
    ):
        assert member in names, member


# --- the Makefile ---------------------------------------------------------------------------------


def make_dry_run(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    done = subprocess.run(["make", "-n", "-B", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_serve_listens_on_localhost_unless_host_is_given():
    assert "--host 127.0.0.1 " in make_dry_run("serve")
    assert "--host 0.0.0.0 " in make_dry_run("serve", "HOST=0.0.0.0")


def test_make_setup_takes_torch_from_the_cpu_index_or_a_local_cpu_wheel_only():
    commands = make_dry_run("setup")
    version = pins()["torch"]
    assert f'--index-url https://download.pytorch.org/whl/cpu "torch=={version}"' in commands
    assert f'|| .venv/bin/python -m pip install -q --no-deps "torch=={version}+cpu"' in commands


def test_docs_kubernetes_example_targets_the_headless_service(resources):
    docs = " ".join(
        p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if p.is_file()
    )
    service = resources["Service", "reward-server"]
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    assert re.search(rf"dns:///{name}\.(<namespace>|{namespace})\.[^\"']*:{port}", docs), (
        "the docs' client example"
    )
