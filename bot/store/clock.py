"""The database's clock: one time for every replica.

Leases, expiries and due times are compared with it, so a replica whose own clock
drifts neither takes a live lease nor keeps an expired one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)


class DatabaseClock:
    """Epoch seconds by the database's clock, so replicas whose own clocks drift still
    agree on leases, expiries and due times.

    Asking the database on every call would add a round trip to every step; instead
    the difference between the database's clock and ours is measured at most every
    ``refresh`` seconds (to within half a round trip) and added to our clock. If the
    database cannot be asked, the last difference is kept. ``offset`` is a seam for
    tests that move time forward."""

    def __init__(self, engine: Engine, *, refresh: float = 30.0,
                 local: Callable[[], float] = time.time,
                 offset: Callable[[], float] = lambda: 0.0) -> None:
        self._engine = engine
        self._refresh = refresh
        self._local = local
        self._offset = offset
        self._skew = 0.0
        self._measured_at: float | None = None
        self._lock = threading.Lock()
        if engine.dialect.name == "postgresql":
            self._query = sa.text("SELECT EXTRACT(EPOCH FROM now())")
        else:  # SQLite: julianday('now') is UTC with millisecond precision
            self._query = sa.text("SELECT (julianday('now') - 2440587.5) * 86400.0")

    @property
    def skew(self) -> float:
        return self._skew

    def measure(self) -> None:
        before = self._local()
        try:
            with self._engine.connect() as c:
                db = float(c.execute(self._query).scalar_one())
        except Exception:
            log.debug("could not read the database's clock; keeping the last difference")
            return
        after = self._local()
        with self._lock:
            self._skew = db - (before + after) / 2
            self._measured_at = after

    def __call__(self) -> float:
        now = self._local()
        last = self._measured_at
        if last is None or now - last > self._refresh or now < last:
            self.measure()
        return self._local() + self._skew + self._offset()
