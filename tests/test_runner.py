"""The local runner's per-element concurrency: each thread its own instance, counters reach Beam,
failures fail the run."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.runners.worker import statesampler

from bytefreezer.pipelines.runner import (
    IDLE_KEYS,
    LOCAL_SAMPLING_PERIOD_MS,
    Concurrently,
    Distributed,
    ObjectFn,
    reuse_key_for,
    run_claimed,
    run_pipeline,
)
from bytefreezer.settings import load_settings
from bytefreezer.telemetry import null_telemetry

NAMESPACE = "runner_test"
_OUTPUTS: list[Any] = []  # what the pipeline emitted (the runner runs in this process)


class _Meet(ObjectFn):
    """Waits until ``parties`` elements are in process at once (fails otherwise)."""

    instances: list[int] = []
    lock = threading.Lock()

    def __init__(self, parties: int, fail_on: int | None = None) -> None:
        super().__init__()
        self._parties = parties
        self._fail_on = fail_on
        self._barrier = threading.Barrier(parties, timeout=10)

    def __deepcopy__(self, memo: dict[int, Any]) -> _Meet:
        copied = _Meet(self._parties, self._fail_on)
        copied._barrier = self._barrier  # shared by the copies: they meet at it
        return copied

    def setup(self) -> None:
        with _Meet.lock:
            _Meet.instances.append(id(self))

    def process(self, element: int) -> Iterable[tuple[int, int, str]]:
        if element == self._fail_on:
            raise ValueError(f"element {element} is bad")
        if element < self._parties:  # the first elements must all be in flight together
            self._barrier.wait()
        self.count("seen")
        self.count("total", element)
        yield element, id(self), threading.current_thread().name


class _Keep(beam.DoFn):  # type: ignore[misc]
    def process(self, element: Any) -> Iterable[None]:
        with _Meet.lock:
            _OUTPUTS.append(element)
        return []


def _run(fn: ObjectFn, elements: list[int], concurrency: int) -> tuple[list[Any], dict[str, int]]:
    _OUTPUTS.clear()

    def build(pipeline: beam.Pipeline) -> None:
        _ = (
            pipeline
            | beam.Create(elements, reshuffle=False)
            | beam.ParDo(Concurrently(fn, NAMESPACE, concurrency))
            | beam.ParDo(_Keep())
        )

    counters = run_pipeline([], build, NAMESPACE)
    return list(_OUTPUTS), counters


def test_elements_run_at_once_each_thread_with_its_own_instance() -> None:
    _Meet.instances.clear()
    outputs, counters = _run(_Meet(parties=2), list(range(10)), concurrency=2)
    assert sorted(element for element, _, _ in outputs) == list(range(10))
    assert counters == {"seen": 10, "total": sum(range(10))}
    by_thread: dict[str, set[int]] = {}
    for _, instance, thread in outputs:
        by_thread.setdefault(thread, set()).add(instance)
    assert len(by_thread) == 2 and all(len(ids) == 1 for ids in by_thread.values())
    assert len(_Meet.instances) == 2  # set up once per thread, not per element


def test_one_at_a_time_runs_on_the_bundle_thread() -> None:
    outputs, counters = _run(_Meet(parties=1), list(range(5)), concurrency=1)
    assert counters == {"seen": 5, "total": 10}
    assert len({thread for _, _, thread in outputs}) == 1


def test_a_failed_element_fails_the_run() -> None:
    with pytest.raises(Exception, match="element 7 is bad"):
        _run(_Meet(parties=1, fail_on=7), list(range(10)), concurrency=2)


class _SamplingPeriod(beam.DoFn):  # type: ignore[misc]
    """Emits the sampling period of the state sampler timing the bundle it runs in."""

    def process(self, element: int) -> Iterable[int]:
        yield statesampler.get_current_tracker().sampling_period_ms


def test_a_local_run_samples_often_so_it_ends_right_after_its_last_element() -> None:
    """Ending a bundle waits for Beam's state sampler to wake; at its default period (up to
    200 ms) that was a fixed cost of every run."""
    _OUTPUTS.clear()

    def build(pipeline: beam.Pipeline) -> None:
        _ = (
            pipeline
            | beam.Create([1], reshuffle=False)
            | beam.ParDo(_SamplingPeriod())
            | beam.ParDo(_Keep())
        )

    run_pipeline([], build, NAMESPACE)
    assert _OUTPUTS == [LOCAL_SAMPLING_PERIOD_MS]
    assert LOCAL_SAMPLING_PERIOD_MS <= 20


class _Reused(ObjectFn):
    """Records its set-ups and tear-downs, and which instance and thread ran each element."""

    events: list[tuple[str, int]] = []
    barrier = threading.Barrier(2, timeout=10)  # the first two elements meet: both threads used
    serials = itertools.count()  # ids of freed instances are reused: a serial number instead

    def __init__(self, key: str | None) -> None:
        super().__init__()
        self._key = key

    def reuse_key(self) -> str | None:
        return self._key

    def setup(self) -> None:
        self.serial = next(_Reused.serials)
        _Reused.events.append(("setup", self.serial))

    def teardown(self) -> None:
        _Reused.events.append(("teardown", self.serial))

    def process(self, element: int) -> Iterable[tuple[int, int, int]]:
        if element < 2:
            _Reused.barrier.wait()
        yield element, self.serial, threading.get_ident()


def _runs(fn: ObjectFn, times: int) -> list[list[Any]]:
    outputs = []
    for _ in range(times):
        _Reused.barrier.reset()
        outputs.append(_run(fn, list(range(8)), concurrency=2)[0])
    return outputs


def test_set_up_instances_and_their_threads_last_from_run_to_run() -> None:
    _Reused.events.clear()
    first, second = _runs(_Reused(key="test-reuse"), 2)
    setups = [instance for event, instance in _Reused.events if event == "setup"]
    assert len(setups) == 2, "set up in the first run only"
    assert not [e for e in _Reused.events if e[0] == "teardown"], "kept, not torn down"
    assert {i for _, i, _ in second} == {i for _, i, _ in first} == set(setups)
    assert {t for _, _, t in second} == {t for _, _, t in first}, "the same worker threads"


def test_instances_without_a_key_or_of_another_key_are_not_reused() -> None:
    _Reused.events.clear()
    _runs(_Reused(key=None), 2)
    events = [event for event, _ in _Reused.events]
    assert events.count("setup") == 4 and events.count("teardown") == 4
    _Reused.events.clear()
    _runs(_Reused(key="test-a"), 1)
    _runs(_Reused(key="test-b"), 1)
    assert [event for event, _ in _Reused.events].count("setup") == 4


def test_idle_instances_of_keys_beyond_the_bound_are_torn_down() -> None:
    _Reused.events.clear()
    for index in range(IDLE_KEYS + 2):  # two instances a run: the first two keys' are evicted
        _runs(_Reused(key=f"test-bound-{index}"), 1)
    set_up = [instance for event, instance in _Reused.events if event == "setup"]
    torn_down = [i for event, i in _Reused.events if event == "teardown" and i in set_up]
    assert len(set_up) == 2 * (IDLE_KEYS + 2)
    assert torn_down == set_up[:4], "the oldest keys' first"


class _Wide(_Reused):
    five = threading.Barrier(5, timeout=10)  # the first five elements meet: five threads used

    def process(self, element: int) -> Iterable[tuple[int, int, int]]:
        if element < 5:
            _Wide.five.wait()
        yield element, self.serial, threading.get_ident()


def test_each_key_keeps_as_many_instances_as_its_runs_use() -> None:
    """Two workers at five objects at once each (piper and packer with max_concurrent_jobs 5):
    all ten instances last from run to run. A bound of eight instances in all tore some down
    after every run, and piper's compiled chains with them."""
    _Reused.events.clear()
    for _ in range(3):
        for key in ("test-wide-piper", "test-wide-packer"):
            _Wide.five.reset()
            _run(_Wide(key=key), list(range(10)), concurrency=5)
    set_up = {serial for event, serial in _Reused.events if event == "setup"}
    torn_down = {serial for event, serial in _Reused.events if event == "teardown"}
    assert len(set_up) == 10 and not set_up & torn_down  # (other tests' keys made room)


