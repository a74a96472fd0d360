"""The benchmark suite: our server, the floor, the naive peer and (for `tiny`) bare grpc.aio, side by
side in one run, on the same seeded inputs. Entry point: `python -m bench run` (bench/__main__.py).

The servers run in this process (each on the event loop of this process; models run on their own
threads); the clients run in a separate process (bench/load.py) so that they do not share the
servers' interpreter. The floor is measured here, on the served model's own backend, while no load runs.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import statistics
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bench import profiling
from bench.floor import GPU_EXTRA_BUDGETS, TOKEN_BUDGETS, measure_floor, shape_rate
from bench.instance_thread import run_alone
from bench.load import run_load_process
from bench.peers import BareServicer, start_grpc, start_naive_peer
from bench.workloads import Workload, rank_workload, score_workload
from reward_server.offline.tiny_models import TinyShape, write_tiny_checkpoint
from reward_server.repository.config import RewardDefaults, config_pbtxt
from reward_server.server import RewardServer, build_server
from reward_server.settings import ServerSettings

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
# Compute-bound on a 2-core CPU: ~12k tokens/s bare, so one `mixed` request of ~500 tokens is ~40 ms.
BENCH_SHAPE = TinyShape(
    hidden_size=256,
    intermediate_size=688,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=4,
    max_position_embeddings=2048,
)
TINY_SHAPE = TinyShape()
# The GPU shape: InternLM2-1.8B's backbone as a Llama (hidden 2048, 24 layers, 16 heads, 8 kv heads,
# MLP 8192, as in the published internlm2-1_8b config.json; ~1.5B parameters outside the embeddings). The
# vocabulary is the bench tokenizer's, so the embedding table is small; it does no FLOPs either way.
SHAPES = {
    "bench": BENCH_SHAPE,
    "internlm2-1.8b": TinyShape(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=24,
        num_attention_heads=16,
        num_key_value_heads=8,
        max_position_embeddings=4096,
        vocab_size=92544,
    ),
}
WORKLOAD_MODEL = {"mixed": "rm", "rank": "rm", "tiny": "tiny"}
WORKLOAD_SYSTEMS = {
    "mixed": ("server", "naive"),
    "rank": ("server", "server-full", "naive"),
    "tiny": ("server", "naive", "bare-grpc"),
}


@dataclass(frozen=True)
class SuiteOptions:
    workloads: tuple[str, ...] = ("mixed", "rank", "tiny")
    concurrency: dict[str, tuple[int, ...]] = field(
        default_factory=lambda: {"mixed": (1, 8, 64), "rank": (1, 4, 16), "tiny": (1, 8, 64)}
    )
    systems: tuple[str, ...] = ("server", "server-full", "naive", "bare-grpc")
    warmup_s: float = 1.5
    duration_s: float = 5.0
    # rank requests take ~1 s on the plain path: a 5 s window counts ~5 of them, so one request more or
    # less moves the rate by 20%. Its windows are this many times longer.
    rank_duration_factor: float = 3.0
    mixed_requests: int = 128
    rank_requests: int = 8
    rank_prompt_tokens: int = 1024
    rank_responses: int = 8
    rank_response_tokens: int = 128
    tiny_requests: int = 256
    floor: bool = True
    floor_tokens: int = 16384  # the floor runs over the workload's first inputs up to this many tokens (time)
    bench_shape: TinyShape = BENCH_SHAPE
    rm_dtype: str = "float32"  # the `rm` model's reward { dtype }: float16 for the GPU run
    # The device's dense peak in TFLOP/s at rm_dtype (H100 / H200 SXM, fp16: 989): the summary then gives
    # `mixed`'s model FLOPs utilisation, 2 x non-embedding parameters x served tokens/s / peak.
    peak_tflops: float | None = None
    max_batch_size: int = 64
    max_batch_tokens: int | None = None  # None: left unset in config.pbtxt, tuned by the server at load
    # `tiny` is served with this many intra-op threads (pytorch { intra_op_threads }; 0: torch's default).
    # On 2 cores shared with the event loop a second OpenMP thread costs a 64-wide model more than it
    # gives (the A/B is in docs/performance.md).
    tiny_intra_op_threads: int = 1
    # After the sweeps, the two ratios measured against a reference (mixed: the floor at its best shape;
    # tiny: bare grpc.aio) again this many times, server and reference back to back, at the top
    # concurrency: the median of these pairs is the ratio least moved by a noisy machine. 0: none.
    repeats: int = 3
    profile_to: Path | None = None  # py-spy each workload's served run at the top concurrency: summaries here


def write_repository(root: Path, options: SuiteOptions) -> Path:
    """`rm` (the compute-bound model, mixed and rank; options.rm_dtype) and `tiny` (fp32), on the GPU
    when there is one (instance_group KIND_AUTO)."""
    for name, shape, dtype in (
        ("rm", options.bench_shape, options.rm_dtype),
        ("tiny", TINY_SHAPE, "float32"),
    ):
        model = root / name
        model.mkdir(parents=True)
        text = config_pbtxt(
            name,
            RewardDefaults(max_sequence_length=shape.max_position_embeddings, dtype=dtype),
            max_batch_size=options.max_batch_size,
            max_queue_delay_us=2000,
            max_queue_size=0,
        )
        if options.max_batch_tokens is not None:
            text = text.replace(
                "dynamic_batching {", f"dynamic_batching {{\n  max_batch_tokens: {options.max_batch_tokens}"
            )
        if name == "tiny" and options.tiny_intra_op_threads:
            text += f"\npytorch {{ intra_op_threads: {options.tiny_intra_op_threads} }}\n"
        (model / "config.pbtxt").write_text(text)
        write_tiny_checkpoint(model / "1", shape=shape, seed=0)
    return root


def make_workload(name: str, running: RewardServer, options: SuiteOptions) -> Workload:
    encoder = running.repository.resolve(WORKLOAD_MODEL[name], "").encoder
    if name == "mixed":
        return score_workload("mixed", encoder, options.mixed_requests, 16, 1024, seed=1)
    if name == "rank":
        return rank_workload(
            encoder,
            options.rank_requests,
            options.rank_prompt_tokens,
            options.rank_responses,
            options.rank_response_tokens,
            seed=2,
        )
    return score_workload("tiny", encoder, options.tiny_requests, 8, 48, seed=3)


async def drive(
    target: str,
    model: str,
    kind: str,
    workload: Workload,
    concurrency: int,
    options: SuiteOptions,
    stamp: bool = False,
) -> dict:
    """One closed-loop run by the load process (bench/load.py); `stamp`: Score calls carry their send time."""
    duration = options.duration_s * (options.rank_duration_factor if workload.name == "rank" else 1.0)
    spec = {
        "target": target,
        "model": model,
        "kind": kind,
        "requests": workload.requests,
        "concurrency": concurrency,
        "warmup_s": options.warmup_s,
        "duration_s": duration,
        "stamp": stamp,
    }
    return await run_load_process("bench.load", spec)


async def _profiled(options: SuiteOptions, summary: Path) -> None:
    """py-spy over the measured window of the run being driven, summarised into `summary`."""
    await asyncio.sleep(options.warmup_s)
    raw = summary.with_suffix(".raw")
    if await profiling.record(options.duration_s, raw):
        summary.write_text(profiling.summarize(raw) + "\n")
        raw.unlink()
    else:
        log.warning("py-spy is not installed or cannot attach (pip install '.[bench]'): no profile")


def _first_tokens(sequences: list, tokens: int) -> list:
    """The leading sequences holding at most `tokens` tokens (at least one)."""
    total = 0
    for count, ids in enumerate(sequences):
        total += len(ids)
        if total > tokens:
            return sequences[: max(1, count)]
    return sequences


def batcher_delta(before, after) -> dict:
    """Batches, sizes and padding efficiency of what the server computed during one run."""
    real = after.real_tokens - before.real_tokens
    compute_s = after.compute_s - before.compute_s
    padded = after.computed_tokens - before.computed_tokens
    batches = after.batches - before.batches
    sizes = after.batch_sizes - before.batch_sizes
    return {
        "batches": batches,
        "mean_batch_size": (after.computed - before.computed) / batches if batches else 0.0,
        "max_batch_size": max(sizes) if sizes else 0,
        "shared_prompt_groups": after.shared_groups - before.shared_groups,  # which Rank path ran
        # The model's own rate inside its forwards during this run: served tokens/s over this is the
        # share of the time the model computed (less sensitive to a shared machine than the floor ratio).
        "forward_tokens_per_s": real / compute_s if compute_s else 0.0,
        "padding_efficiency": real / padded if padded else 1.0,
    }


async def paired_ratios(name: str, target: str, workload: Workload, reference, options: SuiteOptions) -> dict:
    """`options.repeats` pairs (reference, then the server at the top concurrency), back to back."""
    rate = "tokens_per_s" if name == "mixed" else "requests_per_s"
    top = max(options.concurrency[name])
    pairs = []
    for _ in range(options.repeats):
        ref = await reference()
        served = (await drive(target, WORKLOAD_MODEL[name], workload.kind, workload, top, options))[rate]
        pairs.append({"reference": ref, "server": served, "ratio": served / ref if ref else 0.0})
    return {
        "rate": rate,
        "reference": "floor" if name == "mixed" else "bare-grpc",
        "concurrency": top,
        "pairs": pairs,
        "median_ratio": statistics.median(p["ratio"] for p in pairs),
    }


def _best(runs: list[dict], key: str, concurrency: int | None = None) -> float | None:
    """The best `key` of the runs (at `concurrency` only, when given)."""
    runs = [r for r in runs if concurrency is None or r["concurrency"] == concurrency]
    return max((r[key] for r in runs), default=None)


def _mixed_ratios(mixed: dict) -> dict:
    """summarize()'s ratios of the mixed workload."""
    out = {}
    at = _best
    server, naive = mixed["systems"].get("server", []), mixed["systems"].get("naive", [])
    if server and mixed.get("floor"):
        out["mixed_server_over_floor"] = at(server, "tokens_per_s") / mixed["floor"]["tokens_per_s"]
    if server:
        top = max(server, key=lambda r: r["concurrency"])
        if top["batching"]["forward_tokens_per_s"]:
            out["mixed_server_over_own_forward"] = (
                top["tokens_per_s"] / top["batching"]["forward_tokens_per_s"]
            )
    if server:  # at the highest concurrency: the most inputs to choose batch companions from
        top = max(server, key=lambda r: r["concurrency"])
        out["mixed_padding_efficiency"] = top["batching"]["padding_efficiency"]
    c = max(r["concurrency"] for r in server) if server else None
    if server and naive and at(naive, "tokens_per_s", c):
        out[f"mixed_server_over_naive_at_{c}"] = at(server, "tokens_per_s", c) / at(naive, "tokens_per_s", c)
    return out


