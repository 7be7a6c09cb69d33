"""Starting a build and announcing it: the one run call to CodeArts, the build
recorded, the requester told, and the build's message posted in its channel (a build
of ours, or one a subscription found)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from bot import decisions
from bot import messages as msg
from bot.clicks import Desk
from bot.codearts.client import CodeArtsClient
from bot.codearts.errors import CodeArtsError
from bot.config import BuildbotConfig
from bot.lifecycle import (
    ORIGIN_SUBSCRIPTION,
    Build,
    Request,
    RequestState,
    decide_run_failure,
    new_error_id,
)
from bot.notifier import BUILD_EVENT, Delivery, Notifier, tagged
from bot.people import started_words
from bot.policy import Denied, UserGroups, decide_again
from bot.recovery import ANSWER_LOST, Recovery
from bot.reports import LOOK_BACK
from bot.slack_budget import Priority
from bot.store import AlreadySettled, Store

log = logging.getLogger(__name__)


class Starts(Desk):
    """A claimed request sent to CodeArts once, and a build's channel message."""

    def __init__(self, *, config: BuildbotConfig, store: Store, notifier: Notifier,
                 clock: Callable[[], float], api: CodeArtsClient, recovery: Recovery,
                 link: Callable[[Build], str | None], poll_seconds: float,
                 alive: Callable[[], bool],
                 announcer: Callable[[Build, str | None], str | None],
                 groups: UserGroups) -> None:
        """``announcer``: the engine's announce, looked up at each call (so what
        replaces it there, as a test does, is what a start uses)."""
        super().__init__(config=config, store=store, notifier=notifier, clock=clock)
        self.api = api
        self.recovery = recovery
        self.link = link
        self.poll_seconds = poll_seconds
        self.alive = alive
        self.announcer = announcer
        self.groups = groups  # user-group membership, for the checks made again

    # --- the one call to CodeArts ------------------------------------------------------

    def start(self, request: Request, response_url: str | None) -> Denied | None:
        """Send a claimed request to CodeArts once, record the build, then tell the channel.

        The checks of a run are made again first, against the configuration in force (a
        Run click, the approval that made it enough and the queue's turn all come here):
        when they now say no, nothing is sent, the request ends refused, the requester is
        told why and the refusal is returned (for whoever clicked).

        Once CodeArts has answered that the build started, nothing that fails later
        may tell the user otherwise: every later failure says "started, but ..."."""
        job = request.job_name
        if not self.alive():  # others may have taken this request over: leave it to them
            log.warning("not sending request=%s: this process missed its heartbeat",
                        request.id)
            return None
        denied = decide_again(self.config, job_name=job, job_id=request.job_id,
                              body=request.body, user_id=request.user_id,
                              channel_id=request.channel_id, usergroups=self.groups)
        if denied is not None:
            self._refused_now(request, response_url, denied)
            return denied
        try:
            result = self.api.run_build(request.body)
        except CodeArtsError as exc:
            self._start_failed(request, response_url, exc)
            return None
        try:
            now = self.clock()
            build = self.store.record_build(request=request, build_no=result.actual_build_number,
                                            daily_build_number=result.daily_build_number,
                                            now=now, first_check_at=now + self.poll_seconds)
        except AlreadySettled:  # the answer came so late that a restart settled it already
            log.warning("run answer for request=%s came after it was settled; build=%s",
                        request.id, result.actual_build_number)
            return None
        except Exception:
            # The build runs but cannot be recorded yet: say so, with its numbers, and
            # record it once the database answers (the watcher's next passes).
            error_id = new_error_id()
            log.exception("build started but not recorded id=%s request=%s user=%s job=%s "
                          "build=%s daily=%s", error_id, request.id, request.user_id, job,
                          result.actual_build_number, result.daily_build_number)
            self.recovery.keep_unrecorded(request, result, response_url)
            self.notifier.respond(response_url, msg.started_unrecorded(
                job, result.daily_build_number, result.actual_build_number, error_id))
            return None
        self.started(request, build, response_url)
        return None

    def started(self, request: Request, build: Build, response_url: str | None) -> None:
        job = request.job_name
        self.metrics.builds_started.inc()
        log.info("build started request=%s user=%s job=%s build=%s daily=%s", request.id,
                 request.user_id, job, build.build_no, build.daily_build_number)
        try:
            where = self.announcer(build, response_url)
        except Exception:
            error_id = new_error_id()
            log.exception("build started but not announced id=%s request=%s", error_id,
                          request.id)
            self.notifier.respond(response_url, msg.started_unannounced(
                job, build.daily_build_number, build.build_no, error_id))
            return
        self.notifier.respond(response_url, msg.started_ack(
            job, build.daily_build_number, where, build_no=build.build_no))

    def _refused_now(self, request: Request, response_url: str | None,
                     denied: Denied) -> None:
        """The checks made again said no: sending -> refused, audited and told, once."""
        log.info("request refused when acted on request=%s user=%s job=%s", request.id,
                 request.user_id, request.job_name)
        self.act(decisions.refused_now(request, denied.problems, response_url))

    def _start_failed(self, request: Request, response_url: str | None,
                      exc: CodeArtsError) -> None:
        failure = decide_run_failure(request.job_name, exc)
        log.warning("build not started request=%s user=%s job=%s outcome=%s error=%s",
                    request.id, request.user_id, request.job_name, failure.state.value, exc)
        try:
            now = self.clock()
            if failure.state is RequestState.UNKNOWN:  # settled soon from the history
                changed = self.store.note_answer_lost(id=request.id, now=now,
                                                      error=f"{ANSWER_LOST}{exc}")
            else:
                changed = self.store.move_request(id=request.id, old=RequestState.SENDING,
                                                  new=failure.state, now=now, error=str(exc))
            if changed:
                self.store.audit(decision=failure.audit, now=now, request_id=request.id,
                                 user_id=request.user_id, channel_id=request.channel_id,
                                 job=request.job_name, parameters=request.body,
                                 detail=type(exc).__name__, error_code=failure.error_code,
                                 error_msg=failure.error_msg)
        except Exception:  # the answer is known whatever the store says: tell it
            log.exception("could not record the failed start request=%s", request.id)
        self.notifier.respond(response_url, failure.reply)

    # --- the channel message -------------------------------------------------------------

    def announce(self, build: Build, response_url: str | None, *,
                 recovering: bool = False) -> str | None:
        """Post a build this process has claimed in its channel and keep the ts: a build
        of ours, or one a subscription found (``all``); the same steps, another message.

        Where the bot may not post (a final refusal) it falls back to the response_url
        (a followed build has none: it is logged). A passing failure (429s, 5xx, a
        dropped answer) leaves the claim open for the watcher, which first looks in the
        channel for the message (its metadata names the build) before posting it: Slack
        may have posted it already; where Slack cannot say, it is not posted again.
        Returns the channel posted in, or None."""
        if recovering:
            settled, where = self._look_in_channel(build)
            if settled:
                return where
        if not self.alive():  # another process may be announcing it: leave it to recovery
            log.warning("not posting build=%s: this process missed its heartbeat", build.id)
            self.recovery.hand_over(build)
            return None
        message = self._announcement(build)
        # the person who clicked Run waits for this post (their answer names the channel):
        # it is spent as an answer, ahead of results queued in the channel; a build found
        # by a subscription or posted again by recovery keeps nobody waiting
        urgency = Priority.ANSWER if response_url and not recovering else Priority.ANNOUNCE
        sent = self.notifier.post(build.channel_id, tagged(message, BUILD_EVENT, build.id),
                                  priority=urgency)
        return self._posted(build, response_url, message, sent)

    def _posted(self, build: Build, response_url: str | None, message: msg.Message,
                sent: Delivery) -> str | None:
        """What the channel post came to: kept (its ts), handed to recovery (not
        confirmed), or refused for good (the fallback). The channel, or None."""
        if not sent.ok and not sent.permanent:
            log.warning("channel post of build=%s not confirmed (%s); the watcher will look "
                        "for it and post it if it is not there", build.id, sent.error)
            self.recovery.hand_over(build)
            return None
        if not sent.ok or (build.origin == ORIGIN_SUBSCRIPTION and not sent.ts):
            self._announce_refused(build, response_url, message, sent)
            return None
        channel = sent.channel or build.channel_id
        if sent.ts is None:
            self.store.set_announced(id=build.id, channel=channel, ts=None)
            return channel
        self._save_ts(build, channel, sent.ts)
        return build.channel_id

    def _look_in_channel(self, build: Build) -> tuple[bool, str | None]:
        """After a crash or an unconfirmed post: is the message in the channel already?
        (True, its channel) when it is; (True, None) when Slack cannot say (it is never
        posted twice); (False, None) when it is not there: post it."""
        since = (build.announce_claimed_at or build.created_at) - LOOK_BACK
        found = self.notifier.find(build.channel_id, BUILD_EVENT, build.id, oldest=since)
        if found.known and found.ts:
            log.info("found the channel message of build=%s; not posting it again", build.id)
            self.store.set_announced(id=build.id, channel=build.channel_id, ts=found.ts)
            return True, build.channel_id
        if not found.known:  # cannot tell whether it is there: never post it twice
            self.store.set_announced(id=build.id, channel=None, ts=None)
            self._announcement_uncertain(build)
            return True, None
        return False, None

    def _save_ts(self, build: Build, channel: str, ts: str) -> None:
        """Keep the channel message's ts; where the store is away, saved by the next pass."""
        try:
            self.store.set_announced(id=build.id, channel=channel, ts=ts)
        except Exception:
            log.warning("could not save the channel message of build=%s; saving it later",
                        build.id, exc_info=True)
            self.recovery.keep_unsaved(build.id, channel, ts)

    def _announcement(self, build: Build) -> msg.Message:
        """A build's channel message while it runs."""
        if build.origin == ORIGIN_SUBSCRIPTION:
            return msg.followed_announcement(
                build_id=build.id, job_name=build.job_name, daily=build.daily_build_number,
                build_no=build.build_no, link=self.link(build),
                started=started_words(self.config, build))
        request = self.store.get_request(build.id)
        return msg.announcement(
            build_id=build.id, user_id=build.user_id, job_name=build.job_name,
            description=self.description(build.job_name),
            body=request.body if request is not None else {},
            daily=build.daily_build_number, build_no=build.build_no, link=self.link(build),
            approvers=request.approved_by if request is not None else ())

    def _announcement_uncertain(self, build: Build) -> None:
        """Slack cannot say whether the message was posted: the requester is told (a
        followed build has none: it is logged)."""
        if build.origin == ORIGIN_SUBSCRIPTION:
            log.warning("cannot tell whether build=%s was announced in channel=%s; not "
                        "posting it again", build.id, build.channel_id)
            return
        self.notifier.direct(build.user_id, msg.announcement_uncertain(
            job_name=build.job_name, daily=build.daily_build_number,
            build_no=build.build_no, channel=build.channel_id, link=self.link(build)))

    def _announce_refused(self, build: Build, response_url: str | None, message: msg.Message,
                          sent: Delivery) -> None:
        """Slack will not take the channel message: posted through the response_url
        instead (a followed build has none: it is logged); never tried again."""
        if build.origin == ORIGIN_SUBSCRIPTION:
            log.warning("channel post of followed build=%s refused channel=%s error=%s",
                        build.id, build.channel_id, sent.error)
        else:
            log.warning("channel post refused build=%s channel=%s error=%s; using response_url",
                        build.id, build.channel_id, sent.error)
            self.notifier.respond(response_url, {**message, "response_type": "in_channel",
                                                 "replace_original": False})
        self.store.set_announced(id=build.id, channel=None, ts=None)
