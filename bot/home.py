"""The App Home (issue 29): what each person sees on the bot's Home tab, published with
``views.publish`` when they open it and when something on it changes.

A Home is published at most once per ``HOME_EVERY`` seconds per person, on any number of
replicas: the publishing turn is a conditional UPDATE on the person's row
(``bot.store.home``), the state shown is read after the turn is taken (the current
one, never a queue of stale views), and a change noticed inside the interval is
published when the next turn comes (``sweep``, every ``SWEEP_EVERY`` seconds, on every
replica). The Approve and Reject buttons are the approval message's own (same action
ids, same handlers): same checks, same once-only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from bot.clicks import Desk
from bot.config import BuildbotConfig, JobConfig
from bot.home_view import BuildRow, ToApprove, home_view
from bot.lifecycle import Build, RequestState
from bot.notifier import Notifier
from bot.policy import UserGroups, approval_rule, user_allowed
from bot.slack_budget import Priority
from bot.store import Store

log = logging.getLogger(__name__)

HOME_EVERY = 10.0  # seconds: a person's Home is published at most this often
SWEEP_EVERY = 2.0  # seconds between two looks for changed Homes
LIST_LIMIT = 500  # rows read for one part of a Home (it shows far fewer)


class Home(Desk):
    """Each person's Home: opened, changed, published."""

    def __init__(self, *, config: BuildbotConfig, store: Store, notifier: Notifier,
                 clock: Callable[[], float], groups: UserGroups,
                 every: float = HOME_EVERY) -> None:
        super().__init__(config=config, store=store, notifier=notifier, clock=clock)
        self.groups = groups
        self.every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- when it is published ----------------------------------------------------------

    def opened(self, user_id: str, team_id: str | None) -> bool:
        """``app_home_opened``: shown now if its turn has come, else when it comes."""
        if not user_id:
            return False
        self.store.home_opened(user_id=user_id, team_id=team_id, now=self.clock())
        return self.publish_if_due(user_id, Priority.ANSWER)

    def publish_if_due(self, user_id: str, priority: Priority) -> bool:
        """Take this person's turn (one caller on any replica) and publish what is true
        now; False when it was not theirs to take."""
        if not self.store.claim_home(user_id=user_id, now=self.clock(), every=self.every):
            return False
        view, approves = self.view_for(user_id)
        sent = self.notifier.publish_home(user_id, view, priority=priority)
        if not sent.ok:
            log.warning("home not published user=%s error=%s", user_id, sent.error)
        # a refusal Slack will repeat is not tried again until something changes
        self.store.home_published(user_id=user_id, approves=approves,
                                  ok=sent.ok or sent.permanent)
        return sent.ok

    def sweep(self) -> int:
        """Mark the Homes whose data changed, then publish those whose turn has come;
        returns how many this call published."""
        now = self.clock()
        self.store.mark_changed(now=now)
        return sum(self.publish_if_due(user, Priority.ANNOUNCE)
                   for user in self.store.due_homes(now=now))

    def start_sweeping(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="buildbot-home",
                                            daemon=True)
            self._thread.start()

    def stop_sweeping(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(SWEEP_EVERY):
            try:
                self.sweep()
            except Exception:  # the database away, say: the next sweep tries again
                log.exception("home sweep failed")

    # --- what it shows -------------------------------------------------------------------

    def jobs_anywhere(self, user_id: str) -> list[JobConfig]:
        """The jobs this person may run in at least one channel."""
        return [job for job in self.config.jobs.values()
                if user_allowed(self.config, job, user_id, self.groups) is True]

    def approvable_jobs(self, user_id: str) -> list[str]:
        """The jobs whose requests this person may approve (listed, or in a group)."""
        names = []
        for name in self.config.jobs:
            rule = approval_rule(self.config, name)
            if rule is None:
                continue
            if user_id in rule.approvers or any(
                    user_id in (self.groups.members(g) or frozenset()) for g in rule.groups):
                names.append(name)
        return names

    def view_for(self, user_id: str) -> tuple[dict[str, Any], list[str]]:
        """The Home as it is now, and the jobs this person may approve."""
        now = self.clock()
        approves = self.approvable_jobs(user_id)
        approvals = [
            ToApprove(request_id=r.id, requester=r.user_id, job_name=r.job_name,
                      description=self.description(r.job_name), body=r.body,
                      approved=len(r.approved_by), needed=r.approvals_needed or 1,
                      expires_at=r.expires_at)
            for r in self.store.awaiting_requests(now=now, job_names=approves,
                                                  limit=LIST_LIMIT)
            if r.user_id != user_id and user_id not in r.approved_by]
        running, _ = self.store.builds_of(user_id, running=True, limit=LIST_LIMIT)
        recent, recent_total = self.store.builds_of(user_id, running=False, limit=10)
        links = self._links([*running[:10], *recent])
        active = [self._row(b, links) for b in running] + [
            BuildRow(job_name=r.job_name, daily="", build_no="",
                     state="queued" if r.state is RequestState.QUEUED else "awaiting")
            for r in self.store.waiting_requests_of(user_id, limit=LIST_LIMIT)]
        jobs = [(j.name, j.description) for j in self.jobs_anywhere(user_id)]
        view = home_view(approvals=approvals, active=active,
                         recent=[self._row(b, links) for b in recent],
                         recent_total=recent_total, jobs=jobs,
                         is_admin=user_id in self.config.admins)
        return view, approves

    @staticmethod
    def _row(build: Build, links: dict[str, str]) -> BuildRow:
        return BuildRow(job_name=build.job_name, daily=build.daily_build_number,
                        build_no=build.build_no, state=build.result or "running",
                        duration_ms=build.duration_ms, link=links.get(build.id))

    def _links(self, builds: list[Build]) -> dict[str, str]:
        """Each build's channel message link: from the store, or asked of Slack once
        (``chat.getPermalink``) and kept."""
        known = self.store.permalinks([b.id for b in builds])
        for build in builds:
            if build.id in known or not build.message_channel or not build.message_ts:
                continue
            link = self.notifier.permalink(build.message_channel, build.message_ts,
                                           priority=Priority.ANSWER)
            if link:
                self.store.set_permalink(id=build.id, permalink=link)
                known[build.id] = link
        return known
