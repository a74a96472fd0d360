"""Loading a model leaves no OpenMP team behind on the thread that loaded it: the asyncio executor
thread (or the poll thread) that loads lives on, and a team of its own beside each batcher's made every
forward wait on throttled OpenMP workers."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from helpers import add_model, config_text
from reward_server.repository.config import parse_model_config
from reward_server.repository.loader import load_version, with_cpu_threads_shared
from reward_server.runtime.openmp import run_on_thread_that_ends, threads_per_cpu_instance, usable_cpus


def os_thread_ids() -> set[str]:
    return set(os.listdir("/proc/self/task"))


@pytest.mark.skipif(
    torch.get_num_threads() < 2 or not os.path.isdir("/proc/self/task"),
    reason="needs two intra-op threads (an OpenMP team) and Linux's /proc",
)
def test_a_long_lived_thread_that_loads_a_model_keeps_no_openmp_team(tiny_checkpoint, tmp_path):
    add_model(tmp_path, "m", tiny_checkpoint)
    config = parse_model_config(tmp_path / "m" / "config.pbtxt", "m")
    loaded, done, release = [], threading.Event(), threading.Event()

    def loader() -> None:  # like asyncio.to_thread's executor thread: it loads, then stays
        loaded.append(load_version(config, 1, tmp_path / "m" / "1"))
        done.set()
        release.wait(120)

    before = os_thread_ids()
    thread = threading.Thread(target=loader)
    thread.start()
    try:
        assert done.wait(120)
        # The threads born since `before` that are still alive: the loader itself and one batcher thread
        # per instance; no OpenMP workers of the loader's. Waited on, not counted once: the passing
        # thread's team leaves the process only after its join has returned (later under load), and
        # threads of earlier tests that end meanwhile are not new. A team kept by the loader never ends.
        want = 1 + len(loaded[0].instances)
        deadline = time.monotonic() + 60
        while len(os_thread_ids() - before) != want and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(os_thread_ids() - before) == want
    finally:
        release.set()
        thread.join()
        for batcher in loaded[0].instances if loaded else ():
            batcher.close()


def test_run_on_thread_that_ends_returns_the_result_or_raises_the_error():
    assert run_on_thread_that_ends(lambda: threading.current_thread().name, name="probe") == "probe"
    with pytest.raises(ZeroDivisionError):
        run_on_thread_that_ends(lambda: 1 / 0, name="fails")


def test_several_cpu_instances_share_the_cpus_unless_the_config_sets_their_threads():
    cpus = usable_cpus()
    assert threads_per_cpu_instance(1) == 0  # one instance: the library's default, every CPU
    assert threads_per_cpu_instance(2) == max(1, cpus // 2)
    assert threads_per_cpu_instance(cpus + 1) == 1  # never none


def test_the_share_applies_to_both_backends_and_only_where_the_config_sets_no_threads(
    tiny_checkpoint, tmp_path
):
    add_model(tmp_path, "m", tiny_checkpoint, config_text("m", extra="onnxruntime { intra_op_threads: 5 }"))
    config = parse_model_config(tmp_path / "m" / "config.pbtxt", "m")
    shared = with_cpu_threads_shared(config, ["cpu", "cpu", "cpu"])
    want = threads_per_cpu_instance(3)
    assert (shared.torch_intra_op_threads, shared.ort_intra_op_threads) == (want, 5)
    assert with_cpu_threads_shared(config, ["cpu", "cuda:0"]) == config  # one CPU instance: unchanged


@pytest.mark.parametrize(
    "extra, want", [("", max(1, usable_cpus() // 2)), ("pytorch { intra_op_threads: 3 }", 3)]
)
def test_a_model_with_two_cpu_instances_gives_each_its_share_of_threads(
    tiny_checkpoint, tmp_path, extra, want
):
    add_model(tmp_path, "m", tiny_checkpoint, config_text("m", extra=extra).replace("count: 1", "count: 2"))
    loaded = load_version(parse_model_config(tmp_path / "m" / "config.pbtxt", "m"), 1, tmp_path / "m" / "1")
    try:
        assert [batcher.backend.intra_op_threads for batcher in loaded.instances] == [want, want]
        scores = loaded.instances[1].submit([[5, 6, 7]], None)[0].result(30)  # it serves with them
        assert isinstance(scores.score, float)
    finally:
        loaded.close()
