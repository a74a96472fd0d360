"""OpenRLHF's remote-reward traffic against our `/get_reward` and OpenRLHF's own `serve_rm`, side by side.

    python -m bench.openrlhf_rm [--concurrency 64] [--duration 8] [--warmup 4] [--rounds 3] [--dtype bfloat16]

The bench's `rm` model (bench/suite.py: write_repository) is served twice from the same folder: by our
server (its HTTP front, `POST /get_reward?model=rm`, in this process) and by `openrlhf.cli.serve_rm` (a
subprocess). The version folder is already the layout serve_rm loads: a transformers Llama config,
`model.*` backbone weights and a one-output `score.weight` head without bias (OpenRLHF's RewardModel with
its default value_head_prefix "score"), and the tokenizer.

The clients (`python -m bench.openrlhf_rm load < spec.json`, a separate process) are C workers, each
sending one sample per request through OpenRLHF's own request code, unmodified:
`SingleTurnAgentExecutor(url)._fetch_rewards_via_http([query], [prompt], [label])` (one aiohttp session,
so one connection, per request; `json=` body; it retries a failed request after 1 s, up to 5 times), as
its rollout workers do since its agent refactor. Each query is what the trainer sends: the policy's
chat-templated text with its special tokens (the seeded `mixed`-style conversations of bench/workloads.py,
rendered by the model's chat template). Tokens/s counts each scored query's tokens (the tokenizer without
added special tokens: what both servers compute). Our server and serve_rm alternate, `rounds` pairs; the
result is each system's median tokens/s, p50 and p99, and the median of the pairs' ratios.

serve_rm cannot be imported unmodified on a CPU host: openrlhf.models imports deepspeed, peft and
flash_attn at module import (flash-attn needs CUDA to build). `python -m bench.openrlhf_rm serve-rm ...`
registers an import-only placeholder for each of those that is not installed (any use raises) and runs
serve_rm's own `__main__` (its argparse, RewardModelProxy, FastAPI app and uvicorn.run) with
`--ds.attn_implementation sdpa` (its default, flash_attention_2, needs flash-attn). None of the
placeholders is reached on its reward path (no LoRA, no ZeRO-3, no sample packing). serve_rm's dtypes are
bf16 / fp16 only; `--dtype float32` makes its dtype helper answer float32 (the one code change, off
by default).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.machinery
import importlib.util
import json
import logging
import os
import runpy
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import types
from contextlib import nullcontext
from pathlib import Path

from bench.load import closed_loop, run_load_process
from bench.suite import ROOT, SuiteOptions, write_repository
from bench.workloads import score_workload

log = logging.getLogger(__name__)

# Imported by openrlhf.models at module import; unused on serve_rm's reward path.
IMPORT_ONLY = (
    "deepspeed",
    "peft",
    "peft.tuners",
    "peft.tuners.lora",
    "flash_attn",
    "flash_attn.bert_padding",
    "flash_attn.utils",
    "flash_attn.utils.distributed",
)
SERVE_RM_DTYPE = {"bfloat16": "bf16", "float16": "fp16", "float32": "bf16"}  # float32: see _force_float32
# How far the two servers' rewards of one query may differ, relative to max(1, |reward|). serve_rm answers
# its reward tensor as it is: in bf16 that is 8 significant bits (a reward of 20 is read to 1/8), so the
# half dtypes allow a few of their units in the last place; float32 the reordering of its sums only.
AGREEMENT = {"float32": 1e-4, "float16": 2.0**-8, "bfloat16": 2.0**-5}


class _Absent(types.ModuleType):
    """A module that is not installed: importing names from it works, using any of them raises."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        module = self.__name__

        def absent(*args, **kwargs):
            raise RuntimeError(
                f"{module}.{name} is not installed (an import-only placeholder of bench.openrlhf_rm)"
            )

        return type(name, (), {"__new__": absent, "__init_subclass__": absent})