def summarize(results: dict) -> dict:
    """The issue's target ratios from the measured numbers."""
    mixed, rank, tiny = (results["workloads"].get(w) for w in ("mixed", "rank", "tiny"))
    at = _best
    out = _mixed_ratios(mixed) if mixed else {}
    if rank:
        shared, full = rank["systems"].get("server", []), rank["systems"].get("server-full", [])
        if shared and full:
            out["rank_shared_over_full"] = at(shared, "inputs_per_s") / at(full, "inputs_per_s")
    if tiny:
        server, bare = tiny["systems"].get("server", []), tiny["systems"].get("bare-grpc", [])
        c = max(r["concurrency"] for r in server) if server else None
        if server and bare and at(bare, "requests_per_s", c):
            out[f"tiny_server_over_bare_grpc_at_{c}"] = at(server, "requests_per_s", c) / at(
                bare, "requests_per_s", c
            )
    peak, params = results["options"].get("peak_tflops"), results["models"]["rm"].get("non_embedding_params")
    if mixed and peak and params and mixed["systems"].get("server"):
        out["mixed_model_flops_utilisation"] = (
            2 * params * at(mixed["systems"]["server"], "tokens_per_s") / (peak * 1e12)
        )
    if mixed and mixed.get("paired"):
        out["mixed_server_over_floor_median_of_pairs"] = mixed["paired"]["median_ratio"]
    if tiny and tiny.get("paired"):
        out[f"tiny_server_over_bare_grpc_at_{tiny['paired']['concurrency']}_median_of_pairs"] = tiny[
            "paired"
        ]["median_ratio"]
    return out


