"""A dataset packer cannot pack: its status in the control service, and the growing wait
before packers try it again.

A run that fails (the destination refuses writes, its credentials expired, its bucket is gone)
leaves its manifest and inputs staged, so nothing is lost; but tried again on every cycle, it
would read and encode the same inputs over and over, and keep its poller from sleeping. So the
packer that ran it reports the failure to control, with a ``retry_at`` that doubles with each
failure in a row (``packer.retry_backoff_seconds`` up to ``packer.retry_backoff_max_seconds``),
and every packer's planning leaves the dataset alone until then. The next run that succeeds
reports ``ok``. Saving the dataset, or clearing its status (``bytefreezer datasets retry``),
has it packed at the next cycle.
"""

from __future__ import annotations

from bytefreezer.control.models import DatasetStatus
from bytefreezer.settings import PackerSettings

# An ok status is reported again after this long, so ``last_success_at`` stays recent without
# a control call after every run.
OK_REFRESH_SECONDS = 300.0
ERROR_CHARS = 1000  # the longest failure text kept
FAILING_REPORTED = 100  # failing datasets a cycle lists (packer's /api/v1/status), soonest first


def backoff_seconds(packer: PackerSettings, failures: int) -> float:
    """The wait after ``failures`` failed runs in a row."""
    exponent = min(max(failures - 1, 0), 62)
    return float(min(packer.retry_backoff_max_seconds, packer.retry_backoff_seconds * 2**exponent))


def failure_text(exc: BaseException) -> str:
    """What a status says of a failure: the exception's type and message, cut short."""
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


def next_status(
    previous: DatasetStatus | None,
    tenant: str,
    dataset: str,
    error: str | None,
    *,
    now: float,
    packer: PackerSettings,
    instance: str,
) -> DatasetStatus | None:
    """The status to report after a run of ``tenant/dataset`` that failed with ``error`` (or
    succeeded: ``None``), given the ``previous`` one; ``None`` when nothing needs reporting
    (an ok dataset reported ok less than ``OK_REFRESH_SECONDS`` ago)."""
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
            tenant=tenant, dataset=dataset, state="ok", last_success_at=now, instance=instance
        )
    failures = (previous.failures if failing and previous is not None else 0) + 1
    since = previous.failing_since if failing and previous is not None else None
    return DatasetStatus(
        tenant=tenant,
        dataset=dataset,
        state="failing",
        error=error,
        failures=failures,
        failing_since=since if since is not None else now,
        last_success_at=last_success,
        retry_at=now + backoff_seconds(packer, failures),
        instance=instance,
    )


def waiting_to_retry(status: DatasetStatus | None, now: float) -> bool:
    """Whether packers leave the dataset alone this cycle: it is failing and its wait has not
    ended."""
    return (
        status is not None
        and status.state == "failing"
        and status.retry_at is not None
        and status.retry_at > now
    )


def failing_list(statuses: list[DatasetStatus], now: float) -> list[dict[str, object]]:
    """The failing datasets for packer's status API, the soonest retried first."""
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
