"""Beam pipeline options: runner options pass through; the default runs locally without Prism."""

from __future__ import annotations

import atexit
import copy
import hashlib
import logging
import pickle
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import Metrics, MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options_context import scoped_pipeline_options
from apache_beam.options.value_provider import RuntimeValueProvider
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner, RunnerResult
from apache_beam.runners.runner import PipelineResult
from apache_beam.runners.worker import statesampler
from apache_beam.transforms.window import GlobalWindows

from bytefreezer.control import ControlClient
from bytefreezer.control.models import Lease
from bytefreezer.errors import BytefreezerError
from bytefreezer.telemetry import Telemetry

# The DirectRunner would first try the Prism runner, which downloads a binary. For bounded
# batch pipelines it then uses the FnApiRunner anyway, so we choose that engine directly.
LOCAL_RUNNER = "FnApiRunner"

# Beam times each step with a sampler thread per bundle that sleeps between samples, up to
# 200 ms as a bundle grows older, and ending the bundle joins that thread: a local run ended up
# to 200 ms after its last element (about 100 ms on average for runs over a second), a fixed
# cost of every poller cycle. Locally it samples every 2 ms instead (a sample is a few
# microseconds without the GIL; a run's tail is 1 ms on average).
LOCAL_SAMPLING_PERIOD_MS = 2


def _shorten_state_sampling() -> None:
    """Make Beam's state samplers sample at least every ``LOCAL_SAMPLING_PERIOD_MS`` (their
    period is a default argument; left alone if a Beam release changes its shape)."""
    init = statesampler.StateSampler.__init__
    defaults = getattr(init, "__defaults__", None)
    if isinstance(defaults, tuple) and len(defaults) == 1 and isinstance(defaults[0], int):
        init.__defaults__ = (min(defaults[0], LOCAL_SAMPLING_PERIOD_MS),)


def _runner(args: list[str]) -> str | None:
    runner = None
    for i, arg in enumerate(args):
        if arg.startswith("--runner="):
            runner = arg.split("=", 1)[1]
        elif arg == "--runner" and i + 1 < len(args):
            runner = args[i + 1]
    return runner


def _is_local(runner: str | None) -> bool:
    return runner is None or runner in ("DirectRunner", "direct", LOCAL_RUNNER)


def should_spread(beam_args: list[str]) -> bool:
    """Whether claimed work must be spread over workers (a reshuffle): always on a distributed
    runner or with several local workers asked for; otherwise one local worker runs it all."""
    return not _is_local(_runner(beam_args)) or any(
        a.startswith("--direct_num_workers") for a in beam_args
    )


def pipeline_options(beam_args: list[str] | None = None) -> PipelineOptions:
    """Pipeline options from ``beam_args``; no runner (or ``DirectRunner``) means local.

    Locally one Beam worker runs in this process (no gRPC harness: its start and stop cost about
    0.3 s a run) and each DoFn works on several objects at once in its own threads
    (``ObjectFn``); ``--direct_num_workers`` and ``--direct_running_mode`` still choose more
    Beam workers when given."""
    args = list(beam_args or [])
    runner = _runner(args)
    if _is_local(runner):
        _shorten_state_sampling()
    if runner is None:
        args.append(f"--runner={LOCAL_RUNNER}")
    elif runner in ("DirectRunner", "direct"):
        args = [a for a in args if not a.startswith("--runner")]
        args.append(f"--runner={LOCAL_RUNNER}")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    return PipelineOptions(args)


_REPORTED: dict[str, float] = {}
_REPORTED_LOCK = threading.Lock()


def first_report(key: str, every_seconds: float = 60.0) -> bool:
    """Whether a recurring failure named ``key`` is to be logged now: once per ``every_seconds``
    in a process, since a dataset that fails on every cycle would otherwise fill the log (its
    counter still counts each time)."""
    now = time.monotonic()
    with _REPORTED_LOCK:
        if now - _REPORTED.get(key, float("-inf")) < every_seconds:
            return False
        _REPORTED[key] = now
        return True