def install_placeholders() -> list[str]:
    """Registers a placeholder for each module of IMPORT_ONLY that cannot be imported; returns their names."""
    missing = []
    for name in IMPORT_ONLY:
        parent = name.rpartition(".")[0]
        if (parent and parent in missing) or importlib.util.find_spec(name) is None:
            module = _Absent(name)
            module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
            module.__path__ = []
            sys.modules[name] = module
            missing.append(name)
    return missing


def _force_float32() -> None:
    import torch
    from openrlhf.utils import utils

    utils.convert_to_torch_dtype = lambda param_dtype: torch.float32


def serve_rm(argv: list[str]) -> None:
    """openrlhf.cli.serve_rm's own `__main__`, with the placeholders; `--float32` first: float32 weights."""
    force_float32 = argv[:1] == ["--float32"]
    argv = argv[1:] if force_float32 else argv
    missing = install_placeholders()
    logging.getLogger(__name__).info(
        "serve_rm: import-only placeholders for %s", ", ".join(missing) or "nothing"
    )
    if force_float32:
        _force_float32()
    sys.argv = ["serve_rm", *argv]
    runpy.run_module("openrlhf.cli.serve_rm", run_name="__main__", alter_sys=True)


async def run_load(spec: dict) -> dict:
    """The closed loop of bench/load.py, each request sent by OpenRLHF's own request code."""
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    retries = 0

    class CountRetries(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            nonlocal retries
            retries += "error, please check" in record.getMessage()

    logging.getLogger("openrlhf.utils.agent").addHandler(CountRetries())
    url = spec["url"]

    async def call(executor: SingleTurnAgentExecutor, sample: dict) -> tuple[int, int]:
        (answer,) = await executor._fetch_rewards_via_http([sample["query"]], [sample["prompt"]], [""])
        if len(answer["rewards"]) != 1:
            raise ValueError(f"expected one reward, got {answer['rewards']!r}")
        return 1, sample["tokens"]

    # One executor per rollout worker, as vllm_engine builds it; any exception is an error: its
    # RuntimeError after 5 tries, or a malformed answer.
    result = await closed_loop(
        spec["samples"],
        spec["concurrency"],
        spec["warmup_s"],
        spec["duration_s"],
        lambda: nullcontext(SingleTurnAgentExecutor(url)),
        call,
        (Exception,),
    )
    return {**result, "retries": retries}


async def drive(url: str, samples: list[dict], concurrency: int, warmup_s: float, duration_s: float) -> dict:
    spec = {
        "url": url,
        "samples": samples,
        "concurrency": concurrency,
        "warmup_s": warmup_s,
        "duration_s": duration_s,
    }
    return await run_load_process("bench.openrlhf_rm", spec, "load")


def render_samples(folder: Path, chats: list[list[dict]]) -> tuple[list[dict], list[list[int]]]:
    """What OpenRLHF's trainer sends per sample: the templated conversation (query), its prompt and the
    query's token count; and the ids serve_rm computes for each query (its tokenizer call: no special
    tokens added, the template has them)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), use_fast=True)
    samples, ids = [], []
    for chat in chats:
        query = tokenizer.apply_chat_template(chat, tokenize=False)
        prompt = tokenizer.apply_chat_template(chat[:-1], tokenize=False, add_generation_prompt=True)
        ids.append(tokenizer(query, add_special_tokens=False)["input_ids"])
        samples.append({"query": query, "prompt": prompt, "tokens": len(ids[-1])})
    return samples, ids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_serve_rm(
    folder: Path, dtype: str, log_path: Path, threads: int | None = None, timeout_s: float = 600.0
):
    """serve_rm on `folder` in a subprocess (`threads`: its OMP_NUM_THREADS, else torch's default); returns
    (process, url) once it answers."""
    import aiohttp

    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "bench.openrlhf_rm",
        "serve-rm",
        *(["--float32"] if dtype == "float32" else []),
        "--reward.model_name_or_path",
        str(folder),
        "--ds.param_dtype",
        SERVE_RM_DTYPE[dtype],
        "--ds.attn_implementation",
        "sdpa",
        "--data.max_len",
        "2048",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log_path.open("wb") as sink:  # it logs every query and answer: a file, not a pipe that could fill
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        process = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"serve_rm exited ({process.returncode}): {log_path.read_text()[-3000:]}")
            try:
                async with session.get(f"http://127.0.0.1:{port}/openapi.json") as response:
                    if response.status == 200:
                        return process, f"http://127.0.0.1:{port}/get_reward"
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                process.kill()
                raise TimeoutError(f"serve_rm did not answer in {timeout_s:.0f} s")
            await asyncio.sleep(0.5)


async def rewards_of(url: str, samples: list[dict]) -> list[float]:
    """Each sample's reward, one request at a time (so that each server computes a batch of one)."""
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    executor = SingleTurnAgentExecutor(url)
    out = []
    for sample in samples:
        (answer,) = await executor._fetch_rewards_via_http([sample["query"]], [sample["prompt"]], [""])
        out.append(float(answer["rewards"][0]))
    return out


def _summary(runs: list[dict]) -> dict[str, float]:
    return {
        key: statistics.median(float(r[key]) for r in runs)
        for key in ("tokens_per_s", "requests_per_s", "latency_p50_ms", "latency_p99_ms")
    }


async def side_by_side(args: argparse.Namespace, root: Path) -> dict:
    """The `rm` model written under `root`, served by serve_rm (a subprocess) and by our server (here)."""
    options = SuiteOptions(rm_dtype=args.dtype, max_batch_tokens=args.max_batch_tokens)
    repo = write_repository(root / "repo", options)
    folder = repo / "rm" / "1"
    serving, their_url = await start_serve_rm(
        folder, args.dtype, root / "serve_rm.log", args.serve_rm_threads
    )
    try:
        return await _measure(args, repo, their_url)
    finally:
        serving.terminate()
        try:
            serving.wait(30)
        except subprocess.TimeoutExpired:
            serving.kill()
            serving.wait()


async def _measure(args: argparse.Namespace, repo: Path, their_url: str) -> dict:
    from reward_server.datatypes import Text
    from reward_server.server import build_server
    from reward_server.settings import ServerSettings

    folder = repo / "rm" / "1"
    running, _ = await build_server(
        ServerSettings(model_repository=repo, host="127.0.0.1", port=0, http_port=0)
    )
    assert running.http is not None
    our_url = f"http://127.0.0.1:{running.http.port}/get_reward?model=rm"
    try:
        loaded = running.repository.resolve("rm", "")
        workload = score_workload(
            "openrlhf", loaded.encoder, args.requests, args.min_tokens, args.max_tokens, seed=1
        )
        samples, their_ids = render_samples(folder, [request["chat"] for request in workload.requests])
        if [list(e.ids) for e in loaded.encoder.encode([Text(s["query"]) for s in samples])] != their_ids:
            raise RuntimeError(
                "our `rm` reads other token ids than serve_rm's tokenizer call for the same queries"
            )
        checked = samples[: args.check]
        ours, theirs = await rewards_of(our_url, checked), await rewards_of(their_url, checked)
        differences = [abs(a - b) for a, b in zip(ours, theirs)]
        log.info(
            "rewards of %d queries, ours vs serve_rm: max |difference| %.3g (rewards span %.3g..%.3g)",
            len(checked),
            max(differences),
            min(ours),
            max(ours),
        )
        if any(d > AGREEMENT[args.dtype] * max(1.0, abs(b)) for d, b in zip(differences, theirs)):
            raise RuntimeError(f"the servers disagree on the same queries: ours {ours}, serve_rm {theirs}")
        stats = loaded.instances[0].stats
        pairs = []
        for index in range(args.rounds):
            before = (stats.batches, stats.computed)
            our_run = await drive(our_url, samples, args.concurrency, args.warmup, args.duration)
            await rewards_of(our_url, samples[:1])  # drained: what the cancelled clients left is done
            batches, computed = stats.batches - before[0], stats.computed - before[1]
            our_run["mean_batch_size"] = computed / batches if batches else 0.0
            their_run = await drive(their_url, samples, args.concurrency, args.warmup, args.duration)
            # serve_rm computes what it has read even after its client left:
            # this answer waits for that backlog.
            await rewards_of(their_url, samples[:1])
            ratio = (
                our_run["tokens_per_s"] / their_run["tokens_per_s"]
                if their_run["tokens_per_s"]
                else float("nan")
            )
            log.info(
                "round %d: ours %.0f tokens/s (p50 %.0f ms, p99 %.0f ms, batch %.1f, %d errors), "
                "serve_rm %.0f tokens/s (p50 %.0f ms, p99 %.0f ms, %d errors): %.2fx",
                index + 1,
                our_run["tokens_per_s"],
                our_run["latency_p50_ms"],
                our_run["latency_p99_ms"],
                our_run["mean_batch_size"],
                our_run["errors"],
                their_run["tokens_per_s"],
                their_run["latency_p50_ms"],
                their_run["latency_p99_ms"],
                their_run["errors"],
                ratio,
            )
            pairs.append({"ours": our_run, "serve_rm": their_run, "ratio": ratio})
    finally:
        await running.stop(0)
    return {
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "dtype": args.dtype,
        "serve_rm_threads": args.serve_rm_threads,
        "samples": len(samples),
        "sample_tokens": [s["tokens"] for s in samples],
        "rewards": {"ours": ours, "serve_rm": theirs, "max_abs_difference": max(differences)},
        "pairs": pairs,
        "ours": _summary([p["ours"] for p in pairs]),
        "serve_rm": _summary([p["serve_rm"] for p in pairs]),
        "median_ratio": statistics.median(p["ratio"] for p in pairs),
    }


def table(results: dict) -> str:
    lines = ["| system | tokens/s | requests/s | p50 ms | p99 ms |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, label in (("ours", "reward-server `/get_reward`"), ("serve_rm", "OpenRLHF `serve_rm`")):
        s = results[name]
        lines.append(
            f"| {label} | {s['tokens_per_s']:.0f} | {s['requests_per_s']:.1f} | {s['latency_p50_ms']:.0f} | "
            f"{s['latency_p99_ms']:.0f} |"
        )
    ratios = ", ".join(f"{p['ratio']:.2f}" for p in results["pairs"])
    batch = statistics.median(p["ours"]["mean_batch_size"] for p in results["pairs"])
    lines.append(
        f"\nours / serve_rm tokens/s: median {results['median_ratio']:.2f}x (pairs: {ratios}); "
        f"{results['concurrency']} workers, {results['duration_s']:g} s windows, {results['dtype']}; "
        f"our mean batch {batch:.1f}; rewards max |difference| {results['rewards']['max_abs_difference']:.3g}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["load"]:
        print(json.dumps(asyncio.run(run_load(json.load(sys.stdin)))))
        return 0
    if argv[:1] == ["serve-rm"]:
        logging.basicConfig(level=logging.INFO)
        serve_rm(argv[1:])
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench.openrlhf_rm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--concurrency", type=int, default=64, help="rollout workers, one sample per request")
    # A closed loop of C workers reaches its steady state after about one round of C requests: serve_rm
    # answers one at a time, so at 64 workers a round is 64 forwards; the warmup covers it.
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per run (after warmup)")
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3, help="(ours, serve_rm) pairs")
    parser.add_argument("--requests", type=int, default=64, help="distinct seeded samples, sent round-robin")
    parser.add_argument("--min-tokens", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument(
        "--dtype",
        choices=sorted(SERVE_RM_DTYPE),
        default="bfloat16",
        help="both servers' weights (serve_rm offers bf16 and fp16; float32 changes its dtype helper)",
    )
    parser.add_argument(
        "--max-batch-tokens", type=int, default=None, help="our `rm`'s budget (default: tuned at load)"
    )
    # On a CPU shared with other work, torch's default team (one OpenMP thread per core) waits at every
    # operator for threads the OS has descheduled: serve_rm's one-sample forwards pay that per request.
    parser.add_argument(
        "--serve-rm-threads",
        type=int,
        default=None,
        help="serve_rm's OMP_NUM_THREADS (default: unset, torch's default of one per core)",
    )
    parser.add_argument("--check", type=int, default=8, help="queries whose rewards are compared first")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(side_by_side(args, Path(tmp)))
    print(table(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