def non_embedding_params(backend) -> int | None:
    """Parameters of a PyTorch backend's model outside its embedding table (the FLOPs per token are
    twice this); None for other backends."""
    module = getattr(backend, "module", None)
    if module is None:
        return None
    embedding = module.model.get_input_embeddings().weight.numel()
    return sum(p.numel() for p in module.parameters()) - embedding


async def on_instance_thread(instance, work):
    """work() on the served instance's own thread, where its forwards run (one OpenMP team: see
    reward_server/runtime/openmp.py), between its batches."""
    return await asyncio.wrap_future(run_alone(instance, work))


def floor_budgets(instance) -> tuple[int, ...]:
    """The token budgets the floor tries: a GPU's best batches are larger than a CPU's."""
    return TOKEN_BUDGETS + GPU_EXTRA_BUDGETS if instance.backend.device.startswith("cuda") else TOKEN_BUDGETS


async def floor_of(instance, floor_inputs: list) -> dict:
    return await on_instance_thread(
        instance, partial(measure_floor, instance.backend.score_batch, floor_inputs, floor_budgets(instance))
    )


def _reference(
    name: str,
    entry: dict,
    loaded,
    floor_inputs: list,
    bare_target: str,
    workload: Workload,
    options: SuiteOptions,
):
    """What the server is paired with: the floor at its best shape (mixed), bare grpc.aio (tiny), or None."""
    if name == "mixed" and entry.get("floor"):
        instance, shape = loaded.instances[0], entry["floor"]["best_shape"]
        return lambda: on_instance_thread(
            instance, partial(shape_rate, instance.backend.score_batch, floor_inputs, shape)
        )
    if name == "tiny" and "bare-grpc" in entry["systems"]:

        async def bare() -> float:
            top = max(options.concurrency[name])
            return (await drive(bare_target, WORKLOAD_MODEL[name], workload.kind, workload, top, options))[
                "requests_per_s"
            ]

        return bare
    return None


