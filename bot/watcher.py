"""Follows every started build to its end and reports it in the build's thread, once.

Watches live in the store, leased to one process at a time, so a restarted
bot resumes them and several replicas share them; a replica that dies has
its leases expire and taken over. The same loop does the housekeeping that
must survive restarts: expiring confirmations, settling requests that were
being sent when a bot died, and announcing builds whose channel message
was never posted.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError

from bot import messages as msg
from bot.codearts import CodeArtsError
from bot.flow import Flow
from bot.slack_io import api_error_name, respond

log = logging.getLogger(__name__)

MAX_AGE = 24 * 3600.0  # stop following a build after this long
MAX_ERROR_BACKOFF = 600.0
STALE_SENDING = 180.0  # a request "running" this long was being sent by a bot that died
UNANNOUNCED_AFTER = 300.0  # a claimed announcement not posted by then: its poster died
REPORT_RETRY = 30.0
KEEP_DAYS = 30.0  # finished requests and builds are forgotten after this (the audit log stays)
PRUNE_EVERY = 3600.0


class Watcher:
    """One pass with ``run_once()`` (tests), or a background thread with ``start()``."""

    def __init__(self, flow: Flow, *, poll_seconds: float, owner: str | None = None,
                 lease_seconds: float | None = None, batch: int = 200, threads: int = 8,
                 max_age: float = MAX_AGE, clock: Callable[[], float] = time.time) -> None:
        self.flow = flow
        self.store = flow.store
        self.poll = poll_seconds
        self.owner = owner or uuid.uuid4().hex[:16]
        self.lease = lease_seconds or max(60.0, 4 * poll_seconds)
        self.batch = batch
        self.max_age = max_age
        self.clock = clock
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="buildbot-watch")
        self._stop = threading.Event()
        self._pruned_at = 0.0
        self._thread: threading.Thread | None = None

    # --- the loop ------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="buildbot-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

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
        self.housekeeping()
        rows = self.store.lease_due(owner=self.owner, now=self.clock(),
                                    lease_seconds=self.lease, limit=self.batch)
        for future in [self._pool.submit(self._handle, dict(r)) for r in rows]:
            future.result()
        return len(rows)

    def _handle(self, build: dict[str, Any]) -> None:
        try:
            if build["watch"] == "reporting":
                self._report(build)
            else:
                self._poll(build)
        except Exception:
            log.exception("watch failed build=%s", build["id"])

    # --- polling -------------------------------------------------------------

    def interval(self, age: float) -> float:
        """Back off for long builds: every poll for 10 minutes, then 2x, then 4x after an hour."""
        if age < 600:
            return self.poll
        return self.poll * (2 if age < 3600 else 4)

    def _poll(self, build: dict[str, Any]) -> None:
        now = self.clock()
        age = now - build["created_at"]
        try:
            state = self.flow.api.build_state(build["job_id"], build["build_no"])
        except CodeArtsError as exc:
            failures = build["failures"] + 1
            log.warning("status check failed build=%s job=%s failures=%d error=%s",
                        build["id"], build["job_name"], failures, type(exc).__name__)
            if age > self.max_age:
                self._give_up(build)
                return
            delay = min(self.poll * 2 ** min(failures, 10), MAX_ERROR_BACKOFF)
            self.store.reschedule(id=build["id"], owner=self.owner, next_check_at=now + delay,
                                  failures=failures)
            return
        if not state.finished:
            if age > self.max_age:
                self._give_up(build)
            else:
                self.store.reschedule(id=build["id"], owner=self.owner,
                                      next_check_at=now + self.interval(age), failures=0)
            return
        result = state.outcome or "unknown"
        if self.store.begin_report(id=build["id"], owner=self.owner, result=result,
                                   duration_ms=_duration(state), now=now):
            log.info("build ended build=%s job=%s daily=%s result=%s", build["id"],
                     build["job_name"], build["daily_build_number"], result)
            self._report({**build, "watch": "reporting", "result": result,
                          "duration_ms": _duration(state)})

    def _give_up(self, build: dict[str, Any]) -> None:
        if self.store.begin_report(id=build["id"], owner=self.owner, result="timeout",
                                   duration_ms=None, now=self.clock()):
            self._report({**build, "watch": "reporting", "result": "timeout", "duration_ms": None})

    # --- reporting -----------------------------------------------------------

    def _report(self, build: dict[str, Any]) -> None:
        """Reply in the thread and update the parent; retried later if Slack would not take it."""
        link = self.flow.link(build["job_id"], build["build_no"], build["daily_build_number"])
        if build["result"] == "timeout":
            reply = msg.gave_up(job_name=build["job_name"], daily=build["daily_build_number"],
                                hours=int(self.max_age // 3600), link=link)
        else:
            reply = msg.result_reply(build_id=build["id"], user_id=build["user_id"],
                                     job_name=build["job_name"],
                                     daily=build["daily_build_number"], result=build["result"],
                                     duration_ms=build["duration_ms"], link=link)
        if not self.flow.thread_post(build, reply):
            self.store.reschedule(id=build["id"], owner=self.owner,
                                  next_check_at=self.clock() + REPORT_RETRY,
                                  failures=build["failures"])
            return
        self.store.finish_report(id=build["id"])
        self.store.audit(decision="finished", now=self.clock(), request_id=build["id"],
                         user_id=build["user_id"], channel_id=build["channel_id"],
                         job=build["job_name"], detail=build["result"],
                         daily_build_number=build["daily_build_number"],
                         build_no=build["build_no"])
        self._update_parent(build, link)

    def _update_parent(self, build: dict[str, Any], link: str | None) -> None:
        if not build["message_ts"]:
            return
        done = msg.announcement_done(build_id=build["id"], user_id=build["user_id"],
                                     job_name=build["job_name"],
                                     daily=build["daily_build_number"],
                                     build_no=build["build_no"], link=link,
                                     result=build["result"], duration_ms=build["duration_ms"])
        try:
            self.flow.slack.chat_update(channel=build["message_channel"], ts=build["message_ts"],
                                        **done)
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("parent update failed build=%s error=%s", build["id"], api_error_name(exc))

    # --- housekeeping ----------------------------------------------------------

    def housekeeping(self) -> None:
        now = self.clock()
        for row in self.store.expire_pending(now=now):
            self.store.audit(decision="expired", now=now, request_id=row["id"],
                             user_id=row["user_id"], channel_id=row["channel_id"],
                             job=row["job_name"])
            respond(row["response_url"], msg.expired(row["job_name"], row["command"]))
        for row in self.store.stale_running(older_than=now - STALE_SENDING):
            if self.store.set_request_state(id=row["id"], state="unknown", now=now,
                                            only_from="running", error="bot stopped while sending"):
                self.store.audit(decision="unknown", now=now, request_id=row["id"],
                                 user_id=row["user_id"], channel_id=row["channel_id"],
                                 job=row["job_name"], parameters=json.loads(row["body"]),
                                 detail="bot stopped while sending")
                respond(row["response_url"], msg.outcome_unknown(row["job_name"]))
        if now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            gone = self.store.prune(before=now - KEEP_DAYS * 86400)
            if gone:
                log.info("forgot %d finished requests and builds older than %d days", gone,
                         int(KEEP_DAYS))
        for build in self.store.claim_unannounced(now=now, stale_after=UNANNOUNCED_AFTER):
            request = self.store.get_request(build["id"])
            body = json.loads(request["body"]) if request is not None else {}
            self.flow.announce(build, body, build["response_url"])


def _duration(state: Any) -> int | None:
    if state.duration_ms is not None:
        return int(state.duration_ms)
    if state.start_time is not None and state.finish_time is not None:
        return int((state.finish_time - state.start_time).total_seconds() * 1000)
    return None
