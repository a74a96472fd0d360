"""The benchmark suite (bench/): its peers answer like the server, its floor packs within budget, its
profile summary adds up, and a brief run of the whole suite reports every system it measures."""

from __future__ import annotations

import asyncio
import json
import random

import pytest
from bench.floor import budget_batches, measure_floor
from bench.peers import start_naive_peer
from bench.profiling import summarize
from bench.report import table
from bench.suite import SuiteOptions, run_suite
from bench.workloads import rank_workload, score_workload

from helpers import CHAT_1, CHAT_2, add_model, random_chat, serve_repo
from reward_client import RewardClient
from reward_server.offline.tiny_models import TinyShape


def test_naive_peer_scores_equal_server_when_same_inputs(tiny_checkpoint, tmp_path):
    add_model(tmp_path, "m", tiny_checkpoint)
    chats = [random_chat(random.Random(i)) for i in range(6)] + [CHAT_1, CHAT_2]
    with serve_repo(tmp_path) as server:
        naive_server, naive_port, core = server.run(start_naive_peer(server.running.repository))
        try:
            with (
                RewardClient(server.target, model="m") as ours,
                RewardClient(f"127.0.0.1:{naive_port}", model="m") as peer,
            ):
                served, naive = ours.score(chats), peer.score(chats)
                ranked_ours = ours.rank_candidates(CHAT_1[:1], ["a", "bb", "ccc"])
                ranked_peer = peer.rank_candidates(CHAT_1[:1], ["a", "bb", "ccc"])
        finally:
            server.run(naive_server.stop(0))
            core.close()
    assert [r.num_tokens for r in served] == [r.num_tokens for r in naive]
    assert [r.score for r in naive] == pytest.approx([r.score for r in served], rel=1e-5, abs=1e-5)
    assert ranked_peer.order == ranked_ours.order
    assert ranked_peer.scores == pytest.approx(ranked_ours.scores, rel=1e-5, abs=1e-5)


def test_floor_batches_stay_within_budget_when_lengths_vary():
    rng = random.Random(0)
    sequences = [[1] * rng.randint(1, 300) for _ in range(50)] + [[1] * 700]
    batches = budget_batches(sequences, 600)
    assert sorted(map(len, sequences)) == [len(s) for batch in batches for s in batch]  # all, length-sorted
    for batch in batches:
        assert len(batch) == 1 or len(batch) * len(batch[-1]) <= 600  # an over-budget input goes alone
    assert [len(b) for b in budget_batches(sequences, 0)] == [1] * len(sequences)


def test_floor_reports_every_shape_when_measured():
    calls = []

    def score_batch(batch):
        calls.append(len(batch))
        return [0.0] * len(batch)

    floor = measure_floor(score_batch, [[1] * n for n in (5, 9, 30)], budgets=(20, 64))
    assert set(floor["shapes"]) == {"batch_1", "tokens_20", "tokens_64"}
    assert floor["tokens"] == 44 and floor["best_shape"] in floor["shapes"]
    assert floor["shapes"]["tokens_64"]["batches"] == 2  # (5, 9) padded to 18 tokens, then 30 alone
    assert sum(calls) == 3 * 3 + 3  # every shape computes every input once, plus one warmup batch each


def test_profile_summary_counts_self_and_inclusive_when_given_raw_stacks(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "thread (1): batcher:m;run (b.py:1);forward (f.py:10) 6\n"
        "thread (1): batcher:m;run (b.py:2);forward (f.py:11) 2\n"
        "thread (2): encode_0;work (e.py:3) 2\n"
        "thread (3): asyncio-waitpid-0;wait (w.py:1) 50\n"
    )
    text = summarize(raw, top=3)
    assert text.startswith("10 samples")
    assert "80.0%  batcher:m" in text and "20.0%  encode" in text and "waitpid" not in text
    assert "80.0%  forward (f.py)" in text  # lines of one function add up


def test_workloads_have_the_asked_lengths_when_generated(tiny_checkpoint, tmp_path):
    add_model(tmp_path, "m", tiny_checkpoint)
    with serve_repo(tmp_path) as server:
        encoder = server.running.repository.resolve("m", "").encoder
        mixed = score_workload("mixed", encoder, 20, 16, 200, seed=1)
        again = score_workload("mixed", encoder, 20, 16, 200, seed=1)
        rank = rank_workload(encoder, 2, prompt_tokens=120, responses=3, response_tokens=20, seed=2)
    lengths = [len(ids) for request in mixed.sequences for ids in request]
    assert mixed.requests == again.requests  # seeded
    assert min(lengths) >= 10 and max(lengths) <= 200 and max(lengths) - min(lengths) > 100
    assert all(len(request) == 3 for request in rank.sequences)
    for request in rank.sequences:
        assert all(130 <= len(ids) <= 150 for ids in request)  # ~120 prompt + ~20 response tokens


