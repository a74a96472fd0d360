"""TLS, mutual TLS and bearer tokens through a real server: each accepted with the right credentials
and refused with the wrong ones (handshake failure / UNAUTHENTICATED / PERMISSION_DENIED)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import reward_client as rc
from helpers import CHAT_1, serve_repo
from reference import close, reference_score
from reward_client import RewardClient

TOKEN = "tls-and-a-token"
# What a client sees when the server ends the handshake (its own check failed, or plaintext met TLS).
CLOSED_IN_HANDSHAKE = "(?i)handshake|socket closed|connection reset"


def mtls_client(target: str, pki: dict, model: str = "tiny") -> RewardClient:
    """A client that trusts the server CA and presents a certificate of the client CA: what mTLS accepts."""
    return RewardClient(
        target,
        model=model,
        ca_cert=pki["server_ca"],
        client_cert=pki["client"].cert,
        client_key=pki["client"].key,
    )


@pytest.fixture(scope="module")
def tls_server(tiny_repo, pki):
    with serve_repo(
        tiny_repo, tls_cert=pki["server"].cert, tls_key=pki["server"].key, auth_token=TOKEN
    ) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(tiny_repo, pki):
    with serve_repo(
        tiny_repo, tls_cert=pki["server"].cert, tls_key=pki["server"].key, tls_client_ca=pki["client_ca"]
    ) as server:
        yield server


def test_tls_client_scores_correctly_when_it_trusts_the_server_ca_and_sends_the_token(
    tls_server, pki, tiny_checkpoint
):
    with RewardClient(tls_server.target, model="tiny", ca_cert=pki["server_ca"], token=TOKEN) as rm:
        assert close(rm.get_score(CHAT_1), reference_score(tiny_checkpoint, CHAT_1))
    with RewardClient(
        tls_server.target, model="tiny", ca_cert=pki["server_ca"].read_bytes(), token=TOKEN
    ) as rm:
        assert isinstance(rm.get_score(CHAT_1), float)  # PEM bytes work as well as a path


def test_tls_token_is_refused_when_missing_or_wrong(tls_server, pki):
    with RewardClient(tls_server.target, model="tiny", ca_cert=pki["server_ca"]) as rm:
        with pytest.raises(rc.UnauthenticatedError):
            rm.get_score(CHAT_1)
    with RewardClient(tls_server.target, model="tiny", ca_cert=pki["server_ca"], token=TOKEN + "x") as rm:
        with pytest.raises(rc.PermissionDeniedError):
            rm.get_score(CHAT_1)


def test_tls_handshake_fails_when_the_client_does_not_trust_the_server_certificate(tls_server, pki):
    with RewardClient(
        tls_server.target, model="tiny", ca_cert=pki["rogue_ca"], token=TOKEN, timeout=10
    ) as rm:
        with pytest.raises(rc.UnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
            rm.get_score(CHAT_1)


def test_tls_handshake_fails_when_the_name_does_not_match_the_certificate(tls_server, pki):
    with RewardClient(
        tls_server.target,
        model="tiny",
        ca_cert=pki["server_ca"],
        token=TOKEN,
        timeout=10,
        tls_server_name="reward.example.com",
    ) as rm:
        with pytest.raises(rc.UnavailableError, match="Hostname Verification Check failed"):
            rm.get_score(CHAT_1)


def test_tls_server_refuses_a_plaintext_client(tls_server):
    with RewardClient(tls_server.target, model="tiny", token=TOKEN, timeout=10) as rm:
        with pytest.raises(rc.UnavailableError, match=CLOSED_IN_HANDSHAKE):
            rm.get_score(CHAT_1)


def test_tls_health_answers_without_a_token(tls_server, pki):
    credentials = grpc.ssl_channel_credentials(root_certificates=pki["server_ca"].read_bytes())
    with grpc.secure_channel(tls_server.target, credentials) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_mtls_client_scores_when_it_presents_a_certificate_of_the_client_ca(
    mtls_server, pki, tiny_checkpoint
):
    with mtls_client(mtls_server.target, pki) as rm:
        assert close(rm.get_score(CHAT_1), reference_score(tiny_checkpoint, CHAT_1))


@pytest.mark.parametrize("who", ["no-certificate", "certificate-of-another-ca"])
def test_mtls_handshake_fails_when_the_client_certificate_is_missing_or_foreign(mtls_server, pki, who):
    own = (
        {}
        if who == "no-certificate"
        else {"client_cert": pki["rogue_client"].cert, "client_key": pki["rogue_client"].key}
    )
    with RewardClient(mtls_server.target, model="tiny", ca_cert=pki["server_ca"], timeout=10, **own) as rm:
        with pytest.raises(rc.UnavailableError, match=CLOSED_IN_HANDSHAKE):
            rm.get_score(CHAT_1)
    # The server is unharmed: a client with the right certificate still gets scores.
    with mtls_client(mtls_server.target, pki) as rm:
        assert isinstance(rm.get_score(CHAT_1), float)


def test_client_refuses_a_certificate_without_its_key(pki):
    with pytest.raises(ValueError, match="go together"):
        RewardClient("127.0.0.1:1", model="tiny", client_cert=pki["client"].cert)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tls_cert": "x.crt"}, "go together"),
        ({"tls_client_ca": "ca.crt"}, "needs --tls-cert"),
        ({"tls_cert": "missing.crt", "tls_key": "missing.key"}, "does not exist"),
    ],
)
def test_settings_refuse_incomplete_tls_when_files_are_missing_or_unpaired(tiny_repo, fields, message):
    from reward_server.settings import ServerSettings

    with pytest.raises(ValueError, match=message):
        ServerSettings(model_repository=tiny_repo, **fields)


def test_serve_command_takes_the_tls_flags_and_refuses_a_client_without_a_certificate(pki):
    from helpers import ServerProcess

    demo = Path(__file__).resolve().parent.parent / "model_repository"
    server = ServerProcess(
        demo,
        "--tls-cert",
        str(pki["server"].cert),
        "--tls-key",
        str(pki["server"].key),
        "--tls-client-ca",
        str(pki["client_ca"]),
    ).wait_started()
    try:
        with mtls_client(server.target, pki, "demo") as rm:
            assert isinstance(rm.get_score(CHAT_1), float)
        with RewardClient(server.target, model="demo", ca_cert=pki["server_ca"], timeout=10) as rm:
            with pytest.raises(rc.UnavailableError, match=CLOSED_IN_HANDSHAKE):
                rm.get_score(CHAT_1)
        assert "TLS on (mutual" in server.log()
    finally:
        server.kill()


def test_tls_client_scores_over_a_list_of_replicas_checking_each_certificate(tiny_repo, pki, tls_server):
    with serve_repo(
        tiny_repo, tls_cert=pki["server"].cert, tls_key=pki["server"].key, auth_token=TOKEN
    ) as second:
        targets = [tls_server.target, f"localhost:{second.port}"]
        with RewardClient(targets, model="tiny", ca_cert=pki["server_ca"], token=TOKEN) as rm:
            assert len(rm.get_scores([CHAT_1] * 6)) == 6
        with RewardClient(targets, model="tiny", ca_cert=pki["rogue_ca"], token=TOKEN, timeout=10) as rm:
            with pytest.raises(rc.UnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
                rm.get_score(CHAT_1)


def test_health_port_answers_plaintext_probes_of_a_tls_server_with_the_serving_port_statuses(tiny_repo, pki):
    with serve_repo(
        tiny_repo, tls_cert=pki["server"].cert, tls_key=pki["server"].key, health_port=0
    ) as server:
        health_target = f"127.0.0.1:{server.running.health_port}"
        with grpc.insecure_channel(health_target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("", "reward_api.v1.RewardService", "tiny"):
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
            with pytest.raises(grpc.RpcError) as refused:  # it carries health only, not the API
                channel.unary_unary("/reward_api.v1.RewardService/ListModels")(b"", timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
            server.run(server.running.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING))
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
