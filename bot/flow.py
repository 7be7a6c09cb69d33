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
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from slack_sdk import WebClient
from sqlalchemy.exc import SQLAlchemyError

from bot import forms
from bot import messages as msg
from bot.codearts import CodeArtsError, request_id_of
from bot.command import BuildCommand, Help, ParseError, StatusCommand, StopCommand, parse
from bot.command import (  # subscriptions
    SubscribeCommand,
    SubscriptionsCommand,
    SubsCommand,
    UnsubscribeCommand,
)
from bot.config import BuildbotConfig, JobConfig
from bot.engine import Engine
from bot.lifecycle import (
    CONFIRM_MINUTES,
    ApprovalOutcome,
    Build,
    ClaimReason,
    Request,
    RequestState,
    new_error_id,
)
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
from bot.rules import JOB_ID_RE
from bot.status import (
    STATUS_THREADS,
    build_standing,
    last_results,
    read_stop_value,
    recent_builds,
    stop_value,
    why_not,
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
    look: StatusCommand | StopCommand | None = None  # allowed /build status or stop
    target: tuple[str, str] | None = None  # its job (name, build task ID)
    subs: SubsCommand | None = None  # an allowed /build subscribe, unsubscribe, subscriptions


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
        if isinstance(parsed, StatusCommand | StopCommand):
            return self._look_check(parsed, who, groups)
        if isinstance(parsed, SubscribeCommand | UnsubscribeCommand | SubscriptionsCommand):
            return self._subs_check(parsed, who, groups)
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
        if outcome.look is not None:  # /build status or stop, allowed: read CodeArts
            self.look(who, outcome)
            return
        if outcome.subs is not None:  # /build subscribe, unsubscribe, subscriptions
            self.subscriptions_command(who, outcome)
            return
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
        how = self.run_claim(click, now)
        claim = self.store.claim_request(id=click.value, user_id=click.user_id, now=now, **how)
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
        if claim.reason is ClaimReason.FULL and request is not None:  # at max_running: offer Queue
            self.engine.ask_full(request, click.response_url or request.response_url,
                                 slots=how.get("slots"))
            return
        if claim.reason in (RequestState.SENDING, RequestState.STARTED, RequestState.AWAITING):
            return  # the first click is handling it and will replace the message
        if claim.reason is ClaimReason.MISSING or request is None:
            reply = msg.missing()
        elif claim.reason is ClaimReason.NOT_YOURS:
            reply = msg.not_yours(request.user_id)
            self.store.audit(decision="refused_click", now=self.clock(), request_id=request.id,
                             user_id=click.user_id, channel_id=request.channel_id,
                             job=request.job_name, detail=f"Run on {request.user_id}'s request")
        elif claim.reason is ClaimReason.OVER_LIMIT:
            reply = self.over_limit_reply(request)
        elif claim.reason is ClaimReason.EXPIRES_NOW:
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
        """Whoever may run the job in the build's channel may stop it: the permission
        checks of a run, without its parameters or the hourly limit (as /build stop)."""
        build = self.store.get_build(click.value)
        if build is None:
            self.respond(click.response_url, {**msg.missing(), "replace_original": False})
            return
        allowed = self.may_run(build.job_name, click.user_id, build.channel_id, self.groups)
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

    # --- status and stop (any build of a job, /build status and /build stop) -------------
    # Who may look at a job's builds or stop one: whoever may run the job here (the checks
    # of a run, without its parameters or the hourly limit). Answers go to the typist
    # alone; /build stop asks Stop / Keep running first.

    _status_pool: ThreadPoolExecutor | None = None  # made on first use (_pool)
    _status_lock = threading.Lock()  # guards making and closing it

    def may_run(self, job: str, user_id: str, channel_id: str,
                groups: UserGroups) -> tuple[str, str] | list[str]:
        """(job name, build task ID) when this user may run ``job`` in this channel, else
        why not. The permission checks of a run (``decide``): a refusal that is only about
        parameters (a required one without a default) still means the job may be run."""
        decision = decide(self.config, BuildCommand(job), user_id=user_id,
                          channel_id=channel_id, usergroups=groups)
        if isinstance(decision, Approved):
            return decision.job_name, decision.job_id
        named = self._job_named(job)
        if named is not None and any(f is not None for f in decision.fields):
            return named.name, named.id
        return list(decision.problems)

    def _job_named(self, name: str) -> JobConfig | None:
        exact = self.config.jobs.get(name)
        if exact is not None:
            return exact
        folded = [j for j in self.config.jobs.values() if j.name.casefold() == name.casefold()]
        return folded[0] if len(folded) == 1 else None

    def _look_check(self, command: StatusCommand | StopCommand, who: Who,
                    groups: UserGroups) -> Outcome:
        if command.job is None:  # /build status: only the jobs this user may run here
            return Outcome(None, "status", look=command)
        allowed = self.may_run(command.job, who.user_id, who.channel_id, groups)
        if isinstance(allowed, list):
            if self._job_named(command.job) is None and not JOB_ID_RE.fullmatch(command.job):
                reply = msg.problems_message(allowed)  # no such job: like a typing mistake
            elif isinstance(command, StopCommand):
                reply = msg.stop_refused(allowed)
            else:
                reply = msg.status_refused(allowed)
            return Outcome(reply, "denied", job=command.job, detail=" ".join(allowed))
        return Outcome(None, "status" if isinstance(command, StatusCommand) else "stop",
                       job=allowed[0], look=command, target=allowed)

    def look(self, who: Who, outcome: Outcome) -> None:
        """After the ack: read CodeArts and answer ``/build status`` or ask Stop/Keep."""
        command = outcome.look
        if isinstance(command, StatusCommand) and command.job is None:
            self._all_status(who)
            return
        assert outcome.target is not None
        job_name, job_id = outcome.target
        if isinstance(command, StatusCommand):
            try:
                rows = recent_builds(self.api, self.store, job_id, now=self.clock())
            except CodeArtsError as exc:
                log.warning("status of job=%s not read: %s", job_name, type(exc).__name__)
                self.respond(who.response_url, msg.status_failed(
                    job_name, why_not(exc), request_id=request_id_of(exc)))
                return
            self.respond(who.response_url, msg.job_status(job_name, rows))
            return
        assert isinstance(command, StopCommand)
        self.respond(who.response_url, self._stop_question(job_name, job_id, command.build_no))

    def _all_status(self, who: Who) -> None:
        jobs = runnable_jobs(self.config, user_id=who.user_id, channel_id=who.channel_id,
                             usergroups=self.groups)
        shown = jobs[:msg.HELP_PAGE_JOBS]
        results = last_results(self.api, self.store, [(j.name, j.id) for j in shown],
                               pool=self._pool(), now=self.clock())
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

    def _stop_question(self, job_name: str, job_id: str, build_no: str) -> dict[str, Any]:
        """Stop / Keep running for a running build; else why there is nothing to stop."""
        standing = build_standing(self.api, job_id, build_no)
        ours = self.store.builds_by_number(job_id=job_id, build_nos=[build_no]).get(build_no)
        daily = ours.daily_build_number if ours else ""
        if standing.kind == "missing":
            return msg.stop_no_such_build(job_name, build_no)
        if standing.kind == "ended":
            return msg.stop_not_running(job_name, daily, build_no, standing.result)
        if standing.kind == "unknown":
            assert standing.error is not None
            return msg.status_failed(job_name, why_not(standing.error),
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
        names = [j.name for j in self.config.jobs.values() if j.id == job_id] + [job_id]
        problems: list[str] = []
        allowed: tuple[str, str] | None = None
        for name in names:
            found = self.may_run(name, click.user_id, channel_id, self.groups)
            if isinstance(found, tuple):
                allowed = found
                break
            problems = problems or found
        if allowed is None:
            self.respond(click.response_url, msg.stop_refused(problems))
            return
        job_name = allowed[0]
        ours = self.store.builds_by_number(job_id=job_id, build_nos=[build_no]).get(build_no)
        daily = ours.daily_build_number if ours else ""
        standing = build_standing(self.api, job_id, build_no)
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
        try:
            self.api.stop_build(job_id, build_no)
        except CodeArtsError as exc:
            self.respond(response_url, msg.stop_failed(
                job_name, daily, build_no,
                status=getattr(exc, "status", None), error_code=getattr(exc, "error_code", None),
                error_msg=(getattr(exc, "error_msg", None) or getattr(exc, "reason", None)
                           or getattr(exc, "snippet", None) or str(exc)),
                request_id=request_id_of(exc)))
            return False
        self.store.audit(decision="stop", now=self.clock(),
                         request_id=build.id if build is not None else None,
                         user_id=user_id, channel_id=channel_id, job=job_name,
                         build_no=build_no, daily_build_number=daily)
        if build is not None:
            self.engine.thread_note(build, msg.stop_requested(user_id, job_name, daily,
                                                              build_no))
        return True

    # --- subscriptions (builds started outside Slack, announced in the channel) ---------
    # Who may subscribe a channel to a job, or end it: whoever may run the job there (the
    # checks of a run, as for /build status), admins included by those checks.

    def _subs_check(self, command: SubsCommand, who: Who, groups: UserGroups) -> Outcome:
        if isinstance(command, SubscriptionsCommand):
            return Outcome(None, "subscriptions", subs=command)
        allowed = self.may_run(command.job, who.user_id, who.channel_id, groups)
        kind = "subscribe" if isinstance(command, SubscribeCommand) else "unsubscribe"
        if isinstance(allowed, list):
            if isinstance(command, UnsubscribeCommand) and self._job_named(command.job) is None \
                    and not JOB_ID_RE.fullmatch(command.job) and any(
                        s.job_name == command.job
                        for s in self.store.subscriptions_of(channel_id=who.channel_id)):
                # a job gone from the file: its subscription here can still be ended
                return Outcome(None, kind, job=command.job, subs=command,
                               target=(command.job, ""))
            if self._job_named(command.job) is None and not JOB_ID_RE.fullmatch(command.job):
                reply = msg.problems_message(allowed)  # no such job: like a typing mistake
            else:
                reply = msg.subscribe_refused(allowed)
            return Outcome(reply, "denied", job=command.job, detail=" ".join(allowed))
        return Outcome(None, kind, job=allowed[0], subs=command, target=allowed)

    def subscriptions_command(self, who: Who, outcome: Outcome) -> None:
        """After the ack: list, end or make the channel's subscription (audited)."""
        command = outcome.subs
        now = self.clock()
        if isinstance(command, SubscriptionsCommand):
            found = self.store.subscriptions_of(channel_id=who.channel_id)
            self.respond(who.response_url, msg.subscriptions_list(
                [(s.job_name, s.filter, s.created_by, s.created_at) for s in found]))
            return
        assert outcome.target is not None
        job_name, job_id = outcome.target
        if isinstance(command, UnsubscribeCommand):
            existed = self.store.unsubscribe(channel_id=who.channel_id, job_name=job_name)
            if existed:
                self.store.audit(decision="unsubscribe", now=now, user_id=who.user_id,
                                 channel_id=who.channel_id, job=job_name)
            self.respond(who.response_url,
                         msg.unsubscribed(job_name, user_id=who.user_id, existed=existed))
            return
        assert isinstance(command, SubscribeCommand)
        before = self.store.subscribe(channel_id=who.channel_id, job_name=job_name,
                                      job_id=job_id, filter=command.filter,
                                      user_id=who.user_id, now=now,
                                      since_no=self._newest_build_no(job_id))
        self.store.audit(decision="subscribe", now=now, user_id=who.user_id,
                         channel_id=who.channel_id, job=job_name, detail=command.filter)
        self.respond(who.response_url, msg.subscribed(job_name, command.filter,
                                                      user_id=who.user_id, previous=before))

    def _newest_build_no(self, job_id: str) -> int | None:
        """The job's newest build number now: builds up to it started before the
        subscription and are never announced. None when CodeArts cannot say (then the
        builds' start times decide)."""
        try:
            records, _total = self.api.history(job_id, offset=0, limit=1)
        except CodeArtsError as exc:
            log.warning("newest build of job=%s not read: %s", job_id, type(exc).__name__)
            return None
        numbers = [int(r.build_no) for r in records if len(r.build_no) <= 18]
        return max(numbers) if numbers else 0

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
        elif (slots := self.engine.slots(request.job_name)) is not None:
            how["slots"] = slots  # at max_running the claim says "full"
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

    def _approver_click(self, click: Click, verb: str) -> Request | None:
        """The request an Approve or Reject click is about, if the clicker may decide it;
        otherwise None, and the clicker was told why."""
        request = self.store.get_request(click.value)
        if request is None:
            self._refuse_approval_click(click, None, "missing", verb)
            return None
        refusal = self._approver_refusal(request, click.user_id)
        if refusal is not None:
            self._refuse_approval_click(click, request, refusal, verb)
            return None
        return request

    def approve_clicked(self, click: Click) -> None:
        request = self._approver_click(click, "Approve")
        if request is None:
            return
        now = self.clock()
        result = self.store.record_approval(id=request.id, approver=click.user_id, now=now,
                                            slots=self.engine.slots(request.job_name),
                                            queue_ttl=self.engine.queue_ttl(request.job_name))
        current = result.request or request
        if result.outcome is ApprovalOutcome.QUEUED:  # enough approvals, but the job is at max_running
            self.store.audit(decision="approved", now=now, request_id=request.id,
                             user_id=click.user_id, channel_id=request.channel_id,
                             job=request.job_name,
                             detail=f"approved {request.user_id}'s request; queued (the job "
                                    f"is at its max_running); approved by "
                                    f"{' '.join(current.approved_by)}")
            self.engine.approval_queued(current)
            return
        if result.outcome in (ApprovalOutcome.START, ApprovalOutcome.RECORDED):
            given, needed = len(current.approved_by), current.approvals_needed or 1
            self.store.audit(decision="approved" if result.outcome is ApprovalOutcome.START else "approval",
                             now=now, request_id=request.id, user_id=click.user_id,
                             channel_id=request.channel_id, job=request.job_name,
                             detail=f"approval {given} of {needed} of {request.user_id}'s "
                                    f"request; approved by {' '.join(current.approved_by)}")
            if result.outcome is ApprovalOutcome.START:
                self.engine.start_approved(current)
            else:
                self.engine.approval_progress(current)
                self.respond(click.response_url,
                             msg.approval_noted(request.job_name, given=given, needed=needed))
            return
        if result.outcome is ApprovalOutcome.EXPIRES_NOW:
            self.engine.approval_expired(current)
            result = replace(result, outcome=RequestState.EXPIRED)
        self._refuse_approval_click(click, current, result.outcome, "Approve")

    def reject_clicked(self, click: Click) -> None:
        request = self._approver_click(click, "Reject")
        if request is None:
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

    # --- the queue (a job at its max_running) ------------------------------------------
    # Queue and Run anyway (on the requester's at-limit question) and Leave (on their
    # queued message). Each is one claim in the store; a click that changes nothing says
    # why to the clicker alone.

    def _queue_refused(self, click: Click, request: Request | None, reason: str,
                       what: str) -> None:
        log.info("%s click refused request=%s user=%s reason=%s", what, click.value,
                 click.user_id, reason)
        if request is not None and reason in ("not_yours", "not_admin"):
            self.store.audit(decision="refused_click", now=self.clock(), request_id=request.id,
                             user_id=click.user_id, channel_id=request.channel_id,
                             job=request.job_name,
                             detail=f"{what} on {request.user_id}'s request: {reason}")
        if reason == ClaimReason.EXPIRES_NOW and request is not None:
            self.engine.metrics.commands.labels("expired").inc()
            self.store.audit(decision="expired", now=self.clock(), request_id=request.id,
                             user_id=request.user_id, channel_id=request.channel_id,
                             job=request.job_name)
            self.respond(click.response_url,
                         msg.expired(request.job_name, request.command, minutes=CONFIRM_MINUTES))
            return
        self.respond(click.response_url, msg.queue_refused(
            reason, requester=request.user_id if request else ""))

    def queue_clicked(self, click: Click) -> None:
        """Queue: pending -> queued (the requester's, while the question is open; under the
        per-user limit), then the requester's place; the queue is released at once in
        case a slot freed meanwhile."""
        request = self.store.get_request(click.value)
        if request is not None and approval_rule(self.config, request.job_name) is not None:
            self._queue_refused(click, request, "needs_approval", "Queue")  # Run asks first
            return
        now = self.clock()
        how: dict[str, Any] = {}
        if request is not None:
            limit = per_user_limit(self.config, request.job_name, click.user_id)
            if limit is not None:
                how["limit"] = (request.job_name, limit)
            how["values"] = {"queued_at": now,
                             "expires_at": now + self.engine.queue_ttl(request.job_name),
                             "response_url": click.response_url or request.response_url}
        claim = self.store.claim_request(id=click.value, user_id=click.user_id, now=now,
                                         to=RequestState.QUEUED, **how)
        if not claim.ok or claim.request is None:
            if claim.reason is ClaimReason.OVER_LIMIT and claim.request is not None:
                self.respond(click.response_url, self.over_limit_reply(claim.request))
                return
            self._queue_refused(click, claim.request, claim.reason, "Queue")
            return
        self.store.audit(decision="queued", now=now, request_id=claim.request.id,
                         user_id=click.user_id, channel_id=claim.request.channel_id,
                         job=claim.request.job_name, parameters=claim.request.body)
        self.engine.queued(claim.request, claim.request.response_url)
        self.engine.release_queue()

    def run_anyway_clicked(self, click: Click) -> None:
        """Run anyway: an admin's own request starts past the job's max_running."""
        request = self.store.get_request(click.value)
        if request is None:
            self._queue_refused(click, None, "missing", "Run anyway")
            return
        if request.user_id != click.user_id:
            self._queue_refused(click, request, "not_yours", "Run anyway")
            return
        if not self.is_admin(click.user_id):
            self._queue_refused(click, request, "not_admin", "Run anyway")
            return
        if approval_rule(self.config, request.job_name) is not None:
            self._queue_refused(click, request, "needs_approval", "Run anyway")
            return
        claim = self.store.claim_request(id=request.id, user_id=click.user_id, now=self.clock())
        if not claim.ok or claim.request is None:
            self._queue_refused(click, claim.request or request, claim.reason, "Run anyway")
            return
        self.store.audit(decision="run_anyway", now=self.clock(), request_id=request.id,
                         user_id=click.user_id, channel_id=request.channel_id,
                         job=request.job_name, detail="started past the job's max_running")
        self.engine.start(claim.request, click.response_url or claim.request.response_url)

    def leave_clicked(self, click: Click) -> None:
        """Leave: queued -> withdrawn, by the requester, while it waits."""
        request = self.store.get_request(click.value)
        if request is None:
            self._queue_refused(click, None, "missing", "Leave")
            return
        if request.user_id != click.user_id:
            self._queue_refused(click, request, "not_yours", "Leave")
            return
        now = self.clock()
        if not self.store.leave_queue(id=request.id, user_id=click.user_id, now=now):
            current = self.store.get_request(request.id)
            if current is not None and current.state is RequestState.QUEUED \
                    and current.expires_at <= now and self.store.move_request(
                        id=current.id, old=RequestState.QUEUED, new=RequestState.EXPIRED,
                        now=now):
                self.engine.queue_expired(current)
                return
            self._queue_refused(click, current, current.state.value if current else "missing",
                                "Leave")
            return
        self.store.audit(decision="left_queue", now=now, request_id=request.id,
                         user_id=click.user_id, channel_id=request.channel_id,
                         job=request.job_name)
        self.respond(click.response_url, msg.queue_ended(request.job_name, "left"))
        self.engine.update_positions(request.job_name)

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
