"""Reporting a build's result, once: a reply in its message's thread (or a direct
message), the parent message updated, the watch ended and audited. Builds of ours and
followed ones take the same steps; what differs is which message is posted, where, and
the fallback (a followed build has no requester)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from bot import messages as msg
from bot.clicks import Desk
from bot.codearts.errors import CodeArtsError
from bot.config import BuildbotConfig
from bot.lifecycle import (
    FILTER_CHANGES,
    FILTER_FAILURES,
    FLIP_BROKE,
    ORIGIN_SUBSCRIPTION,
    AnnounceState,
    Build,
    Flip,
    Lease,
    decide_report_refused,
    followed_failed,
)
from bot.notifier import BUILD_EVENT, RESULT_EVENT, Delivery, Notifier, tagged
from bot.outputs import BuildOutputs
from bot.people import started_by, started_words
from bot.progress import Progress
from bot.store import Store

log = logging.getLogger(__name__)

FLIP_WAIT = 2.0  # seconds a flip waits for an older build's to be said first
LOOK_BACK = 300.0  # a channel is searched this far before a post was claimed (clocks differ)


class Reports(Desk):
    """A build's result in its thread and its channel message, once."""

    def __init__(self, *, config: BuildbotConfig, store: Store, notifier: Notifier,
                 clock: Callable[[], float], tracker: Progress,
                 link: Callable[[Build], str | None],
                 where: Callable[[Build], tuple[str | None, str | None]],
                 max_age: float, poll_seconds: float, outputs: BuildOutputs,
                 flip: Callable[[Build], Flip] = lambda _b: Flip(),
                 flip_waits: Callable[[Build], bool] = lambda _b: False) -> None:
        """``flip``: what a ``changes`` build's end meant on its branch (``bot.changes``),
        ``flip_waits``: whether an older build's flip must be said first."""
        super().__init__(config=config, store=store, notifier=notifier, clock=clock)
        self.flip = flip
        self.flip_waits = flip_waits
        self.tracker = tracker  # the log tail in a failure's reply
        self.outputs = outputs  # what a success produced, in its reply
        self.link = link
        self.where = where  # the build's channel message: (channel, ts)
        self.max_age = max_age
        self.poll_seconds = poll_seconds
        # called with an ended build before its result is posted (a success closes the
        # I'm on it claims before it, so its messages can say who was on it), each time
        # its report is tried: it must be idempotent
        self.ending: Callable[[Build], object] = lambda build: None
        # called with a build's id once its report is finished (the Notify me DMs)
        self.finished: Callable[[str], object] = lambda build_id: None
        # called with each result reply Slack took (or that was found in its thread): a
        # failure's is remembered, so I'm on it can edit it
        self.posted: Callable[[Build, msg.Message, Delivery], object] = lambda *a: None

    def report(self, build: Build, lease: Lease, *, retry: bool = False) -> None:
        """Reply in the thread and update the parent, once. A passing Slack error is
        retried with backoff; a final one (or 24 hours of passing ones) sends the result to
        the requester directly and ends the watch. A retry (an earlier attempt failed, or
        its holder died or froze) first looks in the thread for the result. Builds ours
        and followed ones take the same steps; what differs is which message is posted,
        where, and the fallback (a followed build has no requester)."""
        ready = self._ready_to_report(build, lease)
        if ready is None:
            return
        build = ready
        self.ending(build)
        channel, ts = self.where(build)
        post = self._post_followed if build.origin == ORIGIN_SUBSCRIPTION else self._post_result
        posted = post(build, lease, channel, ts, retry)
        if posted is not None:  # None: the lease was lost, or it is retried later
            sent, detail = posted
            self._finish_report(build, lease, sent, detail, channel, ts)

    def _post_result(self, build: Build, lease: Lease, channel: str | None, ts: str | None,
                     retry: bool) -> tuple[Delivery, str] | None:
        """The result of a build of ours: a reply in its message's thread, or (no thread)
        a direct message; where Slack refuses it for good, a direct message saying so."""
        result = build.result or "unknown"
        # read here, so a reply that waits for its thread does not read the log (or the
        # outputs) each time; a retry after a crash reads them again (or says it could not)
        reply = self.tracker.result_message(build, result, self.link(build),
                                            outputs=self.outputs.read(build, result))
        self.tracker.forget(build.id)
        if channel and ts and retry:
            found = self._look_in_thread(build, reply, result, channel, ts)
            if found is not None:
                if found[0].ok:
                    self.posted(build, reply, found[0])
                return found
        if not self._still_held(build, lease):
            log.warning("lease of build=%s lost before posting its result; not posting",
                        build.id)
            return None
        sent = self._send_result(build, reply, channel, ts)
        if sent.ok:
            self.posted(build, reply, sent)
            return sent, result
        if self._retry_later(build, lease, sent):
            return None
        return sent, self._result_elsewhere(build, reply, result, channel, sent)

    def _send_result(self, build: Build, reply: msg.Message, channel: str | None,
                     ts: str | None) -> Delivery:
        """In the build's thread; with no channel message, to the requester directly."""
        if channel and ts:
            return self.notifier.post(channel, tagged(reply, RESULT_EVENT, build.id),
                                      thread_ts=ts)
        return self.notifier.direct(build.user_id, reply)

    def _result_elsewhere(self, build: Build, reply: msg.Message, result: str,
                          channel: str | None, sent: Delivery) -> str:
        """Slack refused the thread reply for good: the requester gets it directly, with
        why; the audit detail says what happened."""
        fallback = self.notifier.direct(build.user_id, msg.result_elsewhere(
            reply, channel=channel or build.channel_id, error=sent.error or "unknown"))
        log.warning("result not posted in its thread build=%s error=%s direct=%s",
                    build.id, sent.error, fallback.ok)
        return (f"{result}; Slack refused the thread reply ({sent.error}); direct "
                f"message {'sent' if fallback.ok else 'refused: ' + str(fallback.error)}")

    def _look_in_thread(self, build: Build, reply: msg.Message, result: str, channel: str,
                        ts: str) -> tuple[Delivery, str] | None:
        """On a retry: the result found in the thread (not posted again), or, where the
        thread cannot be read, the requester told directly; None when it is not there."""
        found = self.notifier.find(channel, RESULT_EVENT, build.id, thread_ts=ts)
        if found.known and found.ts:
            log.info("found the result of build=%s in its thread; not posting it again",
                     build.id)
            return Delivery(True, channel=channel, ts=found.ts), result
        if not found.known:  # cannot tell: tell the requester directly instead
            fallback = self.notifier.direct(build.user_id, reply)
            return Delivery(False, error="thread unreadable", permanent=True), (
                f"{result}; thread unreadable; direct message "
                + ("sent" if fallback.ok else f"refused: {fallback.error}"))
        return None

    def _post_followed(self, build: Build, lease: Lease, channel: str | None, ts: str | None,
                       retry: bool) -> tuple[Delivery, str] | None:
        """The result of a followed build, once: a reply in its message's thread (``all``),
        or, for ``failures``, one channel message when it failed (nothing otherwise). No
        requester: where Slack will not take it, it is logged and audited."""
        result = build.result or "unknown"
        if build.notify == FILTER_FAILURES and not followed_failed(result):
            return Delivery(True), f"{result}; not announced (failures only)"
        if build.notify == FILTER_CHANGES:
            return self._post_flip(build, lease, result, retry)
        return self._post_followed_result(build, lease, result, self.link(build),
                                          channel or build.channel_id,
                                          ts if channel else None, retry)

    def _post_flip(self, build: Build, lease: Lease, result: str,
                   retry: bool) -> tuple[Delivery, str] | None:
        """A ``changes`` build: one channel message when its end broke or fixed its
        branch (settled once, see ``bot.changes``), nothing otherwise."""
        current = self.store.get_build(build.id)  # a flip settled by an earlier attempt
        settled = current.flip if current else None
        try:
            if settled is None and self.flip_waits(build):  # an older build's flip first
                self.store.reschedule(id=build.id, owner=lease.owner, token=lease.token,
                                      next_check_at=self.clock() + FLIP_WAIT,
                                      failures=build.failures)
                return None
            flip = self.flip(replace(build, flip=settled))
        except CodeArtsError as exc:  # the job's history could not be read: later
            log.warning("flip of build=%s not decided (%s); trying again", build.id,
                        type(exc).__name__)
            self.store.reschedule(id=build.id, owner=lease.owner, token=lease.token,
                                  next_check_at=self.clock() + self.poll_seconds,
                                  failures=build.failures + 1)
            return None
        if not flip.kind:
            return Delivery(True), f"{result}; not announced (no change on its branch)"
        link = self.link(build)
        if flip.kind == FLIP_BROKE:
            tail, truncated, problem = self.tracker.log_tail(build, result)
            reply = msg.changes_broke(
                job_name=build.job_name, branch=flip.branch, daily=build.daily_build_number,
                build_no=build.build_no, last_good=flip.last_good, link=link, tail=tail,
                tail_truncated=truncated, tail_error=problem,
                mention=started_by(self.config, build), build_id=build.id)
        else:
            reply = msg.changes_fixed(
                job_name=build.job_name, branch=flip.branch, daily=build.daily_build_number,
                build_no=build.build_no, failed=flip.failed, broken_for=flip.broken_for,
                link=link, on_it=self.store.claim_closed_by(build.job_id, flip.branch,
                                                            build.build_no))
        return self._post_followed_reply(build, lease, f"{result}; {flip.kind}", reply,
                                         build.channel_id, None, retry)

    def _finish_report(self, build: Build, lease: Lease, sent: Delivery, detail: str,
                       channel: str | None, ts: str | None) -> None:
        """Update the parent message with the result, end the watch and audit it."""
        if sent.ok and channel and ts and not self._update_parent(build, lease, channel, ts):
            return
        if not self.store.finish_report(id=build.id, owner=lease.owner, token=lease.token):
            log.warning("report of build=%s was finished by another holder", build.id)
            return
        self._reported(build, sent, detail)
        self.finished(build.id)

    def _reported(self, build: Build, sent: Delivery, detail: str) -> None:
        """The report is finished: audited, and (for a result posted of a build of ours)
        the time from its end to its result counted."""
        self.store.audit(decision="finished" if sent.ok else "report_refused", now=self.clock(),
                         request_id=build.id, user_id=build.user_id or None,
                         channel_id=build.channel_id, job=build.job_name, detail=detail,
                         daily_build_number=build.daily_build_number, build_no=build.build_no)
        if sent.ok and build.finished_at is not None and build.origin != ORIGIN_SUBSCRIPTION:
            self.metrics.result_lag_seconds.observe(max(0.0, self.clock() - build.finished_at))

    def _update_parent(self, build: Build, lease: Lease, channel: str, ts: str) -> bool:
        """The channel message shows the result: before the watch ends, so a holder killed
        here updates it again (an update is idempotent); never by a holder whose lease
        has passed to another, nor while Slack asks to wait (False: not finished yet)."""
        if not self._still_held(build, lease):
            log.warning("lease of build=%s lost before updating its message", build.id)
            return False
        updated = self.notifier.update(channel, ts,
                                       tagged(self._done(build), BUILD_EVENT, build.id))
        # Slack is busy (a 429 paused chat.update): the report is finished on a later pass,
        # which finds the result already in the thread and updates the message then
        return updated.ok or updated.permanent or not self._retry_later(build, lease, updated)

    def _done(self, build: Build) -> msg.Message:
        """A build's channel message once it ended."""
        result = build.result or "unknown"
        if build.origin == ORIGIN_SUBSCRIPTION:
            return msg.followed_done(job_name=build.job_name, daily=build.daily_build_number,
                                     build_no=build.build_no, link=self.link(build),
                                     result=result, duration_ms=build.duration_ms,
                                     started=started_words(self.config, build))
        return msg.announcement_done(build_id=build.id, user_id=build.user_id,
                                     job_name=build.job_name, daily=build.daily_build_number,
                                     build_no=build.build_no, link=self.link(build),
                                     result=result, duration_ms=build.duration_ms)

    def _still_held(self, build: Build, lease: Lease) -> bool:
        return self.store.still_held(id=build.id, owner=lease.owner, token=lease.token,
                                     now=self.clock(), lease_seconds=lease.seconds)

    def _retry_later(self, build: Build, lease: Lease, sent: Delivery) -> bool:
        """A refused result post: rescheduled (True) while the refusal may pass."""
        decision = decide_report_refused(build, permanent=sent.permanent, max_age=self.max_age)
        if decision.retry_in is None:
            return False
        self.store.reschedule(id=build.id, owner=lease.owner, token=lease.token,
                              next_check_at=self.clock() + decision.retry_in,
                              failures=decision.failures)
        return True

    def _ready_to_report(self, build: Build, lease: Lease) -> Build | None:
        """The build with its channel message as stored now; None (and checked again
        shortly) while that message is not confirmed: its thread may be about to exist.
        After the age limit the result goes out without it."""
        current = self.store.get_build(build.id)
        if current is not None:
            build = replace(build, announce=current.announce, message_ts=current.message_ts,
                            message_channel=current.message_channel,
                            finished_at=current.finished_at)
        _channel, ts = self.where(build)
        if build.announce is AnnounceState.POSTING and not ts and build.age <= self.max_age:
            self.store.reschedule(id=build.id, owner=lease.owner, token=lease.token,
                                  next_check_at=self.clock() + min(self.poll_seconds, 15.0),
                                  failures=build.failures)
            return None
        return build

    def _post_followed_result(self, build: Build, lease: Lease, result: str,
                              link: str | None, channel: str, ts: str | None,
                              retry: bool) -> tuple[Delivery, str] | None:
        if result == "timeout":
            reply = msg.gave_up(job_name=build.job_name, daily=build.daily_build_number,
                                hours=int(self.max_age // 3600), link=link,
                                build_no=build.build_no)
        else:
            tail, truncated, problem = self.tracker.log_tail(build, result)
            reply = msg.followed_result(
                job_name=build.job_name, daily=build.daily_build_number,
                build_no=build.build_no, result=result, duration_ms=build.duration_ms,
                link=link, tail=tail, tail_truncated=truncated, tail_error=problem,
                outputs=self.outputs.read(build, result), build_id=build.id,
                started=started_words(self.config, build))
        return self._post_followed_reply(build, lease, result, reply, channel, ts, retry)

    def _post_followed_reply(self, build: Build, lease: Lease, result: str,
                             reply: msg.Message, channel: str, ts: str | None,
                             retry: bool) -> tuple[Delivery, str] | None:
        """Post a followed build's result once (a retry looks for it first)."""
        if retry:  # an earlier attempt may have posted it
            found = self.notifier.find(channel, RESULT_EVENT, build.id, thread_ts=ts,
                                       oldest=None if ts else build.created_at - LOOK_BACK)
            if found.known and found.ts:
                self.posted(build, reply, Delivery(True, channel=channel, ts=found.ts))
                return Delivery(True, channel=channel, ts=found.ts), result
            if not found.known:
                return Delivery(False, error="unreadable", permanent=True), (
                    f"{result}; channel unreadable; not posted again")
        if not self._still_held(build, lease):
            log.warning("lease of build=%s lost before posting its result", build.id)
            return None
        sent = self.notifier.post(channel, tagged(reply, RESULT_EVENT, build.id), thread_ts=ts)
        if sent.ok:
            self.posted(build, reply, sent)
            return sent, result
        if self._retry_later(build, lease, sent):
            return None
        log.warning("result of followed build=%s refused channel=%s error=%s", build.id,
                    channel, sent.error)
        return sent, f"{result}; Slack refused it ({sent.error})"
