"""What the Slack listeners do: parse and check a command, ask Run/Cancel, handle
the buttons, and hand every request and build to the engine.

Listeners call ``on_*``; each acknowledges at once and hands slow work
(database writes, posts, the CodeArts call) to a small bounded worker pool,
so acks stay fast however slow Slack or CodeArts are. Exactly-once steps are
claims in the store, never flags in memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from sqlalchemy.exc import SQLAlchemyError

from bot import messages as msg
from bot.codearts import CodeArtsError
from bot.command import BuildCommand, Help, ParseError, parse
from bot.config import BuildbotConfig
from bot.engine import Engine
from bot.lifecycle import CONFIRM_MINUTES, Build, Request, RequestState, new_error_id
from bot.policy import Approved, Denied, UserGroups, decide, runnable_jobs
from bot.usergroups import CachedOnly, SlackUserGroups

log = logging.getLogger(__name__)

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
    received_at: float | None = None  # monotonic, when the command reached the bot


class Flow:
    """Everything the listeners do, with its collaborators passed in."""

    def __init__(self, *, config: BuildbotConfig, engine: Engine, slack: WebClient,
                 groups: SlackUserGroups, worker: Executor,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.engine = engine
        self.store = engine.store
        self.api = engine.api
        self.slack = slack
        self.groups = groups
        self.worker = worker
        self.clock = clock
        self.respond = engine.notifier.respond
        self._inflight = 0
        self._idle = threading.Condition()

    # --- helpers -----------------------------------------------------------

    def submit(self, fn: Callable[..., Any], *args: Any, reply_to: str | None = None) -> None:
        """Run slow work after the ack. If it fails unexpectedly (say the database is
        away), the user is told with an error ID that is also in the log."""
        def run() -> None:
            try:
                fn(*args)
            except Exception as exc:
                if isinstance(exc, SQLAlchemyError):
                    self.engine.metrics.database_errors.inc()
                error_id = new_error_id()
                log.exception("background work failed id=%s in %s", error_id,
                              getattr(fn, "__name__", fn))
                self.respond(reply_to, msg.internal_error(error_id))
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

    def is_admin(self, user_id: str) -> bool:
        return user_id in self.config.admins

    # --- /build --------------------------------------------------------------

    def on_command(self, ack: Ack, payload: dict[str, Any]) -> None:
        if self._inflight >= MAX_BACKLOG:  # keep memory bounded; nothing is half-done
            log.warning("busy: %d pieces of work queued; command turned away", self._inflight)
            ack(msg.busy())
            return
        who = _who(payload)
        who.received_at = time.monotonic()
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
            self.respond(who.response_url, outcome.reply)
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
            return Outcome(msg.help_message(listing, is_admin=self.is_admin(who.user_id),
                                            page=parsed.page), "help")
        return self._check(parsed, who, groups)

    def _check(self, command: BuildCommand, who: Who, groups: UserGroups) -> Outcome:
        decision = decide(self.config, command, user_id=who.user_id, channel_id=who.channel_id,
                          usergroups=groups)
        if isinstance(decision, Denied):
            return Outcome(msg.problems_message(decision.problems), "denied", job=command.job,
                           detail=" ".join(decision.problems))
        return Outcome(None, "approved", approved=decision, job=decision.job_name)

    def after_command(self, who: Who, outcome: Outcome, *, rebuild_of: str | None = None) -> None:
        """Audit, then (for an approved request) ask Run/Cancel or start at once."""
        approved = outcome.approved
        if approved is None:
            self.engine.metrics.commands.labels(
                "help" if outcome.decision == "help" else "refused").inc()
            if outcome.decision != "help":
                self.store.audit(decision=outcome.decision, now=self.clock(),
                                 user_id=who.user_id, channel_id=who.channel_id,
                                 job=outcome.job, detail=outcome.detail)
            return
        self.engine.new_request(user_id=who.user_id, team_id=who.team_id,
                                channel_id=who.channel_id, text=who.text,
                                response_url=who.response_url, approved=approved,
                                rebuild_of=rebuild_of, received_at=who.received_at)

    # --- Run / Cancel --------------------------------------------------------

    def on_click(self, ack: Ack, body: dict[str, Any], handler: Callable[[Click], None]) -> None:
        """Any of our buttons: ack at once, then ``handler`` (run, cancel, stop, rebuild)."""
        ack()
        click = _click(body)
        self.submit(handler, click, reply_to=click.response_url)

    def run_clicked(self, click: Click) -> None:
        claim = self.store.claim_request(id=click.value, user_id=click.user_id, now=self.clock())
        if claim.ok:
            assert claim.request is not None
            self.engine.start(claim.request, click.response_url or claim.request.response_url)
            return
        log.info("run click refused request=%s user=%s reason=%s", click.value, click.user_id,
                 claim.reason)
        request = claim.request
        if claim.reason in (RequestState.SENDING, RequestState.STARTED):
            return  # the first click is handling it and will replace the message
        if claim.reason == "missing" or request is None:
            reply = msg.missing()
        elif claim.reason == "not_yours":
            reply = msg.not_yours(request.user_id)
            self.store.audit(decision="refused_click", now=self.clock(), request_id=request.id,
                             user_id=click.user_id, channel_id=request.channel_id,
                             job=request.job_name, detail=f"Run on {request.user_id}'s request")
        elif claim.reason == "expires_now":
            self.engine.metrics.commands.labels("expired").inc()
            reply = msg.expired(request.job_name, request.command, minutes=CONFIRM_MINUTES)
            self.store.audit(decision="expired", now=self.clock(), request_id=request.id,
                             user_id=request.user_id, channel_id=request.channel_id,
                             job=request.job_name)
        else:
            reply = msg.already(claim.reason)
        self.respond(click.response_url, reply)

    def cancel_clicked(self, click: Click) -> None:
        request = self.store.get_request(click.value)
        if request is None:
            self.respond(click.response_url, msg.missing())
            return
        if request.user_id != click.user_id:
            self.store.audit(decision="refused_click", now=self.clock(), request_id=request.id,
                             user_id=click.user_id, channel_id=request.channel_id,
                             job=request.job_name,
                             detail=f"Cancel on {request.user_id}'s request")
            self.respond(click.response_url, msg.not_yours(request.user_id))
            return
        if not self.store.move_request(id=request.id, old=RequestState.PENDING,
                                       new=RequestState.CANCELLED, now=self.clock()):
            current = self.store.get_request(request.id)
            state = current.state.value if current else "missing"
            if state not in (RequestState.SENDING, RequestState.STARTED):
                self.respond(click.response_url, msg.already(state))
            return
        self.engine.metrics.commands.labels("cancelled").inc()
        self.store.audit(decision="cancelled", now=self.clock(), request_id=request.id,
                         user_id=request.user_id, channel_id=request.channel_id,
                         job=request.job_name)
        self.respond(click.response_url, msg.cancelled(request.job_name))

    # --- Stop / Rebuild (buttons on the build's messages) ---------------------

    def _recheck(self, click: Click) -> tuple[Build, Request, Outcome] | None:
        """The original request, run through the checks again for whoever clicked."""
        build = self.store.get_build(click.value)
        request = self.store.get_request(click.value)
        if build is None or request is None:
            self.respond(click.response_url, {**msg.missing(), "replace_original": False})
            return None
        who = Who(click.user_id, build.channel_id, click.team_id, click.response_url,
                  request.command)
        return build, request, self.evaluate(who, self.groups)

    def stop_clicked(self, click: Click) -> None:
        checked = self._recheck(click)
        if checked is None:
            return
        build, _request, outcome = checked
        if outcome.approved is None:
            problems = [outcome.detail or "You may not run this job here."]
            self.respond(click.response_url, msg.stop_refused(problems))
            return
        if not self.engine.is_followed(build):
            self.respond(click.response_url, msg.ephemeral("This build has already ended.",
                                                      replace=False))
            return
        try:
            self.api.stop_build(build.job_id, build.build_no)
        except CodeArtsError as exc:
            self.respond(click.response_url, msg.stop_failed(
                build.job_name, build.daily_build_number, build.build_no,
                status=getattr(exc, "status", None), error_code=getattr(exc, "error_code", None),
                error_msg=(getattr(exc, "error_msg", None) or getattr(exc, "reason", None)
                           or getattr(exc, "snippet", None) or str(exc)),
                request_id=getattr(exc, "request_id", None)))
            return
        self.store.audit(decision="stop", now=self.clock(), request_id=build.id,
                         user_id=click.user_id, channel_id=build.channel_id,
                         job=build.job_name, build_no=build.build_no,
                         daily_build_number=build.daily_build_number)
        self.engine.thread_note(build, msg.stop_requested(click.user_id, build.job_name,
                                                          build.daily_build_number,
                                                          build.build_no))

    def rebuild_clicked(self, click: Click) -> None:
        """Whoever clicks is checked as if they typed the command, and is always asked
        Run/Cancel: a Rebuild click alone never starts a build."""
        checked = self._recheck(click)
        if checked is None:
            return
        build, request, outcome = checked
        who = Who(click.user_id, build.channel_id, click.team_id, click.response_url,
                  request.command)
        if outcome.reply is not None:
            self.respond(click.response_url, {**outcome.reply, "replace_original": False})
        self.after_command(who, outcome, rebuild_of=build.id)


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
