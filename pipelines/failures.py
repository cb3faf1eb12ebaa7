"""A dataset piper or packer cannot get through: its status in the control service, and the
growing wait before the stage tries it again.

Piper fails a dataset whose chain cannot run (its GeoIP database not uploaded yet, a plugin
missing); packer one whose destination refuses writes (credentials expired, bucket gone). The
data waits, durable (intake objects; a manifest and staged inputs), so nothing is lost; but
tried again on every cycle, the same objects would be read and failed over and over, the
poller would never sleep, and piper's oldest-first claims would fill every run with the
failing dataset's objects while the other datasets' waited. So the worker that ran it reports
the failure to control with a ``retry_at`` that doubles with each failure in a row
(``retry_backoff_seconds`` up to ``retry_backoff_max_seconds`` of the stage's settings), and
every worker of the stage leaves the dataset alone until then. The next run that goes through
reports ``ok``. Saving the dataset, or clearing its status (``bytefreezer datasets retry``),
has it tried at the next cycle.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from bytefreezer.control import ControlClient
from bytefreezer.control.models import Dataset, DatasetStatus, Stage
from bytefreezer.errors import BytefreezerError
from bytefreezer.pipelines.runner import first_report
from bytefreezer.settings import Settings

log = logging.getLogger(__name__)


class RetrySettings(Protocol):
    """The two settings of a stage that pace its retries."""

    @property
    def retry_backoff_seconds(self) -> float: ...
    @property
    def retry_backoff_max_seconds(self) -> float: ...


# An ok status is reported again after this long, so ``last_success_at`` stays recent without
# a control call after every run.
OK_REFRESH_SECONDS = 300.0
ERROR_CHARS = 1000  # the longest failure text kept
FAILING_REPORTED = 100  # failing datasets a cycle lists (the worker's status API), soonest first


def backoff_seconds(retry: RetrySettings, failures: int) -> float:
    """The wait after ``failures`` failed runs in a row."""
    exponent = min(max(failures - 1, 0), 62)
    return float(min(retry.retry_backoff_max_seconds, retry.retry_backoff_seconds * 2**exponent))


def failure_text(exc: BaseException) -> str:
    """What a status says of a failure: the exception's type and message, cut short."""
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


def next_status(
    previous: DatasetStatus | None,
    tenant: str,
    dataset: str,
    stage: Stage,
    error: str | None,
    *,
    now: float,
    retry: RetrySettings,
    instance: str,
) -> DatasetStatus | None:
    """The status to report after ``stage``'s run of ``tenant/dataset`` that failed with
    ``error`` (or went through: ``None``), given the ``previous`` one; ``None`` when nothing
    needs reporting (an ok dataset reported ok less than ``OK_REFRESH_SECONDS`` ago)."""
    failing = previous is not None and previous.state == "failing"
    last_success = previous.last_success_at if previous is not None else None
    if error is None:
        if (
            previous is not None
            and previous.state == "ok"
            and now - previous.reported_at < OK_REFRESH_SECONDS
        ):
            return None
        return DatasetStatus(
            tenant=tenant,
            dataset=dataset,
            stage=stage,
            state="ok",
            last_success_at=now,
            instance=instance,
        )
    failures = (previous.failures if failing and previous is not None else 0) + 1
    since = previous.failing_since if failing and previous is not None else None
    return DatasetStatus(
        tenant=tenant,
        dataset=dataset,
        stage=stage,
        state="failing",
        error=error,
        failures=failures,
        failing_since=since if since is not None else now,
        last_success_at=last_success,
        retry_at=now + backoff_seconds(retry, failures),
        instance=instance,
    )


def waiting_to_retry(status: DatasetStatus | None, now: float) -> bool:
    """Whether the stage leaves the dataset alone this cycle: it is failing and its wait has
    not ended."""
    return (
        status is not None
        and status.state == "failing"
        and status.retry_at is not None
        and status.retry_at > now
    )


def failing_list(statuses: list[DatasetStatus], now: float) -> list[dict[str, object]]:
    """The failing datasets for a worker's status API, the soonest retried first."""
    failing = sorted((s for s in statuses if s.state == "failing"), key=lambda s: s.retry_at or 0.0)
    return [
        {
            "tenant": s.tenant,
            "dataset": s.dataset,
            "error": s.error,
            "failures": s.failures,
            "retry_in_seconds": round(max(0.0, (s.retry_at or now) - now), 1),
        }
        for s in failing[:FAILING_REPORTED]
    ]


def report_outcome(
    control: ControlClient,
    settings: Settings,
    stage: Stage,
    dataset: Dataset,
    claimed_with: str,
    error: str | None,
) -> DatasetStatus | None:
    """Tell control how ``stage``'s run of ``dataset`` went (see ``next_status``), given the
    status JSON it was claimed with (empty: none), and return what was reported; a control
    that cannot be told is logged, not raised: the data waits either way, and the next run
    reports again."""
    previous = DatasetStatus.model_validate_json(claimed_with) if claimed_with else None
    tenant, name = dataset.tenant, dataset.name
    retry: RetrySettings = settings.piper if stage == "piper" else settings.packer
    status = next_status(
        previous, tenant, name, stage, error, now=time.time(), retry=retry,
        instance=settings.instance_id,
    )  # fmt: skip
    if status is None:
        return None
    if status.state == "failing":
        log.warning(
            "%s leaves %s/%s for %.0f s after %d failed run(s): %s",
            stage,
            tenant,
            name,
            (status.retry_at or 0.0) - time.time(),
            status.failures,
            status.error,
        )
    try:
        control.report_dataset_status(status)
    except Exception as exc:
        if first_report(f"{stage}-status:{tenant}/{name}"):
            log.warning("%s cannot report %s/%s's status: %s", stage, tenant, name, exc)
    return status


def stage_statuses(control: ControlClient, stage: Stage) -> dict[tuple[str, str], DatasetStatus]:
    """The reported statuses of ``stage``, by (tenant, dataset): one call a cycle. A control
    service that keeps none (one older than this worker, during a rolling upgrade) gives none:
    its failing datasets are tried every cycle, as they were, rather than this stage stopping."""
    try:
        return {(s.tenant, s.dataset): s for s in control.list_dataset_statuses(stage=stage)}
    except BytefreezerError as exc:
        if first_report(f"{stage}-statuses"):
            log.warning(
                "%s cannot read dataset statuses from the control service (%s): failing "
                "datasets are tried every cycle until it can",
                stage,
                exc,
            )
        return {}