class ObjectFn:
    """Work on one claimed element (a piper intake object, a packer dataset), as a DoFn would,
    with ``setup``, ``process``, ``finish_bundle`` and ``teardown``.

    ``Concurrently`` runs several elements at once, each thread with its own instance (as
    separate Beam workers would have), so an instance's clients and caches need no lock. Beam
    records metrics only on the bundle's own thread, so an instance counts with ``count()``
    and the bundle's thread turns the counts into Beam counters after each element. An instance
    with a ``reuse_key`` outlives its run: the next run in the process takes it up, set up and
    warm."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._counts_lock = threading.Lock()  # an instance may count from helper threads

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_counts_lock"]  # pickled for the runner and copied per thread: a fresh lock
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._counts_lock = threading.Lock()

    def count(self, name: str, value: int = 1) -> None:
        """Add ``value`` to the counter ``name`` (in the pipeline's namespace)."""
        with self._counts_lock:
            self._counts[name] = self._counts.get(name, 0) + value

    def take_counts(self) -> dict[str, int]:
        """The counts since the last call."""
        with self._counts_lock:
            counts, self._counts = self._counts, {}
        return counts

    def setup(self) -> None:
        """Open clients (once per instance)."""

    def process(self, element: Any) -> Iterable[Any]:
        """The outputs of one element."""
        raise NotImplementedError

    def finish_bundle(self) -> None:
        """Flush what a bundle buffered (e.g. spans)."""

    def teardown(self) -> None:
        """Close what ``setup`` opened."""

    def reuse_key(self) -> str | None:
        """Set-up instances whose templates give the same key may be kept for later runs in
        this process (their clients, compiled chains and warm caches); ``None``: never."""
        return None


# A poller runs a pipeline every cycle. Each run used to set up its instances afresh on new
# threads, and an object's first run on a fresh thread cost 10-40 ms more than the next (a
# new DuckDB connection's first queries, a new thread's allocator heap), a fixed cost of every
# cycle. Set-up instances and their worker threads now last from run to run: those of the
# reuse keys that ran last, each key the instances its runs used (as many as their
# concurrency). A bound on instances in all (it was 8) tore down piper's instances, and their
# compiled chains, after every packer run once the two ran more than 8 objects at once.
IDLE_KEYS = 4  # reuse keys whose set-up instances are kept between runs (piper and packer, twice)


def reuse_key_for(kind: str, settings: Any) -> str:
    """A reuse key for instances of ``kind`` built from ``settings``: equal only for equal
    settings, secrets included (a JSON dump would mask them, so instances holding other
    credentials could be taken up)."""
    return f"{kind}:{hashlib.sha256(pickle.dumps(settings)).hexdigest()}"


class _Idle:
    """Set-up ``ObjectFn`` instances between runs, by reuse key; the instances of keys beyond
    the ``IDLE_KEYS`` kept last are torn down (and all of them when the process exits)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: list[tuple[str, ObjectFn]] = []

    def take(self, key: str) -> ObjectFn | None:
        with self._lock:
            for index, (kept_key, instance) in enumerate(self._kept):
                if kept_key == key:
                    del self._kept[index]
                    return instance
        return None

    def keep(self, key: str, instance: ObjectFn) -> None:
        with self._lock:
            self._kept.append((key, instance))
            recent: list[str] = []  # keys, the one kept last first
            for kept_key, _ in reversed(self._kept):
                if kept_key not in recent:
                    recent.append(kept_key)
            stale = set(recent[IDLE_KEYS:])
            evicted = [(k, i) for k, i in self._kept if k in stale]
            self._kept = [(k, i) for k, i in self._kept if k not in stale]
        for _, old in evicted:
            old.teardown()

    def close(self) -> None:
        with self._lock:
            kept, self._kept = self._kept, []
        for _, instance in kept:
            instance.teardown()


_IDLE = _Idle()
atexit.register(_IDLE.close)
_POOLS: dict[tuple[str, int], ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _worker_pool(namespace: str, size: int) -> ThreadPoolExecutor:
    """The process's threads for ``size`` elements of ``namespace`` at once (kept between
    runs; idle threads cost nothing)."""
    with _POOLS_LOCK:
        pool = _POOLS.get((namespace, size))
        if pool is None:
            pool = _POOLS[(namespace, size)] = ThreadPoolExecutor(
                size, thread_name_prefix=namespace
            )
        return pool


class Concurrently(beam.DoFn):  # type: ignore[misc]
    """Run ``template``'s work on up to ``concurrency`` elements of a bundle at once.

    Each thread gets its own copy of ``template`` (set up on first use, or a set-up copy an
    earlier run left, see ``ObjectFn.reuse_key``). An element's outputs and
    counters are emitted when it finishes; a failed element fails the bundle after the others in
    flight have finished, as a failing Beam worker would."""

    def __init__(self, template: ObjectFn, namespace: str, concurrency: int = 1) -> None:
        self._template = template
        self._namespace = namespace
        self._concurrency = max(1, concurrency)

    @property
    def concurrency(self) -> int:
        return self._concurrency

    def template_key(self) -> str | None:
        return self._template.reuse_key()

    def setup(self) -> None:
        self._local = threading.local()
        self._instances: list[ObjectFn] = []
        self._failed = False
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        if self._concurrency > 1:
            self._pool = _worker_pool(self._namespace, self._concurrency)

    def _instance(self) -> ObjectFn:
        instance: ObjectFn | None = getattr(self._local, "instance", None)
        if instance is None:
            key = self._template.reuse_key()
            instance = _IDLE.take(key) if key is not None else None
            if instance is None:
                instance = copy.deepcopy(self._template)
                instance.setup()
            self._local.instance = instance
            with self._lock:
                self._instances.append(instance)
        return instance

    def _run(self, element: Any) -> tuple[list[Any], dict[str, int]]:
        instance = self._instance()
        try:
            return list(instance.process(element)), instance.take_counts()
        except BaseException:
            self._failed = True  # this run's instances are not kept for the next
            raise
        finally:
            instance.take_counts()  # a failed element's counts are not carried to the next

    def _emit(self, done: tuple[list[Any], dict[str, int]]) -> list[Any]:
        outputs, counts = done
        for name, value in counts.items():
            Metrics.counter(self._namespace, name).inc(value)
        return outputs

    def start_bundle(self) -> None:
        self._pending: set[Future[tuple[list[Any], dict[str, int]]]] = set()

    def _collect(self, everything: bool) -> Iterator[Any]:
        """Outputs of finished elements: at least one (or all of them with ``everything``)."""
        if not self._pending:
            return
        done, self._pending = wait(
            self._pending, return_when=ALL_COMPLETED if everything else FIRST_COMPLETED
        )
        failed = [f for f in done if f.exception() is not None]
        if failed:
            wait(self._pending)  # nothing of this bundle runs on after it failed
            self._pending = set()
            raise failed[0].exception()  # type: ignore[misc]
        for future in done:
            yield from self._emit(future.result())

    def process(self, element: Any) -> Iterator[Any]:
        if self._pool is None:
            yield from self._emit(self._run(element))
            return
        self._pending.add(self._pool.submit(self._run, element))
        if len(self._pending) >= self._concurrency:
            yield from self._collect(everything=False)

    def finish_bundle(self) -> Iterator[Any]:
        for output in self._collect(everything=True):
            yield GlobalWindows.windowed_value(output)
        with self._lock:
            instances = list(self._instances)
        for instance in instances:
            instance.finish_bundle()

    def teardown(self) -> None:
        key = self._template.reuse_key()
        for instance in self._instances:
            if key is not None and not self._failed:
                _IDLE.keep(key, instance)
            else:
                instance.teardown()
        self._instances = []


class Distributed(beam.PTransform):  # type: ignore[misc,type-arg]
    """Spread claimed work over the runner's workers (a reshuffle, unless ``spread`` is off),
    then run ``fn`` on each element, ``concurrency`` at a time on each worker. Piper and packer
    are this over their own ``ObjectFn``."""

    def __init__(
        self, step: str, fn: ObjectFn, namespace: str, spread: bool = True, concurrency: int = 1
    ) -> None:
        super().__init__()
        self._step = step
        self._fn = Concurrently(fn, namespace, concurrency)
        self._spread = spread

    def reuse_key(self) -> str | None:
        """Equal for transforms that run alike (see ``ObjectFn.reuse_key``); ``None`` when
        the work is spread, or when the template's instances are never reused."""
        key = self._fn.template_key()
        if self._spread or key is None:
            return None
        return f"{self._step}|{self._fn.concurrency}|{key}"

    def expand(self, work: Any) -> Any:
        if self._spread:
            work = work | "Distribute" >> beam.Reshuffle()
        return work | self._step >> beam.ParDo(self._fn)


