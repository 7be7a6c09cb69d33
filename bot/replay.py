"""Refuse a signed request seen before: Slack does not resend slash commands or clicks,
so an exact repeat of a signature that Bolt still accepts is a replay.

How long a signature stays acceptable depends on its own timestamp, not on when it was
first seen: Bolt (slack_sdk's ``SignatureVerifier``) accepts a request whose
``X-Slack-Request-Timestamp`` is within 300 s of its clock, before or after. A request
signed 4 minutes ahead is accepted for 9 minutes, until ``timestamp + 300``. So each
signature is kept until then (plus ``MARGIN``, for the moments between Bolt's check and
this one), by the same wall clock Bolt uses.

Memory is bounded: at most ``max_entries`` signatures still inside their window. A
signature leaves only when its window has passed; when the table is full of live ones,
a new request is refused ("very busy") rather than a live signature forgotten, which
would let that request be replayed. Only requests that passed Bolt's signature check
get here, so only Slack (or a holder of the signing secret) can fill it, and the default
takes over 160 requests a second for 5 minutes, far beyond what one bot is sent.

Kept in memory per process; with several replicas a replay may reach another
one, where the store's claims still make sure it starts nothing twice.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

from slack_bolt import BoltRequest, BoltResponse

from bot import messages as msg

log = logging.getLogger(__name__)

WINDOW = 300.0  # Bolt refuses a timestamp further than this from its clock, either way
MARGIN = 10.0  # kept this much longer: Bolt checked a moment before we look
MAX_ENTRIES = 50_000

Verdict = Literal["new", "replay", "full"]


class ReplayGuard:
    """Bolt middleware remembering each request signature until its timestamp leaves
    the window Bolt accepts. ``clock`` is a seam (epoch seconds, as Bolt's)."""

    def __init__(self, *, window: float = WINDOW, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.time) -> None:
        self._expiry: dict[str, float] = {}  # signature -> when its window closes
        self._by_expiry: list[tuple[float, str]] = []  # a heap of the same
        self._lock = threading.Lock()
        self._window = window
        self._max = max_entries
        self.clock = clock
        self._next_full_warning = float("-inf")

    @property
    def size(self) -> int:
        """How many signatures are remembered."""
        return len(self._expiry)

    def admit(self, signature: str, timestamp: str | int | None) -> Verdict:
        """``new`` (remembered now), ``replay`` (seen and still acceptable) or ``full``
        (new, but the table is full of live signatures: refuse the request)."""
        now = self.clock()
        try:
            ts = float(int(timestamp))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            ts = now
        # Bolt accepts nothing further than the window from now, so neither do we keep it
        ts = min(max(ts, now - self._window), now + self._window)
        expires = ts + self._window + MARGIN
        with self._lock:
            while self._by_expiry and self._by_expiry[0][0] < now:
                when, old = heapq.heappop(self._by_expiry)
                if self._expiry.get(old) == when:
                    del self._expiry[old]
            if signature in self._expiry:
                return "replay"
            if len(self._expiry) >= self._max:
                return "full"
            self._expiry[signature] = expires
            heapq.heappush(self._by_expiry, (expires, signature))
            return "new"

    def __call__(self, req: BoltRequest, resp: BoltResponse,
                 next: Callable[[], BoltResponse]) -> BoltResponse:
        signature = _header(req, "x-slack-signature")
        if not signature:  # Socket Mode: nothing signed, nothing to replay over HTTP
            return next()
        verdict = self.admit(signature, _header(req, "x-slack-request-timestamp"))
        if verdict == "replay":
            log.warning("replayed request refused (same signature, timestamp still accepted)")
            return BoltResponse(status=200, body="")
        if verdict == "full":
            now = time.monotonic()
            if now >= self._next_full_warning:
                log.warning("request refused: %d signatures are still inside Slack's window, "
                            "the most the replay memory keeps", self._max)
                self._next_full_warning = now + 60.0
            return BoltResponse(status=200, body=msg.busy())
        return next()


def _header(req: BoltRequest, name: str) -> str:
    values = req.headers.get(name) or []
    return values[0] if values else ""
