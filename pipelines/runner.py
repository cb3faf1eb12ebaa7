"""Beam pipeline options: runner options pass through; the default runs locally without Prism."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from bytefreezer.control import ControlClient
from bytefreezer.control.models import Lease
from bytefreezer.errors import BytefreezerError
from bytefreezer.telemetry import Telemetry

# The DirectRunner would first try the Prism runner, which downloads a binary. For bounded
# batch pipelines it then uses the FnApiRunner anyway, so we choose that engine directly.
LOCAL_RUNNER = "FnApiRunner"


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


def should_spread(beam_args: list[str], workers: int) -> bool:
    """Whether claimed work must be spread over workers (a reshuffle): always on a distributed
    runner, locally only with more than one worker (otherwise it is a stage for nothing)."""
    return (
        workers > 1
        or not _is_local(_runner(beam_args))
        or any(a.startswith("--direct_num_workers") for a in beam_args)
    )


def pipeline_options(beam_args: list[str] | None = None, workers: int = 1) -> PipelineOptions:
    """Pipeline options from ``beam_args``; no runner (or ``DirectRunner``) means local, with
    ``workers`` threads unless the arguments choose otherwise."""
    args = list(beam_args or [])
    runner = _runner(args)
    local = _is_local(runner)
    if runner is None:
        args.append(f"--runner={LOCAL_RUNNER}")
    elif runner in ("DirectRunner", "direct"):
        args = [a for a in args if not a.startswith("--runner")]
        args.append(f"--runner={LOCAL_RUNNER}")
    if local and workers > 1 and not any(a.startswith("--direct_num_workers") for a in args):
        args += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_threading"]
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    return PipelineOptions(args)


class Distributed(beam.PTransform):  # type: ignore[misc,type-arg]
    """Spread claimed work over the runner's workers (a reshuffle, unless ``spread`` is off),
    then run ``fn`` on each element. Piper and packer are this over their own DoFn."""

    def __init__(self, step: str, fn: beam.DoFn, spread: bool = True) -> None:
        super().__init__()
        self._step = step
        self._fn = fn
        self._spread = spread

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


def run_claimed(
    beam_args: list[str],
    work: list[Any],
    label: str,
    transform: Callable[[bool], Distributed],
    namespace: str,
    *,
    control: ControlClient,
    leases: list[Lease],
    telemetry: Telemetry,
    max_workers: int = 1,
) -> dict[str, int]:
    """Run one bounded pipeline, ``transform(spread)`` over the claimed ``work`` (locally on at
    most ``max_workers`` threads, one per element at most), then release the claims whatever
    happened (a failed release is harmless: leases expire)."""
    workers = min(max_workers, len(work))
    spread = should_spread(beam_args, workers)

    def build(pipeline: beam.Pipeline) -> None:
        _ = pipeline | "Claimed" >> beam.Create(work, reshuffle=False) | label >> transform(spread)

    try:
        return run_pipeline(beam_args, build, namespace, workers)
    except Exception:
        telemetry.add("bytefreezer_errors", stage=namespace, error_type="pipeline")
        raise
    finally:
        try:
            control.release_leases(leases)
        except BytefreezerError as exc:
            logging.getLogger(__name__).warning("could not release %s leases: %s", namespace, exc)


def run_pipeline(
    beam_args: list[str], build: Any, namespace: str, workers: int = 1
) -> dict[str, int]:
    """Build and run one bounded pipeline; return its counters in ``namespace``."""
    pipeline = beam.Pipeline(options=pipeline_options(beam_args, workers))
    build(pipeline)
    result = pipeline.run()
    result.wait_until_finish()
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