@dataclass
class CycleStats:
    """What one poller cycle did."""

    claimed: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    waiting: list[dict[str, Any]] = field(default_factory=list)  # packer: soonest due first
    buffered: int = 0  # packer: datasets its buffer holds (``waiting`` lists the first)
    failing: list[dict[str, Any]] = field(default_factory=list)  # packer: left until retry_at


def _claimed(_: bytes, work: list[Any]) -> list[Any]:
    return work


def _apply_claimed(
    pipeline: beam.Pipeline,
    feed: Callable[[bytes, Any], list[Any]],
    given: Any,
    label: str,
    step: Distributed,
) -> None:
    """The claimed work as one impulse's output (``feed(_, given)``: what Create does without
    its coder inference and extra steps, 7 ms less per run), then ``step`` under ``label``."""
    _ = (
        pipeline
        | "Start" >> beam.Impulse()
        | "Claimed" >> beam.FlatMap(feed, given)
        | label >> step
    )


def run_claimed(
    beam_args: list[str],
    work: list[Any],
    label: str,
    transform: Callable[[bool, int], Distributed],
    namespace: str,
    *,
    control: ControlClient,
    leases: list[Lease],
    telemetry: Telemetry,
    max_workers: int = 1,
) -> dict[str, int]:
    """Run one bounded pipeline, ``transform(spread, concurrency)`` over the claimed ``work``
    (at most ``max_workers`` elements at once on each worker, never more than there are), then
    release the claims whatever happened (a failed release is harmless: leases expire)."""
    concurrency = max(1, min(max_workers, len(work)))
    spread = should_spread(beam_args)
    step = transform(spread, concurrency)

    def build(pipeline: beam.Pipeline) -> None:
        _apply_claimed(pipeline, _claimed, work, label, step)

    try:
        kept = _kept_key(beam_args, namespace, label, step)
        if kept is not None:
            return _KEPT.run(kept, beam_args, work, label, step, namespace)
        return run_pipeline(beam_args, build, namespace)
    except Exception:
        telemetry.add("bytefreezer_errors", stage=namespace, error_type="pipeline")
        raise
    finally:
        try:
            control.release_leases(leases)
        except BytefreezerError as exc:
            logging.getLogger(__name__).warning("could not release %s leases: %s", namespace, exc)


