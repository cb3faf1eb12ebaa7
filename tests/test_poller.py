"""The poller loop: busy cycles follow at once, a wake cuts the sleep short, stop ends it."""

from __future__ import annotations

import gc
import platform
import subprocess
import sys
import threading
import time

import pytest

from bytefreezer.pipelines import poller as poller_module
from bytefreezer.pipelines.poller import Poller
from bytefreezer.pipelines.runner import CycleStats
from tests.helpers import wait_for


def test_a_wake_starts_the_next_cycle_and_a_drained_backlog_wakes_the_next_stage() -> None:
    claims = [0, 2, 3, 0]  # idle, then two busy cycles, then idle again
    cycles: list[float] = []
    woken: list[bool] = []

    def cycle() -> CycleStats:
        cycles.append(time.monotonic())
        return CycleStats(claimed=claims.pop(0) if claims else 0)

    poller = Poller("test", cycle, interval=600, after_work=lambda: woken.append(True))
    thread = threading.Thread(target=poller.run)
    thread.start()
    try:
        wait_for(lambda: len(cycles) == 1, timeout=10)
        poller.wake()  # without it the next cycle would be ten minutes away
        wait_for(lambda: len(cycles) == 4, timeout=10)  # busy cycles are followed at once
        assert woken == [True]  # once, when the busy streak ended
    finally:
        poller.stop()
        thread.join(timeout=10)
    assert not thread.is_alive(), "stop() ends the sleep too"
    assert len(cycles) == 4


def test_a_failed_cycle_does_not_end_the_busy_streak() -> None:
    outcomes: list[int | Exception] = [2, RuntimeError("storage hiccup"), 0]
    woken: list[float] = []
    cycles: list[float] = []

    def cycle() -> CycleStats:
        cycles.append(time.monotonic())
        outcome = outcomes.pop(0) if outcomes else 0
        if isinstance(outcome, Exception):
            raise outcome
        return CycleStats(claimed=outcome)

    poller = Poller("test", cycle, interval=0.05, after_work=lambda: woken.append(time.monotonic()))
    thread = threading.Thread(target=poller.run)
    thread.start()
    try:
        wait_for(lambda: len(cycles) >= 3, timeout=10)
        wait_for(lambda: woken, timeout=10)
    finally:
        poller.stop()
        thread.join(timeout=10)
    assert woken[0] >= cycles[2], "woken by the idle cycle after the failure, not before"
    assert len(woken) == 1


def test_the_heap_is_settled_once_the_worker_has_done_work() -> None:
    poller_module._HEAP_SETTLED.clear()
    gc.unfreeze()
    claims = [0, 0, 1]  # idle twice (nothing loaded yet), then a busy cycle
    seen: list[int] = []

    def cycle() -> CycleStats:
        seen.append(gc.get_freeze_count())
        return CycleStats(claimed=claims.pop(0) if claims else 0)

    poller = Poller("test", cycle, interval=0.01)
    thread = threading.Thread(target=poller.run)
    thread.start()
    try:
        wait_for(lambda: len(seen) >= 4, timeout=10)
    finally:
        poller.stop()
        thread.join(timeout=10)
        frozen = gc.get_freeze_count()
        gc.unfreeze()
    assert seen[:3] == [0, 0, 0], "idle cycles leave the heap alone"
    assert seen[3] > 0 and frozen > 0, "after the first busy cycle live objects are frozen"
    assert poller_module._HEAP_SETTLED.is_set()


_CYCLES = """
import os, random, resource, signal, sys
from concurrent.futures import ThreadPoolExecutor
from bytefreezer.pipelines.poller import settle_heap
from bytefreezer.servers import run_services

def cycle(seed):  # buffers of a few MB to tens of MB, held together, then freed
    rng, held = random.Random(seed), []
    for mb in (4, 16, 3, 24, 1, 8):
        buffer = bytearray(mb * 1024 * 1024 + rng.randrange(4096))
        buffer[::4096] = b"x" * len(buffer[::4096])  # touch every page
        held.append(buffer)

def cycles():
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(cycle, range(4)))  # the first cycles
        if sys.argv[1] == "settled":
            settle_heap()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        list(pool.map(cycle, range(4, 24)))
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, flush=True)

if sys.argv[1] == "server":  # a worker thread of a server (bytefreezer up, receiver, control)
    stop = lambda: None
    run_services([], [(lambda: (cycles(), os.kill(os.getpid(), signal.SIGTERM)), stop)])
else:
    cycles()
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc")
def test_a_settled_worker_and_a_server_keep_freed_memory_for_their_next_cycles() -> None:
    def faults(mode: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", _CYCLES, mode], capture_output=True, text=True, check=True
        )
        return int(done.stdout.split()[-1])

    unsettled, settled = faults("unsettled"), faults("settled")
    assert unsettled > 100_000, "without tuning, each cycle faults its memory back in"
    assert settled < unsettled / 4
    assert faults("server") < unsettled / 4, "a server keeps freed memory from its start"
