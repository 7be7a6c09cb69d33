"""The clock of the bot: leases builds that are due and hands them to the engine.

Watches live in the store, leased to one process at a time, so a restarted
bot resumes them and several replicas share them; a replica that dies has
its leases expire and taken over. The same loop does the housekeeping that
must survive restarts: expiring confirmations, settling requests that were
being sent when a bot died, and announcing builds whose channel message
was never confirmed. Every decision is the engine's.

Due builds are taken longest-overdue first, and the loop never waits for a
batch: whenever a thread is free it leases the next due builds. The builds of one job
leased together are polled as one task (one history read decides them, one write
reschedules them). No job may hold more than three quarters of the threads, so one
job's slow status calls cannot delay everybody else's results.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from bot.engine import Engine
from bot.lifecycle import Build, Lease, WatchState

log = logging.getLogger(__name__)

KEEP_DAYS = 30.0  # finished requests and builds are forgotten after this (the audit log stays)
PRUNE_EVERY = 3600.0
HOUSEKEEPING_EVERY = 1.0  # seconds between two housekeeping rounds of the loop
FAILURE_LOG_EVERY = 60.0  # a repeated failure is logged once, then once a minute
SETTLE_KEY = "settle lost run answers"  # settlements share one per-job cap
STEPS_KEY = "complete workflow steps"  # one completion round at a time
NOTIFY_KEY = "notify me"  # the Notify me DMs share one per-job cap


class Watcher:
    """One pass with ``run_once()`` (tests), or a background thread with ``start()``."""

    def __init__(self, engine: Engine, *, poll_seconds: float, owner: str | None = None,
                 lease_seconds: float | None = None, batch: int = 200, threads: int = 8,
                 per_job: int | None = None, audit_keep_days: float = 90.0,
                 clock: Callable[[], float] = time.time) -> None:
        """``per_job``: most calls one job may have in flight (all threads but a quarter by
        default, so other jobs always find some)."""
        self.engine = engine
        self.store = engine.store
        self.poll = poll_seconds
        self.owner = owner or uuid.uuid4().hex[:16]
        self.lease = lease_seconds or max(60.0, 4 * poll_seconds)
        self.batch = batch
        self.threads = threads
        # one job may hold all threads but a quarter, kept for every other job
        self.per_job = per_job or max(1, threads - max(1, threads // 4))
        self.audit_keep_days = audit_keep_days
        self.failure_log_every = FAILURE_LOG_EVERY
        self.clock = clock
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="buildbot-watch")
        self._stop = threading.Event()
        self._pruned_at = 0.0
        self._thread: threading.Thread | None = None
        self._running: Counter[str] = Counter()  # job id -> calls in flight
        # leased (one job's builds a group), waiting for their job to have room
        self._backlog: deque[list[Build]] = deque()
        self._busy = 0
        self._idle = threading.Condition()
        self._woken = False  # wake() was called: look for due builds without waiting
        self._failing_since: float | None = None
        self._failures = 0
        self._logged_at = 0.0

    # --- the loop ------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="buildbot-watcher", daemon=True)
        self._thread.start()

    def stop(self, deadline: float = 30.0) -> bool:
        """Take no new work, let what runs finish for up to ``deadline`` seconds.

        True when nothing of the watcher's is still running, so its clients may be
        closed; False when a call is still out (the caller must leave them open)."""
        self._stop.set()
        with self._idle:
            self._idle.notify_all()
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
        """Keep every thread busy with the most overdue builds; housekeeping between."""
        tick = min(1.0, self.poll / 3)
        last_housekeeping = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_housekeeping >= HOUSEKEEPING_EVERY:
                    self.housekeeping(settle=False)
                    self._settle_beside_polls()
                    self._complete_steps_beside_polls()
                    self._notify_beside_polls()
                    self._discover_beside_polls()
                    last_housekeeping = time.monotonic()
                taken = self._fill()
                self.engine.metrics.watcher_pass.set_to_current_time()
                self._recovered()
            except Exception as exc:  # the database may be briefly away: keep going
                self._failed(exc)
                taken = 0
            with self._idle:  # wake when a thread is free and nothing waits, or at the tick
                if (taken == 0 or self._busy >= self.threads or self._backlog) \
                        and not self._woken:
                    self._idle.wait(tick)
                self._woken = False

    def wake(self) -> None:
        """Look for due builds at once instead of at the next tick (a webhook nudge made
        some due); the loop's next pass runs now, or right after the one under way."""
        with self._idle:
            self._woken = True
            self._idle.notify_all()

    def _fill(self) -> int:
        """Lease as many due builds as there are free threads, and start them."""
        with self._idle:
            free = self.threads - self._busy
            if free <= 0:
                return 0
            waiting = Counter(group[0].job_id for group in self._backlog)
            capped = tuple(job for job in {*self._running, *waiting}
                           if self._running[job] + waiting[job] >= self.per_job)
        # lease up to a batch (a job's builds due together are one task, so a lease takes
        # few tasks' worth); what may not start yet waits here, in due order, and starts
        # as soon as its job has room (see _done)
        builds = self.store.lease_due(owner=self.owner, now=self.clock(),
                                      lease_seconds=self.lease, limit=self.batch,
                                      skip_jobs=capped, grace=self.engine.intent_grace)
        for group in _by_job(builds):
            with self._idle:
                room = self._busy < self.threads and \
                    self._running[group[0].job_id] < self.per_job
                if not room:
                    self._backlog.append(group)
            if room:
                self._submit(group)
        return len(builds)

    def _complete_steps_beside_polls(self) -> None:
        """Workflow steps whose build ended are completed in the pool, one task at a time
        (a slow Slack answer holds up no poll)."""
        with self._idle:
            room = self._running[STEPS_KEY] == 0 and self._busy < self.threads
        if room:
            self._submit_task(STEPS_KEY, self._complete_steps, None)

    def _complete_steps(self, _: Any) -> None:
        self.engine.workflow.complete_due()

    def _settle_beside_polls(self) -> None:
        """Lost run answers are looked for in the pool like polls (under one key, so they
        take at most ``per_job`` threads), never in this loop: a slow history cannot
        hold up anybody's result."""
        with self._idle:
            room = min(self.per_job - self._running[SETTLE_KEY], self.threads - self._busy)
        if room > 0:
            for request in self.engine.due_settlements(limit=room):
                self._submit_task(SETTLE_KEY, self.engine.settle_one, request)

    def _notify_beside_polls(self) -> None:
        """Notify me DMs not sent when their build's report finished (asked meanwhile, or
        their sender died or met a passing refusal) are sent in the pool, like polls; so
        are the I'm on it edits a crash or a busy Slack lost."""
        with self._idle:
            room = min(self.per_job - self._running[NOTIFY_KEY], self.threads - self._busy)
        if room > 0:
            for row in self.engine.notify.due(limit=room):
                self._submit_task(NOTIFY_KEY, self.engine.notify.send, row)
            for reply in self.engine.on_it.lost_edits(limit=room):  # I'm on it's edits
                self._submit_task(NOTIFY_KEY, self.engine.on_it.edit, reply)

    def run_once(self) -> int:
        """Housekeeping, then poll every due watch this process could lease, and wait for
        them (tests and benchmarks drive the watcher this way)."""
        if self._stop.is_set():
            return 0
        self.housekeeping()
        self.discover_once()
        builds = self.store.lease_due(owner=self.owner, now=self.clock(),
                                      lease_seconds=self.lease, limit=self.batch,
                                      grace=self.engine.intent_grace)
        futures = [f for f in (self._submit(g) for g in _by_job(builds)) if f is not None]
        wait(futures)  # each one logs its own failure
        with self._idle:  # and the builds they handed on, each a task of its own
            self._idle.wait_for(lambda: self._busy == 0 and not self._backlog, self.lease)
        return len(builds)

    def _submit(self, group: list[Build], *, counted: bool = False) -> Future[None] | None:
        return self._submit_task(group[0].job_id, self._handle, group, counted=counted)

    def _submit_task(self, key: str, fn: Callable[[Any], None], arg: Any, *,
                     counted: bool = False) -> Future[None] | None:
        """``counted``: the task is already counted as running (``_ready`` did)."""
        if not counted:
            with self._idle:
                self._busy += 1
                self._running[key] += 1
        try:
            future = self._pool.submit(self._guarded, fn, arg)
        except RuntimeError:  # the pool was shut down under us: stopping
            self._done(key)
            return None
        future.add_done_callback(lambda _f: self._done(key))  # also when cancelled
        return future

    @staticmethod
    def _guarded(fn: Callable[[Any], None], arg: Any) -> None:
        try:
            fn(arg)
        except Exception:
            log.exception("watcher task failed")

    def _done(self, job_id: str) -> None:
        with self._idle:
            self._uncount(job_id)
            ready = self._ready()
            if not ready:  # nothing leased is waiting: time to lease more
                self._idle.notify_all()
        for group in ready:
            if self._stop.is_set():
                with self._idle:
                    self._uncount(group[0].job_id)
                    self._idle.notify_all()
            else:
                self._submit(group, counted=True)

    def _uncount(self, job_id: str) -> None:
        self._busy -= 1
        self._running[job_id] -= 1
        if self._running[job_id] <= 0:
            del self._running[job_id]

    def _ready(self) -> list[list[Build]]:
        """Take from the backlog, in order, what may start now: as many as threads are
        free, each job within its cap; counted as running from now (called holding
        ``_idle``)."""
        ready: list[list[Build]] = []
        starting: Counter[str] = Counter()
        for group in self._backlog:
            if self._busy + len(ready) >= self.threads:
                break
            job = group[0].job_id
            if self._running.get(job, 0) + starting[job] < self.per_job:
                ready.append(group)
                starting[job] += 1
        for group in ready:
            self._backlog.remove(group)
            self._busy += 1
            self._running[group[0].job_id] += 1
        return ready

    def _handle(self, group: list[Build]) -> None:
        """One build as it is; several builds of one job polled at once (``poll_job``),
        and those that have more to do than a reschedule (a result, a progress update)
        then each a task of its own, first in line (see ``_done``)."""
        if len(group) == 1:
            self._handle_one(group[0])
            return
        try:
            rest = self.engine.poll_job([(b, Lease(self.owner, b.lease_token, self.lease))
                                         for b in group])
        except Exception:
            log.exception("watch failed job=%s builds=%d", group[0].job_id, len(group))
            return
        with self._idle:
            self._backlog.extendleft([build] for build, _lease in reversed(rest))

    def _handle_one(self, build: Build) -> None:
        lease = Lease(self.owner, build.lease_token, self.lease)
        try:
            if build.watch is WatchState.REPORTING:  # an earlier attempt did not finish
                self.engine.report(build, lease, retry=True)
            else:
                self.engine.poll(build, lease)
        except Exception:
            log.exception("watch failed build=%s", build.id)

    # --- quiet logs --------------------------------------------------------------

    def _failed(self, exc: Exception) -> None:
        """The first failure with its traceback; then one line a minute with a count."""
        now = time.monotonic()
        self._failures += 1
        if isinstance(exc, SQLAlchemyError):
            self.engine.metrics.database_errors.inc()
        if self._failing_since is None:
            self._failing_since = self._logged_at = now
            log.exception("watcher pass failed (%s); retrying", type(exc).__name__)
        elif now - self._logged_at >= self.failure_log_every:
            self._logged_at = now
            log.warning("watcher still failing for %.0f s (%d attempts): %s",
                        now - self._failing_since, self._failures, type(exc).__name__)

    def release_queue(self) -> None:
        """Queued requests whose job has a free slot now (a build ended) start, each once."""
        self.engine.release_queue()

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.warning("watcher recovered after %.0f s (%d failed attempts)",
                        time.monotonic() - self._failing_since, self._failures)
            self._failing_since = None
            self._failures = 0

    # --- housekeeping ----------------------------------------------------------

    def housekeeping(self, *, settle: bool = True) -> None:
        self.engine.expire_due()
        self.release_queue()
        if settle:  # tests: settle here, in order; the loop settles beside its polls
            self.engine.settle_stale()
            self.engine.workflow.complete_due()
            self.engine.notify.send_due()
            self.engine.on_it.edit_lost()
        now = self.clock()
        if now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            gone = self.store.prune(before=now - KEEP_DAYS * 86400)
            if gone:
                log.info("forgot %d finished requests and builds older than %d days", gone,
                         int(KEEP_DAYS))
            trimmed = 0
            while (n := self.store.prune_audit(before=now - self.audit_keep_days * 86400)) \
                    and trimmed < 100_000:
                trimmed += n
            if trimmed:
                log.info("trimmed %d audit rows older than %g days", trimmed,
                         self.audit_keep_days)
        self.engine.recover_announcements()

    # --- subscriptions: discovery of builds started outside Slack (issue 16) -----------

    def _discover_beside_polls(self) -> None:
        """Subscribed jobs whose history is due are read in the pool like polls (under the
        job's key, so within its cap), never in this loop."""
        with self._idle:
            room = self.threads - self._busy
        if room <= 0:
            return
        for job_id, token, due in self.store.lease_job_watches(
                owner=self.owner, now=self.clock(), lease_seconds=self.lease, limit=room):
            self._submit_task(job_id, self._discover, (job_id, token, due))

    def discover_once(self) -> int:
        """Read every due subscribed job's history now and wait (tests, benchmarks)."""
        leased = self.store.lease_job_watches(owner=self.owner, now=self.clock(),
                                              lease_seconds=self.lease, limit=self.batch)
        futures = [f for f in (self._submit_task(job_id, self._discover, (job_id, token, due))
                               for job_id, token, due in leased) if f is not None]
        wait(futures)
        return len(leased)

    def _discover(self, leased: tuple[str, int, float]) -> None:
        job_id, token, due = leased
        self.engine.discover(job_id, Lease(self.owner, token, self.lease), due=due)


def _by_job(builds: list[Build]) -> list[list[Build]]:
    """Leased builds in due order, the watched builds of one job together (polled as one
    task); a build whose result is being reported is a task of its own."""
    groups: list[list[Build]] = []
    watched: dict[str, list[Build]] = {}
    for build in builds:
        if build.watch is not WatchState.WATCHING:
            groups.append([build])
        elif build.job_id in watched:
            watched[build.job_id].append(build)
        else:
            watched[build.job_id] = [build]
            groups.append(watched[build.job_id])
    return groups