async def run_suite(options: SuiteOptions, repo: Path) -> dict:
    write_repository(repo, options)
    running, port = await build_server(ServerSettings(repo, host="127.0.0.1", port=0, http_port=None))
    naive_server, naive_port, naive_core = await start_naive_peer(running.repository)
    bare_server, bare_port = await start_grpc(BareServicer())
    targets = {
        "server": f"127.0.0.1:{port}",
        "server-full": f"127.0.0.1:{port}",
        "naive": f"127.0.0.1:{naive_port}",
        "bare-grpc": f"127.0.0.1:{bare_port}",
    }
    results: dict = {
        "options": {
            k: v if not isinstance(v, Path) else str(v)
            for k, v in options.__dict__.items()
            if k != "bench_shape"
        },
        "models": {"rm": dict(options.bench_shape.__dict__), "tiny": TINY_SHAPE.__dict__},
        "workloads": {},
    }
    rm = running.repository.resolve("rm", "").instances[0].backend
    results["models"]["rm"].update(
        device=rm.device, dtype=rm.dtype, non_embedding_params=non_embedding_params(rm)
    )
    try:
        for name in options.workloads:
            workload = make_workload(name, running, options)
            model = WORKLOAD_MODEL[name]
            loaded = running.repository.resolve(model, "")
            entry: dict = {
                "model": model,
                "requests": len(workload.requests),
                "tokens": workload.tokens,
                "inputs_per_request": len(workload.sequences[0]),
                "server_max_batch_tokens": loaded.instances[0].max_batch_tokens,
                "systems": {},
            }
            floor_tokens = max(options.floor_tokens, 2 * max(floor_budgets(loaded.instances[0])))
            floor_inputs = _first_tokens(
                [ids for request in workload.sequences for ids in request], floor_tokens
            )
            measure = options.floor and name != "tiny"
            if measure:
                log.info("%s: measuring the floor over %d inputs", name, len(floor_inputs))
                entry["floor"] = await floor_of(loaded.instances[0], floor_inputs)
            for system in WORKLOAD_SYSTEMS[name]:
                if system not in options.systems:
                    continue
                kind = "rank_full" if system == "server-full" else workload.kind
                runs = entry["systems"][system] = []
                for concurrency in options.concurrency[name]:
                    stats = loaded.instances[0].stats
                    before = copy.deepcopy(stats)
                    driving = drive(targets[system], model, kind, workload, concurrency, options)
                    if (
                        options.profile_to
                        and system == "server"
                        and concurrency == max(options.concurrency[name])
                    ):
                        summary = options.profile_to / f"profile_{name}_server.txt"
                        run = (await asyncio.gather(driving, _profiled(options, summary)))[0]
                    else:
                        run = await driving
                    run["concurrency"] = concurrency
                    if system.startswith("server"):
                        run["batching"] = batcher_delta(before, stats)
                    log.info(
                        "%s %s c=%d: %.1f req/s, %.0f tokens/s, p99 %.0f ms",
                        name,
                        system,
                        concurrency,
                        run["requests_per_s"],
                        run["tokens_per_s"],
                        run["latency_p99_ms"],
                    )
                    runs.append(run)
            if measure:  # again after the served runs: on a shared machine the better of the two is the floor
                again = await floor_of(loaded.instances[0], floor_inputs)
                entry["floor_runs"] = [entry["floor"]["tokens_per_s"], again["tokens_per_s"]]
                entry["floor"] = max(entry["floor"], again, key=lambda floor: floor["tokens_per_s"])
            reference = _reference(name, entry, loaded, floor_inputs, targets["bare-grpc"], workload, options)
            if options.repeats and reference and "server" in entry["systems"]:
                entry["paired"] = await paired_ratios(name, targets["server"], workload, reference, options)
                log.info(
                    "%s: server / %s, %d pairs: %s",
                    name,
                    entry["paired"]["reference"],
                    options.repeats,
                    [round(p["ratio"], 3) for p in entry["paired"]["pairs"]],
                )
            results["workloads"][name] = entry
    finally:
        await bare_server.stop(0)
        await naive_server.stop(0)
        naive_core.close()
        await running.stop(0)
    results["summary"] = summarize(results)
    return results
