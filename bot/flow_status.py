"""``/build status`` and ``/build stop`` on the Slack side, with the Stop button on a
build's messages and the Stop / Keep running question.

Who may look at a job's builds or stop one: whoever may run the job here (the checks of a
run, without its parameters or the hourly limit). Answers go to the typist alone;
``/build stop`` asks Stop / Keep running first.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar

from bot import messages as msg
from bot.answers import Click
from bot.codearts.errors import CodeArtsError, describe, request_id_of
from bot.command import StatusCommand, StopCommand
from bot.flow_types import FlowRoom, Outcome, Who
from bot.lifecycle import Build
from bot.policy import UserGroups, runnable_jobs
from bot.rules import JOB_ID_RE
from bot.status import (
    STATUS_THREADS,
    BuildRow,
    entries_of,
    entry_of,
    read_stop_value,
    stop_value,
)

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


class StatusFlow(FlowRoom):
    """Status and stop: their checks, their answers (read from CodeArts after the ack), and
    the stop buttons. The shared pieces (``may_run``, the reply) are the ``Flow``'s."""

    COMMANDS: ClassVar[tuple[type, ...]] = (StatusCommand, StopCommand)

    _status_pool: ThreadPoolExecutor | None = None  # made on first use (_pool)
    _status_lock = threading.Lock()  # guards making and closing it

    def stop_clicked(self, click: Click) -> None:
        """Whoever may run the job in the build's channel may stop it: the permission
        checks of a run, without its parameters or the hourly limit (as /build stop)."""
        build = self.engine.get_build(click.value)
        if build is None:
            self.respond(click.response_url, {**msg.missing(), "replace_original": False})
            return
        allowed = self.may_act(entries_of(self.config, build, build.job_id), click.user_id,
                               build.channel_id)
        if isinstance(allowed, list):
            self.respond(click.response_url, msg.stop_refused(
                allowed or ["You may not run this job here."]))
            return
        if not self.engine.is_followed(build):
            self.respond(click.response_url, msg.ephemeral("This build has already ended.",
                                                      replace=False))
            return
        self.send_stop(job_id=build.job_id, job_name=build.job_name, build_no=build.build_no,
                       daily=build.daily_build_number, user_id=click.user_id,
                       channel_id=build.channel_id, response_url=click.response_url,
                       build=build)


    def check(self, command: StatusCommand | StopCommand, who: Who,
                    groups: UserGroups) -> Outcome:
        if command.job is None:  # /build status: only the jobs this user may run here
            return Outcome(None, "status", asked=command)
        allowed = self.flow.may_run(command.job, who.user_id, who.channel_id, groups)
        if isinstance(allowed, list):
            if self.flow.job_named(command.job) is None and not JOB_ID_RE.fullmatch(command.job):
                reply = msg.problems_message(allowed)  # no such job: like a typing mistake
            elif isinstance(command, StopCommand):
                reply = msg.stop_refused(allowed)
            else:
                reply = msg.status_refused(allowed)
            return Outcome(reply, "denied", job=command.job, detail=" ".join(allowed))
        return Outcome(None, "status" if isinstance(command, StatusCommand) else "stop",
                       job=allowed[0], asked=command, target=allowed)

    def answer(self, who: Who, outcome: Outcome) -> None:
        """After the ack: read CodeArts and answer ``/build status`` or ask Stop/Keep."""
        command = outcome.asked
        if isinstance(command, StatusCommand) and command.job is None:
            self._all_status(who)
            return
        assert outcome.target is not None
        job_name, job_id = outcome.target
        if isinstance(command, StatusCommand):
            try:
                rows = self.engine.recent_builds(job_id)
            except CodeArtsError as exc:
                log.warning("status of job=%s not read: %s", job_name, type(exc).__name__)
                self.respond(who.response_url, msg.status_failed(
                    job_name, describe(exc).why, request_id=request_id_of(exc)))
                return
            shown = self._visible(rows, job_id, who)
            self.respond(who.response_url, msg.job_status(job_name, shown,
                                                          hidden=len(rows) - len(shown)))
            return
        assert isinstance(command, StopCommand)
        self.respond(who.response_url, self._stop_question(job_name, job_id, command.build_no,
                                                           who))

    def _all_status(self, who: Who) -> None:
        jobs = runnable_jobs(self.config, user_id=who.user_id, channel_id=who.channel_id,
                             usergroups=self.groups)
        shown = jobs[:msg.HELP_PAGE_JOBS]
        results = self.engine.last_results([(j.name, j.id) for j in shown], self._pool())
        self.respond(who.response_url, msg.jobs_status(
            [(r.job_name, r.row, r.failed) for r in results], left=len(jobs) - len(shown),
            request_ids={r.job_name: r.request_id for r in results if r.request_id}))

    def _pool(self) -> ThreadPoolExecutor:
        """Threads for /build status's history calls, side by side (made on first use)."""
        with self._status_lock:
            if self._status_pool is None:
                self._status_pool = ThreadPoolExecutor(STATUS_THREADS,
                                                       thread_name_prefix="buildbot-status")
            return self._status_pool

    def close_status_pool(self) -> None:
        """Let the status threads end once their calls are done (at shutdown)."""
        with self._status_lock:
            pool, self._status_pool = self._status_pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _visible(self, rows: list[BuildRow], job_id: str, who: Who) -> list[BuildRow]:
        """The rows this user may see here: each build by the job entry it belongs to (a
        build started under another entry naming the same task is not theirs to see)."""
        allowed: dict[tuple[str, ...], bool] = {}
        shown = []
        for row in rows:
            entries = (row.entry,) if row.entry is not None else tuple(
                entries_of(self.config, None, job_id))
            if entries not in allowed:
                allowed[entries] = isinstance(
                    self.may_act(list(entries), who.user_id, who.channel_id), tuple)
            if allowed[entries]:
                shown.append(row)
        return shown

    def _stop_question(self, job_name: str, job_id: str, build_no: str,
                       who: Who) -> dict[str, Any]:
        """Stop / Keep running for a running build; else why there is nothing to stop. A
        build is stopped through the job entry it belongs to, not the name typed."""
        standing, ours = self.engine.standing(job_id, build_no)
        if entry_of(ours) != job_name:
            allowed = self.may_act(entries_of(self.config, ours, job_id), who.user_id,
                                   who.channel_id)
            if isinstance(allowed, list):
                return msg.stop_refused(allowed)
        daily = self.engine.daily_of(job_id, build_no, ours)
        if standing.kind == "missing":
            return msg.stop_no_such_build(job_name, build_no)
        if standing.kind == "ended":
            return msg.stop_not_running(job_name, daily, build_no, standing.result)
        if standing.kind == "unknown":
            assert standing.error is not None
            return msg.status_failed(job_name, describe(standing.error).why,
                                     request_id=request_id_of(standing.error))
        return msg.stop_question(job_name, daily, build_no, value=stop_value(job_id, build_no),
                                 started_by=ours.user_id if ours else None)

    def stop_confirmed(self, click: Click, channel_id: str) -> None:
        """Stop on a /build stop question: checked again for whoever clicks, where the
        question was asked, then stopped as the Stop button stops."""
        target = read_stop_value(click.value)
        if target is None or not channel_id:
            self.respond(click.response_url, msg.missing())
            return
        job_id, build_no = target
        standing, ours = self.engine.standing(job_id, build_no)
        allowed = self.may_act(entries_of(self.config, ours, job_id), click.user_id,
                               channel_id)
        if isinstance(allowed, list):
            self.respond(click.response_url, msg.stop_refused(allowed))
            return
        job_name = allowed[0]
        daily = self.engine.daily_of(job_id, build_no, ours)
        if standing.kind == "ended":
            self.respond(click.response_url,
                         {**msg.stop_not_running(job_name, daily, build_no, standing.result),
                          "replace_original": True})
            return
        if standing.kind == "missing":
            self.respond(click.response_url, msg.stop_no_such_build(job_name, build_no))
            return
        if self.send_stop(job_id=job_id, job_name=job_name, build_no=build_no, daily=daily,
                          user_id=click.user_id, channel_id=channel_id,
                          response_url=click.response_url, build=ours):
            self.respond(click.response_url, msg.stop_asked(job_name, daily, build_no))

    def may_act(self, entries: list[str], user_id: str,
                channel_id: str) -> tuple[str, str] | list[str]:
        """``may_run`` on every job entry a build belongs to (``status.entries_of``): the
        first entry's (name, task ID) when all allow it, else the first refusal's
        problems."""
        first: tuple[str, str] | None = None
        for name in entries:
            found = self.flow.may_run(name, user_id, channel_id, self.groups)
            if isinstance(found, list):
                return found or ["You may not run this job here."]
            first = first or found
        assert first is not None
        return first

    def stop_kept(self, click: Click) -> None:
        target = read_stop_value(click.value)
        names = [j.name for j in self.config.jobs.values() if target and j.id == target[0]]
        self.respond(click.response_url, msg.stop_kept(
            names[0] if names else (target[0] if target else "the job"),
            target[1] if target else "?"))

    def send_stop(self, *, job_id: str, job_name: str, build_no: str, daily: str,
                  user_id: str, channel_id: str, response_url: str | None,
                  build: Build | None) -> bool:
        """Ask CodeArts to stop a build (the Stop button and /build stop): audited, and
        said in the build's thread when the bot follows it; a refusal is told to the user
        with CodeArts' words. True when CodeArts took it."""
        answer = self.engine.stop(job_id=job_id, job_name=job_name, build_no=build_no,
                                  daily=daily, user_id=user_id, channel_id=channel_id,
                                  build=build)
        exc = answer.error
        if exc is not None:
            told = describe(exc)
            self.respond(response_url, msg.stop_failed(
                job_name, daily, build_no, status=told.status, error_code=told.error_code,
                error_msg=told.detail, request_id=told.request_id))
            return False
        return True
