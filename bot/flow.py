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
from dataclasses import dataclass, replace
from typing import Any

from slack_sdk import WebClient
from sqlalchemy.exc import SQLAlchemyError

from bot import forms
from bot import messages as msg
from bot.codearts import CodeArtsError
from bot.command import BuildCommand, Help, ParseError, parse
from bot.config import BuildbotConfig, JobConfig
from bot.engine import Engine
from bot.lifecycle import CONFIRM_MINUTES, Build, Request, RequestState, new_error_id
from bot.lifecycle import approval_refusal, next_allowed
from bot.policy import (
    Approved,
    Denied,
    UserGroups,
    approval_rule,
    decide,
    over_limit_problem,
    per_user_limit,
    runnable_jobs,
)
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
    fields: list[tuple[str | None, str]] | None = None  # a denial's problems by field (form)


@dataclass
class Who:
    user_id: str
    channel_id: str
    team_id: str | None
    response_url: str | None
    text: str
    received_at: float | None = None  # monotonic, when the command reached the bot
    trigger_id: str | None = None  # lets the bot open a modal (the form) for 3 s


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
        if not who.text.strip() and who.user_id and who.channel_id:  # /build alone: the form
            ack()
            self.at_once(self.open_form, who, None)
            return
        cached = CachedOnly(self.groups)
        outcome = self.evaluate(who, cached)
        if cached.missed:  # a user group is not cached: decide after the ack
            ack()
            self.submit(self._command_later, who, reply_to=who.response_url)
            return
        form_job = self.form_instead(who, outcome)
        if form_job is not None:  # /build <job> whose required parameter has no default
            ack()
            self.at_once(self.open_form, who, form_job, outcome)
            return
        if outcome.reply is not None:
            ack(outcome.reply)
        else:
            ack()
        self.submit(self.after_command, who, outcome, reply_to=who.response_url)

    def _command_later(self, who: Who) -> None:
        outcome = self.evaluate(who, self.groups)
        form_job = self.form_instead(who, outcome)
        if form_job is not None:
            self.open_form(who, form_job, outcome)
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
                           detail=" ".join(decision.problems), fields=decision.on_fields())
        over = self.over_limit(decision.job_name, who.user_id)
        if over is not None:
            return Outcome(msg.problems_message([over]), "over_limit", job=decision.job_name,
                           detail=over)
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
        now = self.clock()
        claim = self.store.claim_request(id=click.value, user_id=click.user_id, now=now,
                                         **self.run_claim(click, now))
        if claim.ok:
            assert claim.request is not None
            if claim.request.state is RequestState.AWAITING:  # a second person approves
                self.engine.ask_approval(claim.request, claim.request.response_url)
                return
            self.engine.start(claim.request, click.response_url or claim.request.response_url)
            return
        log.info("run click refused request=%s user=%s reason=%s", click.value, click.user_id,
                 claim.reason)
        request = claim.request
        if claim.reason in (RequestState.SENDING, RequestState.STARTED, RequestState.AWAITING):
            return  # the first click is handling it and will replace the message
        if claim.reason == "missing" or request is None:
            reply = msg.missing()
        elif claim.reason == "not_yours":
            reply = msg.not_yours(request.user_id)
            self.store.audit(decision="refused_click", now=self.clock(), request_id=request.id,
                             user_id=click.user_id, channel_id=request.channel_id,
                             job=request.job_name, detail=f"Run on {request.user_id}'s request")
        elif claim.reason == "over_limit":
            reply = self.over_limit_reply(request)
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

    # --- approvals ----------------------------------------------------------------
    # Approve / Reject (on the approval message, by approvers) and Withdraw (on the
    # requester's "waiting" message). Each decision is one claim in the store; a click
    # that changes nothing says why to the clicker alone.

    def over_limit(self, job_name: str, user_id: str) -> str | None:
        """The refusal when this user has started as many builds of the job this hour as
        the job (or the file) allows; None when they may start one (always for admins)."""
        limit = per_user_limit(self.config, job_name, user_id)
        if limit is None:
            return None
        now = self.clock()
        starts = self.store.recent_starts(user_id=user_id, job_name=job_name, now=now)
        next_at = next_allowed(starts, limit=limit, now=now)
        return None if next_at is None else over_limit_problem(job_name, limit, next_at, now)

    def over_limit_reply(self, request: Request) -> dict[str, Any]:
        problem = (self.over_limit(request.job_name, request.user_id)
                   or f"You have reached the hourly limit of builds of `{request.job_name}`.")
        self.store.audit(decision="over_limit", now=self.clock(), request_id=request.id,
                         user_id=request.user_id, channel_id=request.channel_id,
                         job=request.job_name, detail=problem)
        return msg.problems_message([problem], replace=False)

    def run_claim(self, click: Click, now: float) -> dict[str, Any]:
        """How a Run click claims its request: under the per-user limit, and for a job
        that needs approval, into awaiting (open for the job's approval_ttl)."""
        request = self.store.get_request(click.value)
        if request is None or request.user_id != click.user_id:
            return {}  # the claim says why
        how: dict[str, Any] = {}
        limit = per_user_limit(self.config, request.job_name, click.user_id)
        if limit is not None:
            how["limit"] = (request.job_name, limit)
        rule = approval_rule(self.config, request.job_name)
        if rule is not None:
            how["to"] = RequestState.AWAITING
            how["values"] = {"expires_at": now + rule.ttl, "approvals_needed": rule.needed,
                             "response_url": click.response_url or request.response_url}
        return how

    def _approver_refusal(self, request: Request, user_id: str) -> str | None:
        rule = approval_rule(self.config, request.job_name)
        if rule is None:
            return "not_approver"
        return approval_refusal(rule, requester=request.user_id, user=user_id,
                                members=self.groups.members)

    def _refuse_approval_click(self, click: Click, request: Request | None, reason: str,
                               what: str) -> None:
        log.info("%s click refused request=%s user=%s reason=%s", what, click.value,
                 click.user_id, reason)
        if request is not None and reason in ("self", "not_approver", "not_requester"):
            self.store.audit(decision="refused_click", now=self.clock(), request_id=request.id,
                             user_id=click.user_id, channel_id=request.channel_id,
                             job=request.job_name,
                             detail=f"{what} on {request.user_id}'s request: {reason}")
        self.respond(click.response_url, msg.approval_refused(
            reason, requester=request.user_id if request else ""))

    def _not_awaiting(self, request_id: str) -> str:
        """Why a request can no longer be decided; one past its time is expired here (and
        told, once) if the sweep has not done it yet."""
        current = self.store.get_request(request_id)
        if current is None:
            return "missing"
        if current.state is RequestState.AWAITING and current.expires_at <= self.clock():
            if self.store.move_request(id=current.id, old=RequestState.AWAITING,
                                       new=RequestState.EXPIRED, now=self.clock()):
                self.engine.approval_expired(current)
            return "expired"
        return current.state.value

    def approve_clicked(self, click: Click) -> None:
        request = self.store.get_request(click.value)
        if request is None:
            self._refuse_approval_click(click, None, "missing", "Approve")
            return
        refusal = self._approver_refusal(request, click.user_id)
        if refusal is not None:
            self._refuse_approval_click(click, request, refusal, "Approve")
            return
        now = self.clock()
        result = self.store.record_approval(id=request.id, approver=click.user_id, now=now)
        current = result.request or request
        if result.outcome in ("start", "recorded"):
            given, needed = len(current.approved_by), current.approvals_needed or 1
            self.store.audit(decision="approved" if result.outcome == "start" else "approval",
                             now=now, request_id=request.id, user_id=click.user_id,
                             channel_id=request.channel_id, job=request.job_name,
                             detail=f"approval {given} of {needed} of {request.user_id}'s "
                                    f"request; approved by {' '.join(current.approved_by)}")
            if result.outcome == "start":
                self.engine.start_approved(current)
            else:
                self.engine.approval_progress(current)
                self.respond(click.response_url,
                             msg.approval_noted(request.job_name, given=given, needed=needed))
            return
        if result.outcome == "expires_now":
            self.engine.approval_expired(current)
            result = replace(result, outcome="expired")
        self._refuse_approval_click(click, current, result.outcome, "Approve")

    def reject_clicked(self, click: Click) -> None:
        request = self.store.get_request(click.value)
        if request is None:
            self._refuse_approval_click(click, None, "missing", "Reject")
            return
        refusal = self._approver_refusal(request, click.user_id)
        if refusal is not None:
            self._refuse_approval_click(click, request, refusal, "Reject")
            return
        now = self.clock()
        if not self.store.end_awaiting(id=request.id, new=RequestState.REJECTED, now=now):
            self._refuse_approval_click(click, request, self._not_awaiting(request.id),
                                        "Reject")
            return
        self.store.audit(decision="rejected", now=now, request_id=request.id,
                         user_id=click.user_id, channel_id=request.channel_id,
                         job=request.job_name, detail=f"rejected {request.user_id}'s request")
        self.engine.approval_rejected(request, click.user_id)

    def withdraw_clicked(self, click: Click) -> None:
        request = self.store.get_request(click.value)
        if request is None:
            self._refuse_approval_click(click, None, "missing", "Withdraw")
            return
        if click.user_id != request.user_id:
            self._refuse_approval_click(click, request, "not_requester", "Withdraw")
            return
        now = self.clock()
        if not self.store.end_awaiting(id=request.id, new=RequestState.WITHDRAWN, now=now,
                                       requester=click.user_id):
            self._refuse_approval_click(click, request, self._not_awaiting(request.id),
                                        "Withdraw")
            return
        self.store.audit(decision="withdrawn", now=now, request_id=request.id,
                         user_id=click.user_id, channel_id=request.channel_id,
                         job=request.job_name)
        self.engine.approval_withdrawn(request)
        self.respond(click.response_url, msg.approval_ended(request.job_name, "withdrawn"))

    # --- the form ---------------------------------------------------------------------
    # /build alone, /build <job> missing a required value, help's Open the form buttons
    # and the confirmation's Edit parameters open a modal (bot.forms); a submitted form is
    # checked by ``_check`` like typed text and goes on through ``after_command``.

    form_key: bytes | None = None  # signs the form's metadata; create_app sets it

    def _form_key(self) -> bytes:
        if self.form_key is None:  # no signing secret (Socket Mode): the bot token's
            self.form_key = forms.form_key(getattr(self.slack, "token", None) or "buildbot")
        return self.form_key

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

    def form_instead(self, who: Who, outcome: Outcome) -> JobConfig | None:
        """The job, when ``/build <job>`` was typed alone and was refused only because a
        required parameter has no value (no default): the form asks for it."""
        if outcome.decision != "denied" or not outcome.fields or not who.trigger_id:
            return None
        parsed = parse(who.text)
        if not isinstance(parsed, BuildCommand) or parsed.params or parsed.commit is not None \
                or parsed.tag is not None:
            return None
        job = self.config.jobs.get(outcome.job or "") or next(
            (j for j in self.config.jobs.values()
             if j.name.casefold() == (outcome.job or "").casefold()), None)
        if job is None or any(field not in job.params for field, _ in outcome.fields):
            return None
        needs = {n for n, spec in job.params.items() if spec.required and not spec.default}
        return job if needs else None

    def open_form(self, who: Who, job: JobConfig | None, refused: Outcome | None = None, *,
                  prefill: BuildCommand | None = None, editing: str | None = None) -> None:
        """Open the form for ``who`` (its channel, its trigger_id). If Slack will not open
        it, the user is told what typing would have told (``refused``), or how to type."""
        jobs = runnable_jobs(self.config, user_id=who.user_id, channel_id=who.channel_id,
                             usergroups=self.groups)
        metadata = forms.seal(self._form_key(), {
            "u": who.user_id, "c": who.channel_id, "t": who.team_id or "",
            "r": who.response_url or "", "e": editing or "", "j": job.name if job else ""})
        view = forms.form_view([(j.name, j.description) for j in jobs], job,
                               metadata=metadata, prefill=prefill)
        opened = self.engine.notifier.open_view(who.trigger_id or "", view)
        if opened.ok:
            return
        log.warning("could not open the form user=%s error=%s", who.user_id, opened.error)
        if refused is not None:
            self.respond(who.response_url, refused.reply or msg.problems_message(
                [refused.detail or "The form could not be opened."]))
            self.after_command(who, refused)
            return
        self.respond(who.response_url, msg.ephemeral(
            "buildbot could not open the form (Slack said "
            f"{msg.code(opened.error or 'nothing', 60)}). Type the command instead: "
            "`/build <job> name=value ...` (`/build help` shows how).", replace=False))

    def on_form_click(self, ack: Ack, body: dict[str, Any],
                      handler: Callable[[Click, str], None]) -> None:
        """Edit parameters or Open the form: ack, then open the form at once."""
        ack()
        self.at_once(handler, _click(body), _str(body.get("trigger_id")))

    def edit_clicked(self, click: Click, trigger_id: str) -> None:
        """The confirmation's Edit parameters: the form for its job, showing its values."""
        request = self.store.get_request(click.value)
        if request is None:
            self.respond(click.response_url, msg.missing())
            return
        if request.user_id != click.user_id:
            self.respond(click.response_url, msg.not_yours(request.user_id))
            return
        if request.state is not RequestState.PENDING:
            self.respond(click.response_url, msg.already(request.state.value))
            return
        job = self.config.jobs.get(request.job_name)
        if job is None:  # an admin's raw build task ID has no declared parameters
            self.respond(click.response_url, msg.ephemeral(
                "A raw build task ID has no form: type the command with its parameters "
                "instead.", replace=False))
            return
        who = Who(click.user_id, request.channel_id, click.team_id, click.response_url,
                  request.command, trigger_id=trigger_id)
        self.open_form(who, job, prefill=forms.prefill_from_body(job.name, request.body),
                       editing=request.id)

    def open_form_clicked(self, click: Click, trigger_id: str, channel_id: str,
                          job_name: str) -> None:
        """Help's Open the form: the form, with the job picked if it may be run here."""
        who = Who(click.user_id, channel_id, click.team_id, click.response_url, "",
                  trigger_id=trigger_id)
        jobs = runnable_jobs(self.config, user_id=who.user_id, channel_id=channel_id,
                             usergroups=self.groups)
        self.open_form(who, next((j for j in jobs if j.name == job_name), None))

    def on_form_job(self, ack: Ack, body: dict[str, Any]) -> None:
        """A job picked in the form: ack, then show its fields (``views.update``)."""
        ack()
        self.at_once(self.show_job, body)

    def _form_who(self, body: dict[str, Any]) -> tuple[Who, dict[str, str]] | None:
        """Who submitted (Slack's ``user.id``) and where the form was opened (the signed
        metadata); None if the metadata is not ours or names someone else."""
        user_id = _str(_dict(body.get("user")).get("id"))
        meta = forms.unseal(self._form_key(), _dict(body.get("view")).get("private_metadata"))
        if meta is None or not user_id or meta.get("u") != user_id or not meta.get("c"):
            log.warning("form refused: metadata not ours or not this user's user=%s", user_id)
            return None
        team = _str(_dict(body.get("team")).get("id")) or meta.get("t") or None
        return Who(user_id, meta["c"], team, meta.get("r") or None, ""), meta

    def show_job(self, body: dict[str, Any]) -> None:
        view = _dict(body.get("view"))
        found = self._form_who(body)
        if found is None:
            return
        who, meta = found
        actions = body.get("actions")
        picked = _dict(_dict(actions[0] if isinstance(actions, list) and actions else {}
                             ).get("selected_option")).get("value")
        jobs = runnable_jobs(self.config, user_id=who.user_id, channel_id=who.channel_id,
                             usergroups=self.groups)
        job = next((j for j in jobs if j.name == picked), None)
        metadata = forms.seal(self._form_key(), {**meta, "j": job.name if job else ""})
        updated = self.engine.notifier.update_view(
            _str(view.get("id")), forms.form_view([(j.name, j.description) for j in jobs], job,
                                                  metadata=metadata),
            view_hash=_str(view.get("hash")) or None)
        if not updated.ok:  # a newer pick updated it first (hash_conflict), or it closed
            log.info("form not updated user=%s error=%s", who.user_id, updated.error)

    def on_form_submit(self, ack: Ack, body: dict[str, Any]) -> None:
        """A submitted form: checked here, before the ack, so each problem can come back on
        its field; a valid one closes the form and goes on as a typed command would."""
        found = self._form_who(body)
        if found is None:
            ack(response_action="update", view=forms.notice_view(
                "Form not accepted", ["This form could not be read back. Type /build again "
                                      "to open a new one."]))
            return
        who, meta = found
        who.received_at = time.monotonic()
        state = _dict(_dict(_dict(body.get("view")).get("state")).get("values"))
        name = forms.picked_job(state)
        job = self.config.jobs.get(name or "")
        if job is None:
            ack(response_action="errors", errors={forms.JOB_BLOCK: "Pick a job from the list."})
            return
        if job.name != meta.get("j"):
            ack(response_action="errors", errors={
                forms.JOB_BLOCK: "Wait until this job's fields appear, then submit again."})
            return
        entered = forms.read_form(state, job)
        assert entered.command is not None
        who.text = forms.command_text(entered.command)
        outcome = self._check(entered.command, who, self.groups)
        errors = dict(entered.problems)
        general: list[str] = []
        for field, problem in outcome.fields or []:
            block = forms.block_for(field, job)
            if block is None:
                general.append(problem)
            else:
                errors[block] = f"{errors[block]} {problem}" if block in errors else problem
        if outcome.approved is None and not outcome.fields:  # refused as a whole
            general.append(outcome.detail or "Nothing was started.")
        if general:  # not allowed (any more) here: the same words as a typed command
            ack(response_action="update", view=forms.notice_view("Not started", general))
            self.submit(self.after_command, who, outcome)
            return
        if errors or outcome.approved is None:
            ack(response_action="errors", errors={
                b: msg.shorten(p, 1000) for b, p in errors.items()})
            if outcome.approved is None:
                self.submit(self.after_command, who, outcome)
            return
        ack(response_action="clear")
        self.submit(self._form_approved, who, outcome, meta.get("e") or None,
                    reply_to=who.response_url)

    def _form_approved(self, who: Who, outcome: Outcome, editing: str | None) -> None:
        """An edited request's old question dies first (the store's conditional move, so
        its Run can never start a build), then the new one is asked like a typed one."""
        if editing:
            old = self.store.get_request(editing)
            if old is not None and old.user_id == who.user_id and self.store.move_request(
                    id=old.id, old=RequestState.PENDING, new=RequestState.CANCELLED,
                    now=self.clock()):
                self.store.audit(decision="cancelled", now=self.clock(), request_id=old.id,
                                 user_id=old.user_id, channel_id=old.channel_id,
                                 job=old.job_name, detail="replaced by an edited request")
                self.respond(who.response_url, msg.ephemeral(
                    f"Edited: this question for {msg.code(old.job_name, 200)} was replaced "
                    "by the one below.", replace=True))
        self.after_command(who, outcome)


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
               text=_str(payload.get("text")), trigger_id=_str(payload.get("trigger_id")) or None)


def _click(body: dict[str, Any]) -> Click:
    actions = body.get("actions")
    action = _dict(actions[0]) if isinstance(actions, list) and actions else {}
    return Click(value=_str(action.get("value"))[:64],
                 user_id=_str(_dict(body.get("user")).get("id")),
                 team_id=_str(_dict(body.get("team")).get("id")) or None,
                 response_url=_str(body.get("response_url")) or None)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
