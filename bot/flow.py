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
from typing import Any

from slack_sdk import WebClient
from sqlalchemy.exc import SQLAlchemyError

from bot import messages as msg
from bot.answers import Answer, Click, Told
from bot.codearts.errors import CodeArtsError, describe, request_id_of
from bot.command import (
    BuildCommand,
    Help,
    ParseError,
    StatusCommand,
    StopCommand,
    SubsCommand,
    SubscribeCommand,
    SubscriptionsCommand,
    UnsubscribeCommand,
    parse,
)
from bot.config import BuildbotConfig, JobConfig
from bot.engine import Engine
from bot.flow_form import FormFlow
from bot.flow_types import Ack, Outcome, Who, read_click, read_who
from bot.lifecycle import CONFIRM_MINUTES, Build, Request, new_error_id
from bot.policy import (
    Approved,
    Denied,
    UserGroups,
    decide,
    runnable_jobs,
)
from bot.rules import JOB_ID_RE
from bot.status import (
    STATUS_THREADS,
    read_stop_value,
    stop_value,
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
        self.form = FormFlow(self)

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
        return self.check(parsed, who, groups)

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
        if outcome.look is not None:  # /build status or stop, allowed: read CodeArts
            self.look(who, outcome)
            return
        if outcome.subs is not None:  # /build subscribe, unsubscribe, subscriptions
            self.subscriptions_command(who, outcome)
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

    # --- Stop / Rebuild (buttons on the build's messages) ---------------------

    def _recheck(self, click: Click) -> tuple[Build, Request, Outcome] | None:
        """The original request, run through the checks again for whoever clicked."""
        build = self.engine.get_build(click.value)
        request = self.engine.get_request(click.value)
        if build is None or request is None:
            self.respond(click.response_url, {**msg.missing(), "replace_original": False})
            return None
        who = Who(click.user_id, build.channel_id, click.team_id, click.response_url,
                  request.command)
        return build, request, self.evaluate(who, self.groups)

    def stop_clicked(self, click: Click) -> None:
        """Whoever may run the job in the build's channel may stop it: the permission
        checks of a run, without its parameters or the hourly limit (as /build stop)."""
        build = self.engine.get_build(click.value)
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
                rows = self.engine.recent_builds(job_id)
            except CodeArtsError as exc:
                log.warning("status of job=%s not read: %s", job_name, type(exc).__name__)
                self.respond(who.response_url, msg.status_failed(
                    job_name, describe(exc).why, request_id=request_id_of(exc)))
                return
            self.respond(who.response_url, msg.job_status(job_name, rows))
            return
        assert isinstance(command, StopCommand)
        self.respond(who.response_url, self._stop_question(job_name, job_id, command.build_no))

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

    def _stop_question(self, job_name: str, job_id: str, build_no: str) -> dict[str, Any]:
        """Stop / Keep running for a running build; else why there is nothing to stop."""
        standing, ours = self.engine.standing(job_id, build_no)
        daily = ours.daily_build_number if ours else ""
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
        standing, ours = self.engine.standing(job_id, build_no)
        daily = ours.daily_build_number if ours else ""
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
                        for s in self.engine.subscriptions(who.channel_id)):
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
        if isinstance(command, SubscriptionsCommand):
            found = self.engine.subscriptions(who.channel_id)
            self.respond(who.response_url, msg.subscriptions_list(
                [(s.job_name, s.filter, s.created_by, s.created_at) for s in found]))
            return
        assert outcome.target is not None
        job_name, job_id = outcome.target
        if isinstance(command, UnsubscribeCommand):
            existed = self.engine.unsubscribe(channel_id=who.channel_id, job_name=job_name,
                                              user_id=who.user_id)
            self.respond(who.response_url,
                         msg.unsubscribed(job_name, user_id=who.user_id, existed=existed))
            return
        assert isinstance(command, SubscribeCommand)
        before = self.engine.subscribe(channel_id=who.channel_id, job_name=job_name,
                                       job_id=job_id, filter=command.filter,
                                       user_id=who.user_id)
        self.respond(who.response_url, msg.subscribed(job_name, command.filter,
                                                      user_id=who.user_id, previous=before))

    # --- approvals and the queue ---------------------------------------------------------
    # Approve / Reject (on the approval message, by approvers), Withdraw (on the
    # requester's "waiting" message), Queue and Run anyway (on the requester's at-limit
    # question) and Leave (on their queued message): each is one engine call; a click that
    # changes nothing says why to the clicker alone.

    def over_limit(self, job_name: str, user_id: str) -> str | None:
        return self.engine.over_limit(job_name, user_id)

    def approve_clicked(self, click: Click) -> None:
        self.tell(click.response_url, self.engine.approve(click, self.groups))

    def reject_clicked(self, click: Click) -> None:
        self.tell(click.response_url, self.engine.reject(click, self.groups))

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
