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
from typing import Any

from slack_sdk import WebClient
from sqlalchemy.exc import SQLAlchemyError

from bot import messages as msg
from bot.answers import Answer, Click, Told
from bot.command import (
    BuildCommand,
    Help,
    ParseError,
    parse,
)
from bot.config import BuildbotConfig, JobConfig
from bot.engine import Engine
from bot.flow_form import FormFlow
from bot.flow_status import StatusFlow
from bot.flow_subs import SubsFlow
from bot.flow_types import Ack, Outcome, Room, Who, read_click, read_who
from bot.flow_unfurl import UnfurlFlow
from bot.flow_workflow import WorkflowFlow
from bot.home import Home
from bot.lifecycle import CONFIRM_MINUTES, Build, Request, new_error_id
from bot.policy import (
    Approved,
    Denied,
    UserGroups,
    command_of,
    decide,
    runnable_jobs,
)
from bot.usergroups import CachedOnly, SlackUserGroups

log = logging.getLogger(__name__)

MAX_BACKLOG = 2000  # queued pieces of work beyond which new commands are turned away

__all__ = ["Ack", "Click", "Flow", "Outcome", "Who", "render"]


class Flow:
    """Everything the listeners do, with its collaborators passed in."""

    def __init__(self, *, config: BuildbotConfig, engine: Engine, slack: WebClient,
                 groups: SlackUserGroups, worker: Executor,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.engine = engine
        self.slack = slack
        self.groups = groups
        self.worker = worker
        self.clock = clock
        self.respond = engine.notifier.respond
        self._inflight = 0
        self._idle = threading.Condition()
        self.home: Home | None = None  # the App Home (bot.home), set by the runtime
        self.form = FormFlow(self)
        self.status = StatusFlow(self)
        self.subs = SubsFlow(self)
        self.unfurl = UnfurlFlow(self)
        self.workflow = WorkflowFlow(self)
        # One table from a parsed command's type to what checks it; a subcommand's room
        # (status, stop, subscriptions) also answers it after the ack. A new subcommand is
        # a grammar entry (bot/command.py), a type in its room's COMMANDS and its message.
        self.rooms: dict[type, Room] = {
            kind: room for room in (self.status, self.subs) for kind in room.COMMANDS}
        self.checks: dict[type, Callable[[Any, Who, UserGroups], Outcome]] = {
            ParseError: self.unreadable, Help: self.help, BuildCommand: self.check,
            **{kind: room.check for kind, room in self.rooms.items()}}

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

    def at_once(self, fn: Callable[..., Any], *args: Any) -> None:
        """Work that may not wait behind the queue (a trigger_id lives 3 s): its own
        thread, counted like queued work (``wait_idle``, the backlog limit)."""
        def run() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("form work failed id=%s in %s", new_error_id(),
                              getattr(fn, "__name__", fn))
            finally:
                with self._idle:
                    self._inflight -= 1
                    self._idle.notify_all()

        with self._idle:
            self._inflight += 1
        threading.Thread(target=run, name="buildbot-form", daemon=True).start()

    def is_admin(self, user_id: str) -> bool:
        return user_id in self.config.admins

    # --- /build --------------------------------------------------------------

    def on_command(self, ack: Ack, payload: dict[str, Any]) -> None:
        if self._inflight >= MAX_BACKLOG:  # keep memory bounded; nothing is half-done
            log.warning("busy: %d pieces of work queued; command turned away", self._inflight)
            ack(msg.busy())
            return
        who = read_who(payload)
        who.received_at = time.monotonic()
        if not who.text.strip() and who.user_id and who.channel_id:  # /build alone: the form
            ack()
            self.at_once(self.form.open_form, who, None)
            return
        cached = CachedOnly(self.groups)
        outcome = self.evaluate(who, cached)
        if cached.missed:  # a user group is not cached: decide after the ack
            ack()
            self.submit(self._command_later, who, reply_to=who.response_url)
            return
        form_job = self.form.form_instead(who, outcome)
        if form_job is not None:  # /build <job> whose required parameter has no default
            ack()
            self.at_once(self.form.open_form, who, form_job, outcome)
            return
        if outcome.reply is not None:
            ack(outcome.reply)
        else:
            ack()
        self.submit(self.after_command, who, outcome, reply_to=who.response_url)

    def _command_later(self, who: Who) -> None:
        outcome = self.evaluate(who, self.groups)
        form_job = self.form.form_instead(who, outcome)
        if form_job is not None:
            self.form.open_form(who, form_job, outcome)
            return
        if outcome.reply is not None:
            self.respond(who.response_url, outcome.reply)
        self.after_command(who, outcome)

    def evaluate(self, who: Who, groups: UserGroups) -> Outcome:
        """Parse and check a command for this user and channel; no side effects."""
        if not who.user_id or not who.channel_id:  # never from Slack; never a wildcard either
            problem = "Slack did not say who you are or where you typed this; try again."
            return Outcome(msg.problems_message([problem]), "invalid", detail=problem)
        parsed = parse(who.text)
        return self.checks[type(parsed)](parsed, who, groups)

    def unreadable(self, parsed: ParseError, who: Who, groups: UserGroups) -> Outcome:
        return Outcome(msg.problems_message(parsed.problems), "invalid", detail=parsed.message)

    def help(self, parsed: Help, who: Who, groups: UserGroups) -> Outcome:
        jobs = runnable_jobs(self.config, user_id=who.user_id, channel_id=who.channel_id,
                             usergroups=groups)
        listing = [(j.name, j.description) for j in jobs]
        return Outcome(msg.help_message(listing, is_admin=self.is_admin(who.user_id),
                                        page=parsed.page), "help")

    def check(self, command: BuildCommand, who: Who, groups: UserGroups) -> Outcome:
        decision = decide(self.config, command, user_id=who.user_id, channel_id=who.channel_id,
                          usergroups=groups)
        if isinstance(decision, Denied):
            return Outcome(msg.problems_message(decision.problems), "denied", job=command.job,
                           detail=" ".join(decision.problems), fields=decision.on_fields())
        over = self.over_limit(decision.job_name, who.user_id)
        if over is not None:
            return Outcome(msg.problems_message([over]), "over_limit", job=decision.job_name,
                           detail=over)
        return Outcome(None, "approved", approved=decision, job=decision.job_name)

    def after_command(self, who: Who, outcome: Outcome, *, rebuild_of: str | None = None) -> None:
        """Audit, then (for an approved request) ask Run/Cancel or start at once."""
        if outcome.asked is not None:  # an allowed subcommand: its room answers it
            self.rooms[type(outcome.asked)].answer(who, outcome)
            return
        approved = outcome.approved
        if approved is None:
            self.engine.not_started(decision=outcome.decision, user_id=who.user_id,
                                    channel_id=who.channel_id, job=outcome.job,
                                    detail=outcome.detail)
            return
        self.engine.new_request(user_id=who.user_id, team_id=who.team_id,
                                channel_id=who.channel_id, text=who.text,
                                response_url=who.response_url, approved=approved,
                                rebuild_of=rebuild_of, received_at=who.received_at)

    # --- Run / Cancel --------------------------------------------------------

    def on_click(self, ack: Ack, body: dict[str, Any], handler: Callable[[Click], None]) -> None:
        """Any of our buttons: ack at once, then ``handler`` (run, cancel, stop, rebuild)."""
        ack()
        click = read_click(body)
        self.submit(handler, click, reply_to=click.response_url)

    def tell(self, response_url: str | None, answer: Answer) -> None:
        """The engine's answer to a click, rendered for the clicker (if it says anything)."""
        reply = render(answer)
        if reply is not None:
            self.respond(response_url, reply)

    def run_clicked(self, click: Click) -> None:
        self.tell(click.response_url, self.engine.run_clicked(click))

    def cancel_clicked(self, click: Click) -> None:
        self.tell(click.response_url, self.engine.cancel(click))

    # --- Rebuild (a button on the build's messages; Stop is flow_status.py's) ------

    def _recheck(self, click: Click) -> tuple[Build, Request, Outcome] | None:
        """The original request, run through the checks again for whoever clicked: its
        parameters, commit and tag as stored (data, never the command text read again)."""
        build = self.engine.get_build(click.value)
        request = self.engine.get_request(click.value)
        if build is None or request is None:
            self.respond(click.response_url, {**msg.missing(), "replace_original": False})
            return None
        who = Who(click.user_id, build.channel_id, click.team_id, click.response_url,
                  request.command)
        if not who.user_id or not who.channel_id:
            return build, request, self.evaluate(who, self.groups)  # says what is missing
        return build, request, self.check(command_of(request.job_name, request.body), who,
                                          self.groups)

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

    # --- Notify me (a running build's message; a DM to the clicker when it ends) ----------

    def notify_clicked(self, click: Click, channel: str) -> None:
        self.respond(click.response_url, self.engine.notify_click(click, channel))

    # --- I'm on it (a failure reply; the reply says who took it) ---------------------------

    def on_it_clicked(self, click: Click, channel: str) -> None:
        answer = self.engine.on_it_click(click, channel)
        if answer is not None:
            self.respond(click.response_url, answer)

    # --- who may run a job (status, stop and subscriptions check this) -------------------

    def may_run(self, job: str, user_id: str, channel_id: str,
                groups: UserGroups) -> tuple[str, str] | list[str]:
        """(job name, build task ID) when this user may run ``job`` in this channel, else
        why not. The permission checks of a run (``decide``): a refusal that is only about
        parameters (a required one without a default) still means the job may be run."""
        decision = decide(self.config, BuildCommand(job), user_id=user_id,
                          channel_id=channel_id, usergroups=groups)
        if isinstance(decision, Approved):
            return decision.job_name, decision.job_id
        named = self.job_named(job)
        if named is not None and any(f is not None for f in decision.fields):
            return named.name, named.id
        return list(decision.problems)

    def job_named(self, name: str) -> JobConfig | None:
        exact = self.config.jobs.get(name)
        if exact is not None:
            return exact
        folded = [j for j in self.config.jobs.values() if j.name.casefold() == name.casefold()]
        return folded[0] if len(folded) == 1 else None

    # --- approvals and the queue ---------------------------------------------------------
    # Approve / Reject (on the approval message, by approvers), Withdraw (on the
    # requester's "waiting" message), Queue and Run anyway (on the requester's at-limit
    # question) and Leave (on their queued message): each is one engine call; a click that
    # changes nothing says why to the clicker alone.

    def over_limit(self, job_name: str, user_id: str) -> str | None:
        return self.engine.over_limit(job_name, user_id)

    def approve_clicked(self, click: Click) -> None:
        self._tell_clicker(click, self.engine.approve(click, self.groups))

    def reject_clicked(self, click: Click) -> None:
        self._tell_clicker(click, self.engine.reject(click, self.groups))

    def _tell_clicker(self, click: Click, answer: Answer) -> None:
        """A click on a message answers through its response_url; one on the App Home has
        none, so what the clicker is told comes as a direct message."""
        if click.response_url:
            self.tell(click.response_url, answer)
            return
        reply = render(answer)
        if reply is not None and click.user_id:
            self.engine.notifier.direct(click.user_id, {"text": reply["text"]})
        if self.home is not None:  # their Home shows the outcome now, if its turn allows
            self.home.opened(click.user_id, click.team_id)

    def withdraw_clicked(self, click: Click) -> None:
        self.tell(click.response_url, self.engine.withdraw(click))

    def queue_clicked(self, click: Click) -> None:
        self.tell(click.response_url, self.engine.queue(click))

    def run_anyway_clicked(self, click: Click) -> None:
        self.tell(click.response_url, self.engine.run_anyway(click))

    def leave_clicked(self, click: Click) -> None:
        self.tell(click.response_url, self.engine.leave_queue(click))



def _request(answer: Answer) -> Request:
    assert answer.request is not None
    return answer.request


def _requester(answer: Answer) -> str:
    return answer.request.user_id if answer.request is not None else ""


_REPLIES: dict[Told, Callable[[Answer], dict[str, Any]]] = {
    Told.MISSING: lambda a: msg.missing(),
    Told.NOT_YOURS: lambda a: msg.not_yours(_request(a).user_id),
    Told.ALREADY: lambda a: msg.already(a.reason),
    Told.EXPIRED: lambda a: msg.expired(_request(a).job_name, _request(a).command,
                                        minutes=CONFIRM_MINUTES),
    Told.OVER_LIMIT: lambda a: msg.problems_message([a.detail], replace=False),
    Told.CANCELLED: lambda a: msg.cancelled(_request(a).job_name),
    Told.APPROVAL_REFUSED: lambda a: msg.approval_refused(a.reason, requester=_requester(a)),
    Told.APPROVAL_NOTED: lambda a: msg.approval_noted(_request(a).job_name, given=a.given,
                                                      needed=a.needed),
    Told.WITHDRAWN: lambda a: msg.approval_ended(_request(a).job_name, "withdrawn"),
    Told.QUEUE_REFUSED: lambda a: msg.queue_refused(a.reason, requester=_requester(a)),
    Told.LEFT: lambda a: msg.queue_ended(_request(a).job_name, "left"),
    # to whoever clicked (an approver: their own note, the approval message stays)
    Told.REFUSED_NOW: lambda a: msg.refused_now(_request(a).job_name, a.problems,
                                                replace=False),
    Told.NO_FORM: lambda a: msg.ephemeral(
        "A raw build task ID has no form: type the command with its parameters instead.",
        replace=False),
    Told.REPLACED: lambda a: msg.ephemeral(
        f"Edited: this question for {msg.code(_request(a).job_name, 200)} was replaced by "
        "the one below.", replace=True),
}


def render(answer: Answer) -> dict[str, Any] | None:
    """The reply a click's answer gives the clicker; None when it says nothing."""
    make = _REPLIES.get(answer.told)
    return None if make is None else make(answer)