def run_pipeline(beam_args: list[str], build: Any, namespace: str) -> dict[str, int]:
    """Build and run one bounded pipeline; return its counters in ``namespace``."""
    pipeline = beam.Pipeline(options=pipeline_options(beam_args))
    try:
        build(pipeline)
        result = pipeline.run()
        result.wait_until_finish()
    finally:
        _remove_tempdir(pipeline)
    return _counters(result, namespace)


def _remove_tempdir(pipeline: beam.Pipeline) -> None:
    """Remove the directory every ``beam.Pipeline`` makes under the system's temporary
    directory. Beam removes it after a run, except in IPython, where it leaves it for its
    interactive tooling: a notebook kernel running piper every few minutes would otherwise
    leave one behind each run (and one for a pipeline that failed to build)."""
    shutil.rmtree(pipeline.local_tempdir, ignore_errors=True)


# Building a run's Beam pipeline cost about 23 ms of an empty local run's 29 ms: options parsed
# some fifty times with argparse, every method of every DoFn inspected, the graph turned into
# its runner-API form. A poller runs the same pipeline every cycle with other work, so a local
# run keeps that form and runs it again, its work handed over in this process: 6 ms a run.
KEPT_PIPELINES = 8  # runner-API pipelines kept for later local runs, in all


def _kept_key(beam_args: list[str], namespace: str, label: str, step: Distributed) -> str | None:
    """The key a pipeline running ``step`` is kept under; ``None`` if it is not kept (work
    handed over in memory only reaches a worker in this process: the in-memory local runner)."""
    key = step.reuse_key()
    if key is None or not _is_local(_runner(beam_args)):
        return None
    if any(arg.startswith("--direct_") for arg in beam_args):
        return None
    return "\0".join([namespace, label, *beam_args, key])


