"""Who is alive: each bot process (an incarnation, new at every start) beats in the
database every few seconds.

Every intent a process opens (a run call, a channel post, a lease on a watch) names
its incarnation. Whoever finds an open intent whose owner stopped beating settles it
at once, at start-up or from another replica's watcher, instead of waiting out the
longest a live call could last. A process that missed its own beats (frozen, cut off
from the database) does not start a run call or a post until it beats again, so a
replica that took its intents over is not raced by it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

from bot.store import DEAD_AFTER, HEARTBEAT_EVERY, Store

log = logging.getLogger(__name__)


class Heartbeat:
    """This process's row in ``buildbot_processes``, kept fresh by a daemon thread."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time,
                 every: float = HEARTBEAT_EVERY, dead_after: float = DEAD_AFTER,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.id = uuid.uuid4().hex
        self.store = store
        self.clock = clock
        self.every = every
        self.dead_after = dead_after
        self.monotonic = monotonic
        self._last_ok: float | None = None
        self._failing = False
        self.alive = 1  # processes alive at the last beat (``replicas``)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> bool:
        """Write one beat; False (logged once per outage) when the database refused it."""
        try:
            self.store.beat(id=self.id, now=self.clock(), host=socket.gethostname(),
                            pid=os.getpid())
        except Exception as exc:
            if not self._failing:
                log.warning("heartbeat not written (%s); this process starts no run call "
                            "or post until it is", type(exc).__name__)
            self._failing = True
            return False
        if self._failing:
            log.info("heartbeat written again")
        self._failing = False
        self._last_ok = self.monotonic()
        try:  # how many replicas share Slack's limits (each paces itself to its share)
            self.alive = max(1, len(self.store.processes_alive(now=self.clock())))
        except Exception:
            log.debug("replicas not counted this beat", exc_info=True)
        return True

    def replicas(self) -> int:
        """The processes alive at the last beat, this one included (at least 1)."""
        return self.alive

    def start(self) -> None:
        self.beat()
        self._thread = threading.Thread(target=self._loop, name="buildbot-heartbeat",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.beat()

    def fresh(self) -> bool:
        """Did this process beat recently enough that nobody can have taken it for dead?
        (Half the time others wait, so clock error and a slow write leave a margin.)"""
        last = self._last_ok
        return last is not None and self.monotonic() - last < self.dead_after / 2

    def stop(self, *, clean: bool) -> None:
        """Stop beating. ``clean``: nothing of this process is in flight, so its row is
        marked ended and what it held is free for the others at once; otherwise the row
        is left to go stale, as a crash would."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.every + 5.0)
        if clean:
            try:
                self.store.end_process(self.id)
            except Exception as exc:
                log.warning("could not mark this process ended (%s); the others take its "
                            "work over once its heartbeat is %g s old", type(exc).__name__,
                            self.dead_after)
