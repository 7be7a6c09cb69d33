"""The Slack flow behind the listeners: command -> confirmation -> one build -> channel message.

Listeners call ``on_*``; each acknowledges at once and hands slow work
(database writes, posts, the CodeArts call) to a small bounded worker pool,
so acks stay fast however slow Slack or CodeArts are. Exactly-once steps are
claims in the store, never flags in memory.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot import messages as msg
from bot.codearts import (
    ApiError,
    AuthError,
    BadResponseError,
    CodeArtsClient,
    CodeArtsError,
    NotSentError,
    OutcomeUnknownError,
)
from bot.command import BuildCommand, Help, ParseError, parse
from bot.config import BuildbotConfig
from bot.policy import Approved, Denied, UserGroups, decide, runnable_jobs
from bot.slack_io import api_error_name, respond
from bot.store import Store
from bot.usergroups import CachedOnly, SlackUserGroups

log = logging.getLogger(__name__)

CONFIRM_TTL = 600.0  # seconds a Run/Cancel question stays answerable
MAX_BACKLOG = 2000  # queued pieces of work beyond which new commands are turned away
Ack = Callable[..., Any]


@dataclass
class Outcome:
    """What a slash command (or Rebuild click) comes to, before any side effect."""

    reply: dict[str, Any] | None
    decision: str  # help, invalid, denied, approved
    approved: Approved | None = None
    detail: str | None = None
    job: str | None = None


@dataclass
class Who:
    user_id: str
    channel_id: str
    team_id: str | None
    response_url: str | None
    text: str


class Flow:
    """Everything the listeners do, with its collaborators passed in."""

    def __init__(self, *, config: BuildbotConfig, store: Store, api: CodeArtsClient,
                 slack: WebClient, groups: SlackUserGroups, worker: Executor,
                 poll_seconds: float = 15.0, link_template: str | None = None,
                 project_id: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.api = api
        self.slack = slack
        self.groups = groups
        self.worker = worker
        self.poll_seconds = poll_seconds
        self.link_template = link_template
        self.project_id = project_id
        self.clock = clock
        self._inflight = 0
        self._idle = threading.Condition()

    # --- helpers -----------------------------------------------------------

    def submit(self, fn: Callable[..., Any], *args: Any, reply_to: str | None = None) -> None:
        """Run slow work after the ack. If it fails unexpectedly (say the database is
        away), the user is told with an error ID that is also in the log."""
        def run() -> None:
            try:
                fn(*args)
            except Exception:
                error_id = uuid.uuid4().hex[:8]
                log.exception("background work failed id=%s in %s", error_id,
                              getattr(fn, "__name__", fn))
                respond(reply_to, msg.internal_error(error_id))
            finally:
                with self._idle:
                    self._inflight -= 1
                    self._idle.notify_all()

        with self._idle:
            self._inflight += 1
        self.worker.submit(run)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until no work submitted after an ack is queued or running (tests, shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout)

    def link(self, job_id: str, build_no: str, daily: str) -> str | None:
        if not self.link_template:
            return None
        try:
            return self.link_template.format(job_id=job_id, build_no=build_no,
                                             daily_build_number=daily,
                                             project_id=self.project_id or "")
        except (KeyError, IndexError, ValueError):
            log.warning("BUILD_LINK_TEMPLATE has an unknown placeholder; no link shown")
            return None

    def is_admin(self, user_id: str) -> bool:
        return user_id in self.config.admins

    # --- /build --------------------------------------------------------------

    def on_command(self, ack: Ack, payload: dict[str, Any]) -> None:
        if self._inflight >= MAX_BACKLOG:  # keep memory bounded; nothing is half-done
            log.warning("busy: %d pieces of work queued; command turned away", self._inflight)
            ack(msg.busy())
            return
        who = _who(payload)
        cached = CachedOnly(self.groups)
        outcome = self.evaluate(who, cached)
        if cached.missed:  # a user group is not cached: decide after the ack
            ack()
            self.submit(self._command_later, who, reply_to=who.response_url)
            return
        if outcome.reply is not None:
            ack(outcome.reply)
        else:
            ack()
        self.submit(self.after_command, who, outcome, reply_to=who.response_url)

    def _command_later(self, who: Who) -> None:
        outcome = self.evaluate(who, self.groups)
        if outcome.reply is not None:
            respond(who.response_url, outcome.reply)
        self.after_command(who, outcome)

    def evaluate(self, who: Who, groups: UserGroups) -> Outcome:
        """Parse and check a command for this user and channel; no side effects."""
        if not who.user_id or not who.channel_id:  # never from Slack; never a wildcard either
            problem = "Slack did not say who you are or where you typed this; try again."
            return Outcome(msg.problems_message([problem]), "invalid", detail=problem)
        parsed = parse(who.text)
        if isinstance(parsed, ParseError):
            return Outcome(msg.problems_message(parsed.problems), "invalid", detail=parsed.message)
        if isinstance(parsed, Help):
            jobs = runnable_jobs(self.config, user_id=who.user_id, channel_id=who.channel_id,
                                 usergroups=groups)
            listing = [(j.name, j.description) for j in jobs]
            return Outcome(msg.help_message(listing, is_admin=self.is_admin(who.user_id)), "help")
        return self._check(parsed, who, groups)

    def _check(self, command: BuildCommand, who: Who, groups: UserGroups) -> Outcome:
        decision = decide(self.config, command, user_id=who.user_id, channel_id=who.channel_id,
                          usergroups=groups)
        if isinstance(decision, Denied):
            return Outcome(msg.problems_message(decision.problems), "denied", job=command.job,
                           detail=" ".join(decision.problems))
        return Outcome(None, "approved", approved=decision, job=decision.job_name)

    def after_command(self, who: Who, outcome: Outcome) -> None:
        """Audit, then (for an approved request) ask Run/Cancel or start at once."""
        now = self.clock()
        approved = outcome.approved
        if approved is None:
            if outcome.decision != "help":
                self.store.audit(decision=outcome.decision, now=now, user_id=who.user_id,
                                 channel_id=who.channel_id, job=outcome.job, detail=outcome.detail)
            return
        rid = uuid.uuid4().hex
        state = "pending" if approved.confirm else "running"
        self.store.add_request(
            id=rid, state=state, now=now, ttl=CONFIRM_TTL, user_id=who.user_id,
            team_id=who.team_id, channel_id=who.channel_id, job_name=approved.job_name,
            job_id=approved.job_id, command=who.text.strip(), body=approved.body,
            response_url=who.response_url, decision="confirm" if approved.confirm else "approved")
        log.info("request %s user=%s channel=%s job=%s confirm=%s", rid, who.user_id,
                 who.channel_id, approved.job_name, approved.confirm)
        if approved.confirm:
            respond(who.response_url, msg.confirmation(rid, approved.job_name,
                                                       approved.description, approved.body))
            return
        row = self.store.get_request(rid)
        assert row is not None
        self.start(row, who.response_url)

    # --- Run / Cancel --------------------------------------------------------

    def on_click(self, ack: Ack, body: dict[str, Any], handler: Callable[[Click], None]) -> None:
        """Any of our buttons: ack at once, then ``handler`` (run, cancel, stop, rebuild)."""
        ack()
        click = _click(body)
        self.submit(handler, click, reply_to=click.response_url)

    def run_clicked(self, click: Click) -> None:
        claim = self.store.claim_request(id=click.value, user_id=click.user_id, now=self.clock())
        if claim.ok:
            assert claim.row is not None
            self.start(claim.row, click.response_url or claim.row["response_url"])
            return
        log.info("run click refused request=%s user=%s reason=%s", click.value, click.user_id,
                 claim.reason)
        row = claim.row
        if claim.reason in ("running", "started"):
            return  # the first click is handling it and will replace the message
        if claim.reason == "missing" or row is None:
            reply = msg.missing()
        elif claim.reason == "not_yours":
            reply = msg.not_yours(row["user_id"])
            self.store.audit(decision="refused_click", now=self.clock(), request_id=row["id"],
                             user_id=click.user_id, channel_id=row["channel_id"],
                             job=row["job_name"], detail=f"Run on {row['user_id']}'s request")
        elif claim.reason == "expired":
            reply = msg.expired(row["job_name"], row["command"])
            self.store.audit(decision="expired", now=self.clock(), request_id=row["id"],
                             user_id=row["user_id"], channel_id=row["channel_id"],
                             job=row["job_name"])
        else:
            reply = msg.already(claim.reason)
        respond(click.response_url, reply)

    def cancel_clicked(self, click: Click) -> None:
        row = self.store.get_request(click.value)
        if row is None:
            respond(click.response_url, msg.missing())
            return
        if row["user_id"] != click.user_id:
            self.store.audit(decision="refused_click", now=self.clock(), request_id=row["id"],
                             user_id=click.user_id, channel_id=row["channel_id"],
                             job=row["job_name"], detail=f"Cancel on {row['user_id']}'s request")
            respond(click.response_url, msg.not_yours(row["user_id"]))
            return
        if not self.store.set_request_state(id=row["id"], state="cancelled", now=self.clock(),
                                            only_from="pending"):
            current = self.store.get_request(row["id"])
            state = current["state"] if current else "missing"
            if state not in ("running", "started"):
                respond(click.response_url, msg.already(state))
            return
        self.store.audit(decision="cancelled", now=self.clock(), request_id=row["id"],
                         user_id=row["user_id"], channel_id=row["channel_id"], job=row["job_name"])
        respond(click.response_url, msg.cancelled(row["job_name"]))

    # --- the one call to CodeArts --------------------------------------------

    def start(self, row: Any, response_url: str | None) -> None:
        """Send the claimed request to CodeArts once, record the build, then tell the channel."""
        body = json.loads(row["body"])
        job = row["job_name"]
        try:
            result = self.api.run_build(body)
        except CodeArtsError as exc:
            self._start_failed(row, response_url, exc)
            return
        now = self.clock()
        try:
            build = self.store.record_build(request=row, build_no=result.actual_build_number,
                                            daily_build_number=result.daily_build_number,
                                            now=now, first_check_at=now + self.poll_seconds)
        except Exception:
            # The build runs but cannot be followed: say so, with its numbers, everywhere.
            error_id = uuid.uuid4().hex[:8]
            log.exception("build started but not recorded id=%s request=%s user=%s job=%s "
                          "build=%s daily=%s", error_id, row["id"], row["user_id"], job,
                          result.actual_build_number, result.daily_build_number)
            respond(response_url, msg.started_unrecorded(job, result.daily_build_number,
                                                         result.actual_build_number, error_id))
            return
        log.info("build started request=%s user=%s job=%s build=%s daily=%s", row["id"],
                 row["user_id"], job, result.actual_build_number, result.daily_build_number)
        where = self.announce(build, body, response_url)
        respond(response_url, msg.started_ack(job, result.daily_build_number, where))

    def _start_failed(self, row: Any, response_url: str | None, exc: CodeArtsError) -> None:
        job = row["job_name"]
        if isinstance(exc, (OutcomeUnknownError, BadResponseError)):
            # an unreadable answer (a proxy's page, a 200 we cannot parse) may follow a start
            state = "unknown"
            reply = msg.outcome_unknown(job, unreadable=isinstance(exc, BadResponseError))
        elif isinstance(exc, NotSentError):
            state, reply = "failed", msg.not_sent(job, str(exc))
        elif isinstance(exc, AuthError):
            state = "failed"
            reply = msg.login_failed(job, status=exc.status, error_code=exc.error_code, error_msg=exc.error_msg,
                                     hint=exc.hint, request_id=exc.request_id)
        elif isinstance(exc, ApiError):
            state = "failed"
            reply = msg.api_error(job, status=exc.status, error_code=exc.error_code,
                                  error_msg=exc.error_msg, hint=exc.hint, request_id=exc.request_id)
        else:
            state = "failed"
            reply = msg.api_error(job, status=None, error_code=None, error_msg=str(exc),
                                  hint="Try again later.", request_id=None)
        now = self.clock()
        self.store.set_request_state(id=row["id"], state=state, now=now, error=str(exc))
        self.store.audit(decision=state if state == "unknown" else "api_error", now=now,
                         request_id=row["id"], user_id=row["user_id"],
                         channel_id=row["channel_id"], job=job, parameters=json.loads(row["body"]),
                         detail=type(exc).__name__, error_code=getattr(exc, "error_code", None),
                         error_msg=getattr(exc, "error_msg", None) or str(exc))
        log.warning("build not started request=%s user=%s job=%s error=%s", row["id"],
                    row["user_id"], job, exc)
        respond(response_url, reply)

    def announce(self, build: Any, body: dict[str, Any], response_url: str | None) -> str | None:
        """Post a build this process has claimed in its channel and keep the ts; fall back
        to the response_url where the bot cannot post. Returns the channel posted in."""
        message = msg.announcement(
            build_id=build["id"], user_id=build["user_id"], job_name=build["job_name"],
            description=self._description(build["job_name"]), body=body,
            daily=build["daily_build_number"], build_no=build["build_no"],
            link=self.link(build["job_id"], build["build_no"], build["daily_build_number"]))
        try:
            resp = self.slack.chat_postMessage(channel=build["channel_id"], **message)
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("channel post failed build=%s channel=%s error=%s; using response_url",
                        build["id"], build["channel_id"], api_error_name(exc))
            respond(response_url, {**message, "response_type": "in_channel",
                                   "replace_original": False})
            self.store.set_announced(id=build["id"], channel=None, ts=None)
            return None
        self.store.set_announced(id=build["id"], channel=resp.get("channel") or build["channel_id"],
                                 ts=resp.get("ts"))
        return str(build["channel_id"])

    def _description(self, job_name: str) -> str:
        job = self.config.jobs.get(job_name)
        return job.description if job is not None else ""

    # --- Stop / Rebuild (buttons on the build's messages) ---------------------

    def _recheck(self, click: Click) -> tuple[Any, Any, Outcome] | None:
        """The original request, run through the checks again for whoever clicked."""
        build = self.store.get_build(click.value)
        request = self.store.get_request(click.value)
        if build is None or request is None:
            respond(click.response_url, {**msg.missing(), "replace_original": False})
            return None
        who = Who(click.user_id, build["channel_id"], click.team_id, click.response_url,
                  request["command"])
        return build, request, self.evaluate(who, self.groups)

    def stop_clicked(self, click: Click) -> None:
        checked = self._recheck(click)
        if checked is None:
            return
        build, _request, outcome = checked
        if outcome.approved is None:
            problems = [outcome.detail or "You may not run this job here."]
            respond(click.response_url, msg.stop_refused(problems))
            return
        if build["watch"] != "watching":
            respond(click.response_url, msg.ephemeral("This build has already ended.",
                                                      replace=False))
            return
        try:
            self.api.stop_build(build["job_id"], build["build_no"])
        except CodeArtsError as exc:
            respond(click.response_url, msg.ephemeral(f"CodeArts did not stop the build: {exc}",
                                                      replace=False))
            return
        self.store.audit(decision="stop", now=self.clock(), request_id=build["id"],
                         user_id=click.user_id, channel_id=build["channel_id"],
                         job=build["job_name"], build_no=build["build_no"],
                         daily_build_number=build["daily_build_number"])
        self.thread_post(build, msg.stop_requested(click.user_id, build["job_name"],
                                                    build["daily_build_number"]))

    def rebuild_clicked(self, click: Click) -> None:
        checked = self._recheck(click)
        if checked is None:
            return
        build, request, outcome = checked
        who = Who(click.user_id, build["channel_id"], click.team_id, click.response_url,
                  request["command"])
        if outcome.reply is not None:
            respond(click.response_url, {**outcome.reply, "replace_original": False})
        self.after_command(who, outcome)

    def thread_post(self, build: Any, message: dict[str, Any]) -> bool:
        channel, ts = build["message_channel"], build["message_ts"]
        try:
            if ts:
                self.slack.chat_postMessage(channel=channel, thread_ts=ts, **message)
            else:  # no channel message: tell the requester directly
                self.slack.chat_postMessage(channel=build["user_id"], **message)
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("thread post failed build=%s error=%s", build["id"], api_error_name(exc))
            return False
        return True


@dataclass
class Click:
    value: str
    user_id: str
    team_id: str | None
    response_url: str | None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _who(payload: dict[str, Any]) -> Who:
    return Who(user_id=_str(payload.get("user_id")), channel_id=_str(payload.get("channel_id")),
               team_id=_str(payload.get("team_id")) or None,
               response_url=_str(payload.get("response_url")) or None,
               text=_str(payload.get("text")))


def _click(body: dict[str, Any]) -> Click:
    actions = body.get("actions")
    action = _dict(actions[0]) if isinstance(actions, list) and actions else {}
    return Click(value=_str(action.get("value"))[:64],
                 user_id=_str(_dict(body.get("user")).get("id")),
                 team_id=_str(_dict(body.get("team")).get("id")) or None,
                 response_url=_str(body.get("response_url")) or None)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