def test_suite_reports_every_system_when_run_briefly(tmp_path):
    options = SuiteOptions(
        concurrency={"mixed": (2,), "rank": (1,), "tiny": (2,)},
        warmup_s=0.5,
        duration_s=1.0,
        mixed_requests=6,
        rank_requests=1,
        rank_prompt_tokens=60,
        rank_responses=3,
        rank_response_tokens=10,
        tiny_requests=8,
        floor_tokens=400,
        bench_shape=TinyShape(max_position_embeddings=1024),
        max_batch_tokens=2048,
        repeats=1,
        peak_tflops=1.0,
    )
    results = asyncio.run(run_suite(options, tmp_path / "repo"))
    json.dumps(results)  # the result file is JSON
    workloads = results["workloads"]
    assert set(workloads["mixed"]["systems"]) == {"server", "naive"}
    assert set(workloads["rank"]["systems"]) == {"server", "server-full", "naive"}
    assert set(workloads["tiny"]["systems"]) == {"server", "naive", "bare-grpc"}
    for entry in workloads.values():
        for runs in entry["systems"].values():
            assert runs[0]["requests"] > 0 and runs[0]["errors"] == 0
    batching = workloads["mixed"]["systems"]["server"][0]["batching"]
    assert batching["batches"] > 0 and batching["forward_tokens_per_s"] > 0
    assert (
        workloads["rank"]["systems"]["server"][0]["batching"]["shared_prompt_groups"] > 0
    )  # shared path ran
    assert workloads["rank"]["systems"]["server-full"][0]["batching"]["shared_prompt_groups"] == 0
    assert workloads["mixed"]["floor"]["tokens_per_s"] > 0
    assert {
        "mixed_server_over_floor",
        "rank_shared_over_full",
        "tiny_server_over_bare_grpc_at_2",
        "mixed_server_over_floor_median_of_pairs",
        "tiny_server_over_bare_grpc_at_2_median_of_pairs",
    } <= set(results["summary"])
    for name, reference in (
        ("mixed", "floor"),
        ("tiny", "bare-grpc"),
    ):  # each pair: the server and its reference
        (pair,) = workloads[name]["paired"]["pairs"]
        assert (
            workloads[name]["paired"]["reference"] == reference
            and pair["server"] > 0
            and pair["reference"] > 0
        )
    shape = (
        TinyShape()
    )  # 2 layers: attention (q, o: h x h; k, v: h x h/2), MLP 3 x h x 128, 2 norms; final norm; head
    per_layer = (
        3 * shape.hidden_size**2 + 3 * shape.hidden_size * shape.intermediate_size + 2 * shape.hidden_size
    )
    rm = results["models"]["rm"]
    assert rm["non_embedding_params"] == shape.num_hidden_layers * per_layer + 2 * shape.hidden_size
    assert (rm["device"], rm["dtype"]) == ("cpu", "float32")
    served = max(r["tokens_per_s"] for r in workloads["mixed"]["systems"]["server"])
    assert results["summary"]["mixed_model_flops_utilisation"] == pytest.approx(
        2 * rm["non_embedding_params"] * served / 1e12
    )
    assert "bare-grpc" in table(results)
    try:
        from bench.report import plot

        plot(results, tmp_path / "suite.png")
    except ImportError:  # matplotlib comes with the bench extra only
        return
    assert (tmp_path / "suite.png").read_bytes().startswith(b"\x89PNG")


def test_callers_bench_reports_each_caller_count_when_run_briefly():
    from bench.callers import DEMO, run
    from bench.callers import table as callers_table

    runs = asyncio.run(run((2, 8), 1, SuiteOptions(warmup_s=0.3, duration_s=0.7), DEMO))
    assert set(runs) == {2, 8}
    for (result,) in runs.values():
        assert result["requests"] > 0 and result["errors"] == 0 and result["latency_p99_ms"] > 0
    assert callers_table(runs).count("\n| ") == 2  # one row per caller count under the header


def test_kserve_bench_reports_every_protocol_when_run_briefly(tmp_path):
    from bench.kserve import side_by_side, summary

    options = SuiteOptions(
        warmup_s=0.2,
        duration_s=0.5,
        tiny_requests=16,
        mixed_requests=4,
        bench_shape=TinyShape(max_position_embeddings=1024),
        max_batch_tokens=2048,
    )  # no tuning
    results = asyncio.run(side_by_side(options, tmp_path, ("tiny",), concurrency=4, rounds=1))
    entry = results["workloads"]["tiny"]
    assert set(entry["rewards"]) == {"score", "model_infer", "http_infer"}  # checked equal before measuring
    (run,) = entry["rounds"]
    for protocol in ("score", "model_infer", "http_infer"):
        assert (
            run[protocol]["errors"] == 0
            and run[protocol]["requests"] > 0
            and run[protocol]["tokens_per_s"] > 0
        )
        assert run[protocol]["latency_p99_ms"] >= run[protocol]["latency_p50_ms"] > 0
    for protocol in ("model_infer", "http_infer"):
        assert run["ratios"][protocol] == run[protocol]["requests_per_s"] / run["score"]["requests_per_s"]
        assert entry["median_ratios"][protocol] == run["ratios"][protocol]
    assert "/infer (HTTP, binary)" in summary(results) and "ModelInfer (gRPC)" in summary(results)


def test_kserve_cost_times_both_protocols_when_each_answers_the_cores_reward():
    from bench.kserve_cost import measure

    timings = asyncio.run(measure(count=20, repeats=2))  # RuntimeError if a response lost the reward
    assert set(timings) == {"Score", "ModelInfer"} and all(t > 0 for t in timings.values())


def test_kserve_cost_served_reports_both_protocols_when_run_briefly(tmp_path):
    from bench.kserve_cost import served

    options = SuiteOptions(bench_shape=TinyShape(max_position_embeddings=1024), max_batch_tokens=2048)
    result = asyncio.run(served(4, tmp_path, options))  # no tuning
    assert result["score_us"] > 0 and result["infer_us"] > 0
    assert all(abs(v) < 1e6 for v in result.values())  # finite, and under a second per call
