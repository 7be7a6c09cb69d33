"""Live progress of a running build (its elapsed time and the step it is on, shown in
its channel message) and the log tail of a failed or stopped one."""

from __future__ import annotations

import logging
from collections.abc import Callable

from bot import messages as msg
from bot.clicks import Desk
from bot.codearts.answers import Outputs, Step
from bot.codearts.client import CodeArtsClient
from bot.codearts.errors import CodeArtsError, describe
from bot.config import BuildbotConfig
from bot.lifecycle import (
    ORIGIN_SUBSCRIPTION,
    Build,
    Lease,
    decide_progress,
    progress_delay,
    progress_due,
    progress_line,
    progress_pace,
    wants_log_tail,
)
from bot.notifier import BUILD_EVENT, Notifier, tagged
from bot.people import started_words
from bot.store import Store

log = logging.getLogger(__name__)

STEPS_EVERY = 60.0  # seconds between two reads of one build's steps (live progress)
STEPS_REMEMBERED = 20_000  # steps of this many builds kept in memory at most


class Progress(Desk):
    """Elapsed marks and steps in a running build's message; the log tail at its end."""

    def __init__(self, *, config: BuildbotConfig, store: Store, notifier: Notifier,
                 clock: Callable[[], float], api: CodeArtsClient,
                 link: Callable[[Build], str | None], max_age: float,
                 progress_every: float, log_tail_lines: int) -> None:
        super().__init__(config=config, store=store, notifier=notifier, clock=clock)
        self.api = api
        self.link = link
        self.max_age = max_age
        self.progress_every = progress_every  # 0: the channel message is not updated
        # build id -> (when its steps were read, what they were): a best-effort read is
        # made at most every STEPS_EVERY seconds per build; lost on restart, which only
        # means one more read
        self._steps_seen: dict[str, tuple[float, list[Step] | None]] = {}
        self.log_tail_lines = log_tail_lines  # 0: no log tail in failure replies
        self._counted: tuple[float, int] = (float("-inf"), 0)  # (when, followed builds)

    # --- live progress and the log tail ---------------------------------------------------

    def progress(self, build: Build, lease: Lease) -> None:
        """Update a running build's channel message in place with its elapsed time and, where
        CodeArts lists steps, the step it is on. Best effort and bounded: at most one update
        per message per ``progress_every`` seconds (kept in the store, so replicas and
        restarts agree), none when the text is the same, never by a holder whose lease
        passed to another, and a refused update (a 429) only puts that message's next one off:
        nothing here waits or raises."""
        try:
            self._progress(build, lease)
        except Exception:
            log.exception("progress update of build=%s failed", build.id)

    def pace(self, now: float) -> float:
        """Seconds between two updates of one message: ``progress_every``, or longer while
        the running builds' updates would spend more of chat.update's Slack budget than
        results and announcements leave (the count of followed builds, read every 10 s)."""
        budget = self.notifier.budget
        if budget is None:
            return self.progress_every
        if now - self._counted[0] >= 10.0:
            self._counted = (now, self.store.watching_count())
        return progress_pace(every=self.progress_every, messages=self._counted[1],
                             spare_per_second=budget.spare_rate("chat.update"))

    def due(self, build: Build) -> bool:
        """Is an update of this build's channel message due now (``progress`` has work)?"""
        return progress_due(build, now=self.clock(), every=self.progress_every)

    def _progress(self, build: Build, lease: Lease) -> None:
        now = self.clock()
        if not progress_due(build, now=now, every=self.progress_every):
            return
        every = self.pace(now)
        line = progress_line(now - build.created_at, self._steps(build, now),
                             busy_every=every if every > self.progress_every * 1.5 else None)
        if not decide_progress(build, line, now=now, every=self.progress_every):
            return
        assert build.message_channel and build.message_ts
        if not self.store.still_held(id=build.id, owner=lease.owner, token=lease.token,
                                     now=self.clock(), lease_seconds=lease.seconds):
            log.warning("lease of build=%s lost before its progress update; not updating",
                        build.id)
            return
        message = self._message(build, line)
        sent = self.notifier.update_now(build.message_channel, build.message_ts,
                                        tagged(message, BUILD_EVENT, build.id))
        after = self.clock()
        if sent.ok:
            self.store.set_progress(id=build.id, owner=lease.owner, token=lease.token,
                                    due_at=after + every, text=line)
            return
        wait = progress_delay(every=every, retry_after=sent.retry_after,
                              permanent=sent.permanent)
        log.info("progress of build=%s put off %.0f s (%s)", build.id, wait, sent.error)
        self.store.set_progress(id=build.id, owner=lease.owner, token=lease.token,
                                due_at=after + wait)

    def _message(self, build: Build, line: str) -> msg.Message:
        """The build's channel message with its progress line."""
        if build.origin == ORIGIN_SUBSCRIPTION:
            return msg.followed_announcement(
                build_id=build.id, job_name=build.job_name, daily=build.daily_build_number,
                build_no=build.build_no, link=self.link(build), progress=line,
                started=started_words(self.config, build))
        request = self.store.get_request(build.id)
        approvers = tuple(getattr(request, "approved_by", ()) or ())
        return msg.announcement(
            build_id=build.id, user_id=build.user_id, job_name=build.job_name,
            description=self.description(build.job_name),
            body=request.body if request is not None else {},
            daily=build.daily_build_number, build_no=build.build_no,
            link=self.link(build), progress=line,
            **({"approvers": approvers} if approvers else {}))

    def _steps(self, build: Build, now: float) -> list[Step] | None:
        """The build's steps, read again once the last read is STEPS_EVERY old; None when
        CodeArts does not list them or could not be asked (the elapsed time alone)."""
        seen = self._steps_seen.get(build.id)
        if seen is not None and 0 <= now - seen[0] < STEPS_EVERY:
            return seen[1]
        steps: list[Step] | None = None
        try:
            steps = self.api.build_steps(build.job_id, build.build_no)
        except CodeArtsError as exc:  # best effort: the elapsed time alone
            log.info("steps of build=%s not read (%s); showing the elapsed time only",
                     build.id, type(exc).__name__)
        if len(self._steps_seen) > STEPS_REMEMBERED:  # builds followed elsewhere now
            self._steps_seen.clear()
        self._steps_seen[build.id] = (now, steps)
        return steps

    def result_message(self, build: Build, result: str, link: str | None, *,
                       outputs: Outputs | None = None) -> msg.Message:
        """The thread reply for an ended build; a failed or stopped one carries the last
        lines of its log (or one line saying they could not be read), a successful one
        what it produced (``outputs``, read by ``bot.outputs``)."""
        if result == "timeout":
            return msg.gave_up(job_name=build.job_name, daily=build.daily_build_number,
                               hours=int(self.max_age // 3600), link=link,
                               build_no=build.build_no)
        tail, truncated, problem = self.log_tail(build, result)
        return msg.result_reply(build_id=build.id, user_id=build.user_id,
                                job_name=build.job_name, daily=build.daily_build_number,
                                result=result, duration_ms=build.duration_ms, link=link,
                                build_no=build.build_no, tail=tail, tail_truncated=truncated,
                                tail_error=problem, outputs=outputs)

    def log_tail(self, build: Build,
                 result: str) -> tuple[list[str] | None, bool, str | None]:
        """(lines, truncated, why not): read within the client's small time budget."""
        if self.log_tail_lines <= 0 or not wants_log_tail(result):
            return None, False, None
        try:
            got = self.api.log_tail(build.job_id, build.build_no, lines=self.log_tail_lines)
        except CodeArtsError as exc:
            log.warning("log of build=%s not read: %s", build.id, type(exc).__name__)
            return None, False, _log_problem(exc)
        except Exception:
            log.exception("log of build=%s not read", build.id)
            return None, False, "an error inside buildbot"
        return list(got.lines), got.truncated, None

    def forget(self, build_id: str) -> None:
        """An ended build's steps are no longer read."""
        self._steps_seen.pop(build_id, None)


def _log_problem(exc: CodeArtsError) -> str:
    """Why a log could not be read, in a few words for the thread (no secret, no body),
    with the request ID of CodeArts' answer when it had one."""
    told = describe(exc)
    rid = told.request_id
    return f"{told.brief}, {msg.request_id_text(rid)}" if rid else told.brief
