"""The long-running poller: run a cycle, sleep with jitter, stop cleanly on SIGTERM."""

from __future__ import annotations

import gc
import logging
import random
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from types import FrameType
from typing import Literal

from bytefreezer.control.models import HealthReport
from bytefreezer.errors import BytefreezerError
from bytefreezer.memory import arrow_pool, keep_freed_memory
from bytefreezer.pipelines.runner import CycleStats

log = logging.getLogger(__name__)
_HEAP_SETTLED = threading.Event()


def settle_heap() -> None:
    """Once a worker has run (its modules, clients and caches are loaded), collect garbage and
    move every live object out of the garbage collector's view: a long-lived worker then no
    longer rescans about 200,000 objects (Beam, pyarrow, DuckDB) in each full collection, a
    pause of about 70 ms that fell into a cycle's run now and then. Freed memory is then kept
    for the next cycles (``keep_freed_memory``). Once per process."""
    if _HEAP_SETTLED.is_set():
        return
    _HEAP_SETTLED.set()
    gc.collect()
    gc.freeze()
    if not keep_freed_memory():
        log.debug("freed memory goes back to the system (no glibc malloc to tune)")


class Poller:
    """Calls ``cycle`` until stopped; a cycle in progress finishes before the loop ends."""

    def __init__(
        self,
        name: str,
        cycle: Callable[[], CycleStats],
        interval: float,
        *,
        report: Callable[[HealthReport], None] | None = None,
        instance: str = "",
        after_work: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._cycle = cycle
        self._interval = interval
        self._report = report
        self._instance = instance
        self._after_work = after_work
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        self.cycles = 0
        self.last_error = ""
        self.history: deque[dict[str, object]] = deque(maxlen=20)

    def stop(self) -> None:
        """Ask the loop to end after the current cycle."""
        self.stop_event.set()
        self._wake.set()

    def wake(self) -> None:
        """Start the next cycle now instead of after the interval (new work has arrived)."""
        self._wake.set()

    def install_signal_handlers(self) -> None:
        """Stop on SIGTERM and SIGINT (main thread only)."""

        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("%s: signal %d, finishing the current cycle", self.name, signum)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run_once(self) -> CycleStats | None:
        """One cycle; errors are logged and reported, never raised."""
        started = time.time()
        try:
            stats = self._cycle()
            self.last_error = ""
        except BytefreezerError as exc:
            self.last_error = str(exc)
            log.error("%s cycle failed: %s", self.name, exc)
            stats = None
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("%s cycle failed", self.name)
            stats = None
        self.cycles += 1
        if stats is not None and stats.claimed:
            log.debug(
                "%s cycle: %d claimed, %.3f s, %s",
                self.name,
                stats.claimed,
                stats.seconds,
                stats.counters,
            )
        self.history.append(
            {
                "started_at": started,
                "claimed": stats.claimed if stats else 0,
                "seconds": round(stats.seconds, 3) if stats else None,
                "counters": stats.counters if stats else {},
                "error": self.last_error,
                **({"waiting": stats.waiting} if stats is not None and stats.waiting else {}),
                **({"failing": stats.failing} if stats is not None and stats.failing else {}),
            }
        )
        if self._report is not None:
            details: dict[str, object] = {"cycles": self.cycles, "arrow_memory_pool": arrow_pool()}
            if stats is not None:
                details.update(claimed=stats.claimed, counters=stats.counters)
                if stats.waiting:  # packer's buffer: how much waits, and the soonest due
                    details.update(
                        buffered_datasets=stats.buffered,
                        next_due_in_seconds=stats.waiting[0]["due_in_seconds"],
                    )
                if stats.failing:  # packer: datasets whose last run failed, retried later
                    details.update(failing_datasets=len(stats.failing))
            if self.last_error:
                details["error"] = self.last_error
            status: Literal["ok", "degraded"] = "degraded" if self.last_error else "ok"
            try:
                self._report(
                    HealthReport(
                        component=self.name, instance=self._instance, status=status, details=details
                    )
                )
            except BytefreezerError as exc:
                log.warning("%s: health report failed: %s", self.name, exc)
        return stats

    def run(self) -> None:
        """Loop until stopped; busy cycles (work was claimed) are followed immediately, and so
        is a ``wake()``. When a busy streak ends (the backlog is drained) ``after_work`` is
        called, to wake the next stage: it then finds the whole burst ready at once rather
        than taking it piece by piece while this stage is still working on it."""
        busy = False
        while not self.stop_event.is_set():
            self._wake.clear()
            stats = self.run_once()
            if stats is not None and stats.claimed:
                busy = True
                settle_heap()
                continue
            if stats is not None:  # a failed cycle leaves the streak open: the next one may end it
                if busy and self._after_work is not None:
                    self._after_work()
                busy = False
            self._wake.wait(self._interval * random.uniform(0.75, 1.25))
