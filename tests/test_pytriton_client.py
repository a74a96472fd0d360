"""PyTriton's client (what NeMo-Aligner's PPO / REINFORCE actors use to reach their reward model), unmodified,
against the HTTP front: ModelClient and FuturesModelClient, with tokens + sequence_lengths exactly as
NeMo-Aligner's RemoteGPTRMClient sends them and with sentences, on a model named as the user likes.

nvidia-pytriton is installed with --no-deps (see the Makefile): its metadata pins numpy<2 and protobuf<7,
which its client code does not need."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import add_model, close, serve_repo
from reward_client import RewardClient

pytriton_client = pytest.importorskip("pytriton.client", reason="nvidia-pytriton (make setup installs it)")
pytriton_exceptions = pytest.importorskip("pytriton.client.exceptions")

MODEL = "nemo-aligner_rm.v2"  # a name with the characters users put in theirs
ROWS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [15]]
TEXTS = [b"hello world", "a longer text, 你好 😀".encode()]


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    add_model(repo, MODEL, tiny_checkpoint)
    with serve_repo(repo, http_port=0) as running:
        yield running


@pytest.fixture(scope="module")
def url(server) -> str:
    return f"http://127.0.0.1:{server.server.http.port}"


@pytest.fixture(scope="module")
def rm(server):
    with RewardClient(server.target, model=MODEL) as c:
        yield c


def rollout_batch(rows: list[list[int]]) -> dict[str, np.ndarray]:
    """What RemoteGPTRMClient.infer_rm_critic sends: response tokens right-padded with 0 to the longest
    row ([B, L] int64) and response_lengths.unsqueeze(1) ([B, 1] int64)."""
    width = max(len(r) for r in rows)
    return {
        "tokens": np.array([r + [0] * (width - len(r)) for r in rows], dtype=np.int64),
        "sequence_lengths": np.array([[len(r)] for r in rows], dtype=np.int64),
    }


def test_model_client_scores_tokens_as_reward_client_when_sent_as_nemo_aligner_sends_them(url, rm):
    expected = [r.score for r in rm.score(ROWS)]
    with pytriton_client.ModelClient(url, MODEL, init_timeout_s=60) as client:
        for rows, want in ((ROWS, expected), (ROWS[:1], expected[:1])):
            result = client.infer_batch(**rollout_batch(rows))
            assert result["rewards"].shape == (len(rows), 1)
            assert all(close(r, e) for r, e in zip(result["rewards"].flatten(), want))
            assert result["num_tokens"].flatten().tolist() == [len(r) for r in rows]


def test_model_client_scores_sentences_as_reward_client_when_sent_as_bytes(url, rm):
    expected = [r.score for r in rm.score([t.decode() for t in TEXTS])]
    with pytriton_client.ModelClient(url, MODEL, init_timeout_s=60) as client:
        result = client.infer_batch(sentences=np.array([[t] for t in TEXTS], dtype=object))
    assert all(close(r, e) for r, e in zip(result["rewards"].flatten(), expected))


def test_futures_model_client_scores_each_batch_when_many_are_in_flight_as_in_http_communicator(url, rm):
    expected = [r.score for r in rm.score(ROWS)]
    # NeMo-Aligner's HTTPCommunicator: one FuturesModelClient per server, infer_batch futures,
    # result()["rewards"].
    with pytriton_client.FuturesModelClient(
        url, MODEL, init_timeout_s=60, inference_timeout_s=600000
    ) as client:
        futures = [client.infer_batch(**rollout_batch(ROWS[i % 3 :] + ROWS[: i % 3])) for i in range(12)]
        for i, future in enumerate(futures):
            want = expected[i % 3 :] + expected[: i % 3]
            assert all(close(r, e) for r, e in zip(future.result(timeout=120)["rewards"].flatten(), want))


def test_model_client_raises_and_the_next_batch_scores_when_a_length_is_beyond_its_row(url, rm):
    bad = rollout_batch(ROWS)
    bad["sequence_lengths"][0, 0] = 99
    with pytriton_client.ModelClient(url, MODEL, init_timeout_s=60) as client:
        with pytest.raises(pytriton_exceptions.PyTritonClientInferenceServerError, match="sequence_lengths"):
            client.infer_batch(**bad)
        result = client.infer_batch(**rollout_batch(ROWS[:1]))
    assert close(result["rewards"][0, 0], rm.score(ROWS[:1])[0].score)