def test_reuse_keys_differ_for_settings_that_differ_only_in_a_secret(tmp_path: Path) -> None:
    one = load_settings(data_dir=tmp_path, storage={"s3": {"access_key": "a", "secret_key": "s1"}})
    same = load_settings(data_dir=tmp_path, storage={"s3": {"access_key": "a", "secret_key": "s1"}})
    other = load_settings(
        data_dir=tmp_path, storage={"s3": {"access_key": "a", "secret_key": "s2"}}
    )
    assert one.model_dump_json() == other.model_dump_json()  # secrets are masked there
    assert reuse_key_for("piper", one) == reuse_key_for("piper", same)
    assert reuse_key_for("piper", one) != reuse_key_for("piper", other)
    assert reuse_key_for("piper", one) != reuse_key_for("packer", one)


class _Failing(_Reused):
    def process(self, element: int) -> Iterable[tuple[int, int, int]]:
        if element == 5:
            raise ValueError("element 5 is bad")
        yield from super().process(element)


def test_the_instances_of_a_failed_run_are_torn_down_not_kept() -> None:
    _Reused.events.clear()
    with pytest.raises(Exception, match="element 5 is bad"):
        _runs(_Failing(key="test-failing"), 1)
    set_up = [serial for event, serial in _Reused.events if event == "setup"]
    torn_down = [serial for event, serial in _Reused.events if event == "teardown"]
    assert len(set_up) == 2 and sorted(torn_down) == sorted(set_up)
    _Reused.events.clear()
    _Reused.barrier.reset()
    _run(_Failing(key="test-failing"), [0, 1, 2], concurrency=2)
    assert [event for event, _ in _Reused.events].count("setup") == 2, "set up afresh"


