"""Requests a sender retries under the same id, stored once.

Firehose sends a request again, with the same request id, when its answer did not come in time
or was not a 200; the request may have been stored meanwhile (the answer was lost, or came
after Firehose's timeout). A receiver remembers the ids of the requests it stored, per tenant
and dataset, for ``ttl`` seconds (Firehose's longest retry duration is two hours), at most
``capacity`` of them (the oldest forgotten first). A retry of a remembered request is answered
as stored without storing it again, and one that arrives while its first try is still being
stored waits for that try: stored, it is answered; failed, it is stored itself.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

Key = tuple[str, str, str]  # tenant, dataset, request id


class DeliveredRequests:
    """The request ids one receiver has stored lately."""

    def __init__(
        self,
        ttl: float = 7200.0,
        capacity: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl, self._capacity, self._clock = ttl, capacity, clock
        self._stored: OrderedDict[Key, float] = OrderedDict()
        self._storing: dict[Key, asyncio.Future[bool]] = {}
        self.repeats = 0

    async def claim(self, key: Key) -> bool:
        """True when this request should be stored (its id is new, or its first try failed);
        False when it already is (a repeat)."""
        while True:
            self._expire()
            if key in self._stored:
                self.repeats += 1
                return False
            first = self._storing.get(key)
            if first is None:
                self._storing[key] = asyncio.get_running_loop().create_future()
                return True
            await asyncio.shield(first)  # the first try's outcome, then look again

    def done(self, key: Key, stored: bool) -> None:
        """The claimed request's outcome: stored (remembered), or not (a retry may store it)."""
        if stored:
            self._stored[key] = self._clock()
            self._stored.move_to_end(key)
            while len(self._stored) > self._capacity:
                self._stored.popitem(last=False)
        waiting = self._storing.pop(key, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(stored)

    def _expire(self) -> None:
        cutoff = self._clock() - self._ttl
        while self._stored:
            key, at = next(iter(self._stored.items()))
            if at > cutoff:
                break
            del self._stored[key]
