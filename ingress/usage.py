"""What a receiver accepted, per dataset and UTC day: reported to the control service, which adds
every receiver's counts up (``bytefreezer tenants usage``), and read back to hold tenants to
their daily ingest limit.

A limit is enforced from the tenant's total as control had it when one of its keys was last
verified (every ``receiver.auth_cache_seconds``), plus what this receiver accepted since that it
had not reported then. Other receivers' traffic since the verification shows at the next one,
so the limit may be passed by what the tenant's receivers accept in that time.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

from bytefreezer.control.models import KeyScope, Usage, utc_day

_FIELDS = ("requests", "records", "bytes", "compressed_bytes")


def seconds_to_next_day(at: float | None = None) -> int:
    now = time.time() if at is None else at
    return max(1, int(86400 - now % 86400))


class UsageMeter:
    """Counts accepted requests until they are reported; keeps what each tenant was reported
    to have and what this process accepted, for the daily limits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        self._accepted: dict[tuple[str, str], int] = defaultdict(int)  # (tenant, day): bytes
        self._reported: dict[tuple[str, str], int] = defaultdict(int)
        # tenant: (day, its total at control, this process's reported bytes then)
        self._seen: dict[str, tuple[str, int, int]] = {}

    def add(self, tenant: str, dataset: str, records: int, size: int, compressed: int) -> None:
        day = utc_day()
        with self._lock:
            counts = self._pending[(tenant, dataset, day)]
            for i, value in enumerate((1, records, size, compressed)):
                counts[i] += value
            self._accepted[(tenant, day)] += size

    def take(self) -> list[Usage]:
        """What was accepted since the last report (``reported`` or ``give_back`` it after)."""
        with self._lock:
            pending, self._pending = self._pending, defaultdict(lambda: [0, 0, 0, 0])
        return [
            Usage(tenant=t, dataset=d, day=day, **dict(zip(_FIELDS, counts, strict=True)))
            for (t, d, day), counts in pending.items()
        ]

    def reported(self, reports: list[Usage]) -> None:
        with self._lock:
            for u in reports:
                self._reported[(u.tenant, u.day)] += u.bytes
            today = utc_day()
            for key in [k for k in self._accepted if k[1] < today]:  # older days are done
                self._accepted.pop(key, None)
                self._reported.pop(key, None)

    def give_back(self, reports: list[Usage]) -> None:
        """A report that did not reach control: counted again in the next one."""
        with self._lock:
            for u in reports:
                counts = self._pending[(u.tenant, u.dataset, u.day)]
                for i, name in enumerate(_FIELDS):
                    counts[i] += getattr(u, name)

    def verified(self, tenant: str, scope: KeyScope) -> None:
        """Note the tenant's total control had when its key was verified."""
        if scope.daily_ingest_bytes is None:
            return
        with self._lock:
            reported = self._reported[(tenant, scope.day)]
            self._seen[tenant] = (scope.day, scope.ingested_today_bytes, reported)

    def over_limit(self, tenant: str, scope: KeyScope) -> bool:
        """Whether the tenant has reached its daily limit, as far as this receiver knows."""
        limit = scope.daily_ingest_bytes
        if limit is None:
            return False
        today = utc_day()
        with self._lock:
            day, total, reported_then = self._seen.get(tenant, (scope.day, 0, 0))
            accepted = self._accepted[(tenant, today)]
            if day != today:  # a new day since the verification: only what came in today
                return accepted >= limit
            return total + accepted - reported_then >= limit
