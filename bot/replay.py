"""Refuse a signed request seen before: Slack never resends slash commands or clicks,
so an exact repeat inside the 5-minute signature window is a replay.

Kept in memory per process; with several replicas a replay may reach another
one, where the store's claims still make sure it starts nothing twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from slack_bolt import BoltRequest, BoltResponse

log = logging.getLogger(__name__)

WINDOW = 300.0  # Bolt refuses older timestamps anyway


class ReplayGuard:
    """Bolt middleware remembering each request signature for the signature window."""

    def __init__(self, *, window: float = WINDOW, max_entries: int = 200_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self._window = window
        self._max = max_entries
        self._clock = clock

    def first_time(self, signature: str) -> bool:
        now = self._clock()
        with self._lock:
            while self._seen and (next(iter(self._seen.values())) < now - self._window
                                  or len(self._seen) >= self._max):
                self._seen.popitem(last=False)
            if signature in self._seen:
                return False
            self._seen[signature] = now
            return True

    def __call__(self, req: BoltRequest, resp: BoltResponse,
                 next: Callable[[], BoltResponse]) -> BoltResponse:
        values = req.headers.get("x-slack-signature") or []
        signature = values[0] if values else ""
        if signature and not self.first_time(signature):
            log.warning("replayed request refused (same signature seen within %ss)",
                        int(self._window))
            return BoltResponse(status=200, body="")
        return next()
