"""The clock of the bot: leases builds that are due and hands them to the engine.

Watches live in the store, leased to one process at a time, so a restarted
bot resumes them and several replicas share them; a replica that dies has
its leases expire and taken over. The same loop does the housekeeping that
must survive restarts: expiring confirmations, settling requests that were
being sent when a bot died, and announcing builds whose channel message
was never posted. Every decision is the engine's.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from bot.engine import Engine
from bot.lifecycle import Build, WatchState

log = logging.getLogger(__name__)

KEEP_DAYS = 30.0  # finished requests and builds are forgotten after this (the audit log stays)
PRUNE_EVERY = 3600.0


class Watcher:
    """One pass with ``run_once()`` (tests), or a background thread with ``start()``."""

    def __init__(self, engine: Engine, *, poll_seconds: float, owner: str | None = None,
                 lease_seconds: float | None = None, batch: int = 200, threads: int = 8,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.store = engine.store
        self.poll = poll_seconds
        self.owner = owner or uuid.uuid4().hex[:16]
        self.lease = lease_seconds or max(60.0, 4 * poll_seconds)
        self.batch = batch
        self.clock = clock
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="buildbot-watch")
        self._stop = threading.Event()
        self._pruned_at = 0.0
        self._thread: threading.Thread | None = None
        self._busy = 0
        self._idle = threading.Condition()

    # --- the loop ------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="buildbot-watcher", daemon=True)
        self._thread.start()

    def stop(self, deadline: float = 30.0) -> bool:
        """Take no new work, let what runs finish for up to ``deadline`` seconds.

        True when nothing of the watcher's is still running, so its clients may be
        closed; False when a call is still out (the caller must leave them open)."""
        self._stop.set()
        until = time.monotonic() + deadline
        if self._thread is not None:
            self._thread.join(max(0.0, until - time.monotonic()))
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._idle:
            done = self._idle.wait_for(lambda: self._busy == 0,
                                       max(0.0, until - time.monotonic()))
        if not done:
            log.warning("stopping with %d watcher calls still running", self._busy)
        return done and (self._thread is None or not self._thread.is_alive())

    def _loop(self) -> None:
        tick = min(1.0, self.poll / 3)
        while not self._stop.is_set():
            try:
                handled = self.run_once()
            except Exception:  # the database may be briefly away: keep going
                log.exception("watcher pass failed; retrying")
                handled = 0
            if handled < self.batch:
                self._stop.wait(tick)

    def run_once(self) -> int:
        """Housekeeping, then poll every due watch this process could lease."""
        if self._stop.is_set():
            return 0
        self.housekeeping()
        builds = self.store.lease_due(owner=self.owner, now=self.clock(),
                                      lease_seconds=self.lease, limit=self.batch)
        futures: list[Future[None]] = []
        for build in builds:
            if self._stop.is_set():
                break
            with self._idle:
                self._busy += 1
            try:
                future = self._pool.submit(self._handle, build)
            except RuntimeError:  # the pool was shut down under us: stopping
                self._done()
                break
            future.add_done_callback(self._done)  # also runs for work cancelled by stop()
            futures.append(future)
        wait(futures)  # each one logs its own failure
        return len(builds)

    def _done(self, _future: object = None) -> None:
        with self._idle:
            self._busy -= 1
            self._idle.notify_all()

    def _handle(self, build: Build) -> None:
        try:
            if build.watch is WatchState.REPORTING:
                self.engine.report(build, self.owner)
            else:
                self.engine.poll(build, self.owner)
        except Exception:
            log.exception("watch failed build=%s", build.id)

    # --- housekeeping ----------------------------------------------------------

    def housekeeping(self) -> None:
        self.engine.expire_due()
        self.engine.settle_stale()
        now = self.clock()
        if now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            gone = self.store.prune(before=now - KEEP_DAYS * 86400)
            if gone:
                log.info("forgot %d finished requests and builds older than %d days", gone,
                         int(KEEP_DAYS))
        self.engine.recover_announcements()