class _Seen(ObjectFn):
    """Records the elements it is given; ``bad`` fails, ``wait`` meets another run's."""

    seen: list[tuple[str, Any]] = []
    barrier = threading.Barrier(2, timeout=10)

    def __init__(self, key: str | None) -> None:
        super().__init__()
        self._key = key

    def reuse_key(self) -> str | None:
        return self._key

    def process(self, element: Any) -> Iterable[Any]:
        if element == "bad":
            raise ValueError("a bad element")
        if isinstance(element, str) and element.startswith("wait"):
            _Seen.barrier.wait()
        with _Meet.lock:
            _Seen.seen.append((threading.current_thread().name, element))
        self.count("seen")
        yield element


class _Released:
    def release_leases(self, leases: list[Any]) -> None:
        pass


def _claimed_run(key: str | None, work: list[Any], beam_args: list[str] | None = None) -> Any:
    return run_claimed(
        beam_args or [],
        work,
        "Seen",
        lambda spread, concurrency: Distributed("See", _Seen(key), NAMESPACE, spread, concurrency),
        NAMESPACE,
        control=_Released(),  # type: ignore[arg-type]
        leases=[],
        telemetry=null_telemetry(),
        max_workers=1,
    )


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the Beam pipelines built (one item each)."""
    built: list[int] = []
    original = beam.Pipeline

    class Counted(original):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(beam, "Pipeline", Counted)
    return built


def test_a_local_pipeline_is_built_once_and_run_again_with_each_runs_work(
    builds: list[int],
) -> None:
    _Seen.seen.clear()
    for work in ([1, 2], [3], ["a", "b", "c"]):
        assert _claimed_run("test-kept", work) == {"seen": len(work)}
    assert [element for _, element in _Seen.seen] == [1, 2, 3, "a", "b", "c"]
    assert len(builds) == 1, "built for the first run only"


def test_pipelines_of_templates_without_a_key_or_with_runner_options_are_built_each_run(
    builds: list[int],
) -> None:
    _claimed_run(None, [1])
    _claimed_run(None, [2])
    _claimed_run("test-kept-options", [3], ["--direct_running_mode=in_memory"])
    _claimed_run("test-kept-options", [4], ["--direct_running_mode=in_memory"])
    assert len(builds) == 4


def test_a_kept_pipeline_busy_in_another_run_is_not_shared(builds: list[int]) -> None:
    _Seen.seen.clear()
    _Seen.barrier.reset()
    _claimed_run("test-kept-busy", [0])
    results: list[Any] = []
    runs = [
        threading.Thread(target=lambda w=w: results.append(_claimed_run("test-kept-busy", w)))
        for w in (["wait-1", 1], ["wait-2", 2])
    ]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=30)
    assert results == [{"seen": 2}, {"seen": 2}], "both ran, each with its own work"
    assert sorted(str(element) for _, element in _Seen.seen) == ["0", "1", "2", "wait-1", "wait-2"]
    assert len(builds) == 2, "the second of the two at once built its own"
    _claimed_run("test-kept-busy", [3])
    assert len(builds) == 2, "the kept one is free again"


def test_the_pipeline_of_a_failed_run_is_not_kept(builds: list[int]) -> None:
    _claimed_run("test-kept-failing", [1])
    with pytest.raises(Exception, match="a bad element"):
        _claimed_run("test-kept-failing", ["bad"])
    assert len(builds) == 1
    assert _claimed_run("test-kept-failing", [2]) == {"seen": 1}
    assert len(builds) == 2, "built afresh after the failure"