def _handed_over(_: bytes, slot: str) -> list[Any]:
    return _KEPT.work(slot)


class _KeepingRunner(FnApiRunner):  # type: ignore[misc]
    """The local runner, keeping the runner-API form of the first pipeline it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.proto: beam_runner_api_pb2.Pipeline | None = None

    def run_via_runner_api(
        self, pipeline_proto: beam_runner_api_pb2.Pipeline, options: PipelineOptions
    ) -> RunnerResult:
        if self.proto is None:
            self.proto = beam_runner_api_pb2.Pipeline()
            self.proto.CopyFrom(pipeline_proto)
        return super().run_via_runner_api(pipeline_proto, options)


@dataclass
class _Kept:
    slot: str
    runner: _KeepingRunner
    options: PipelineOptions
    busy: threading.Lock = field(default_factory=threading.Lock)


class _KeptPipelines:
    """Local pipelines kept in runner-API form between runs, by key (``_kept_key``), the
    least recently used beyond ``KEPT_PIPELINES`` dropped. The pipeline reads its work from a
    slot that a run fills. A kept pipeline runs once at a time: a second run of the same key
    meanwhile builds its own; a failed run's pipeline is not kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self._work: dict[str, list[Any]] = {}

    def work(self, slot: str) -> list[Any]:
        return self._work[slot]

    def _take(self, key: str) -> _Kept | None:
        with self._lock:
            kept = self._kept.get(key)
            if kept is None or not kept.busy.acquire(blocking=False):
                return None
            self._kept.move_to_end(key)
            return kept

    def run(
        self,
        key: str,
        beam_args: list[str],
        work: list[Any],
        label: str,
        step: Distributed,
        namespace: str,
    ) -> dict[str, int]:
        kept = self._take(key)
        fresh = kept is None
        if kept is None:
            kept = _Kept(uuid.uuid4().hex, _KeepingRunner(), pipeline_options(beam_args))
            kept.busy.acquire()
        self._work[kept.slot] = work
        try:
            if fresh:
                pipeline = beam.Pipeline(runner=kept.runner, options=kept.options)
                try:
                    _apply_claimed(pipeline, _handed_over, kept.slot, label, step)
                    result = pipeline.run()
                finally:
                    _remove_tempdir(pipeline)
            else:
                assert kept.runner.proto is not None
                proto = beam_runner_api_pb2.Pipeline()
                proto.CopyFrom(kept.runner.proto)
                RuntimeValueProvider.set_runtime_options({})  # as the runner's run_pipeline does
                with scoped_pipeline_options(kept.options):
                    result = kept.runner.run_via_runner_api(proto, kept.options)
            result.wait_until_finish()
        except BaseException:
            with self._lock:
                if self._kept.get(key) is kept:
                    del self._kept[key]
            raise
        finally:
            del self._work[kept.slot]
            kept.busy.release()
        if fresh and kept.runner.proto is not None:
            with self._lock:
                if key not in self._kept:
                    self._kept[key] = kept
                    while len(self._kept) > KEPT_PIPELINES:
                        self._kept.popitem(last=False)
        return _counters(result, namespace)


_KEPT = _KeptPipelines()


def _counters(result: PipelineResult, namespace: str) -> dict[str, int]:
    """The counters a finished run reported in ``namespace``."""
    counters: dict[str, int] = {}
    try:
        query = result.metrics().query(MetricsFilter().with_namespace(namespace))
        for counter in query["counters"]:
            name = counter.key.metric.name
            value = counter.committed if counter.committed is not None else counter.attempted
            counters[name] = counters.get(name, 0) + int(value or 0)
    except (NotImplementedError, AttributeError, KeyError):
        pass  # some runners do not report metrics back
    return counters
