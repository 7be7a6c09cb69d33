"""The one door every request and build goes through.

For each event (a Run click, a run answer or error, a poll result, a Slack
refusal, a timeout) the engine loads the row, asks ``lifecycle`` what comes
next, makes that move with one conditional UPDATE in the store and performs
the effects only if it won. It knows nothing of how events arrive: the Slack
listeners (``flow``) and the ``watcher`` both call it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any

from bot import decisions
from bot import messages as msg
from bot.answers import NOTHING, Answer, Click, Told
from bot.approvals import Approvals
from bot.changes import Changes
from bot.clicks import Desk
from bot.codearts.answers import BuildState
from bot.codearts.client import CodeArtsClient
from bot.codearts.errors import CodeArtsError
from bot.config import BuildbotConfig
from bot.effects import AskApproval, OfferQueue, Queued
from bot.following import Following
from bot.lifecycle import (
    CONFIRM_MINUTES,
    CONFIRM_TTL,
    MAX_AGE,
    PROGRESS_EVERY,
    Build,
    ClaimReason,
    Lease,
    Request,
    RequestState,
    WatchState,
    decide_poll,
)
from bot.limits import Limits
from bot.notifier import Notifier
from bot.notify import NotifyMe
from bot.on_it import OnIt
from bot.outputs import BuildOutputs
from bot.policy import (
    Approved,
    StaticUserGroups,
    UserGroups,
    approval_rule,
    per_user_limit,
)
from bot.previews import BuildFacts, read_build
from bot.progress import Progress
from bot.recovery import INTENT_GRACE, Recovery
from bot.reports import Reports
from bot.settings import format_build_link
from bot.starts import Starts
from bot.status import (
    BuildRow,
    LastResult,
    Standing,
    build_standing,
    last_results,
    recent_builds,
)
from bot.store import OpenQuestion, Reschedule, Store
from bot.workflow import WorkflowSteps

log = logging.getLogger(__name__)


class Engine(Desk):
    """Requests and builds from creation to their last message."""

    def __init__(self, *, config: BuildbotConfig, store: Store, api: CodeArtsClient,
                 notifier: Notifier, poll_seconds: float = 15.0,
                 link_template: str | None = None, project_id: str | None = None,
                 max_age: float = MAX_AGE, intent_grace: float = INTENT_GRACE,
                 clock: Callable[[], float] = time.time,
                 progress_every: float = PROGRESS_EVERY, log_tail_lines: int = 30,
                 history_polls: bool = True,
                 alive: Callable[[], bool] = lambda: True,
                 groups: UserGroups | None = None) -> None:
        """``alive``: whether this process beat recently (bot.heartbeat); a process that
        did not starts no run call or post, as others may have taken its intents over.
        ``groups``: Slack user-group membership, for the checks of a run made again just
        before a stored request is sent (none given: no membership is known)."""
        self.alive = alive
        super().__init__(config=config, store=store, notifier=notifier, clock=clock)
        self.api = api
        # the features, each a collaborator: max_running and its queue, the hourly limit;
        # approval by a second person
        self.limits = Limits(config=config, store=store, notifier=notifier, clock=clock,
                             api=api, start=lambda *a: self.start(*a))
        self.approvals = Approvals(config=config, store=store, notifier=notifier, clock=clock,
                                   limits=self.limits,
                                   start=lambda *a: self.start(*a))
        # their clicks and the watcher's calls, through the engine
        self.approve = self.approvals.approve
        self.reject = self.approvals.reject
        self.withdraw = self.approvals.withdraw
        self.queue = self.limits.queue
        self.run_anyway = self.limits.run_anyway
        self.leave_queue = self.limits.leave_queue
        self.over_limit = self.limits.over_limit
        self.release_queue = self.limits.release_queue
        # live progress and the log tail
        self.tracker = Progress(config=config, store=store, notifier=notifier, clock=clock,
                                api=api, link=self.link, max_age=max_age,
                                progress_every=progress_every, log_tail_lines=log_tail_lines)
        self.progress = self.tracker.progress
        self.result_message = self.tracker.result_message
        self.poll_seconds = poll_seconds
        self.link_template = link_template
        self.project_id = project_id
        self.max_age = max_age
        self.intent_grace = intent_grace
        # lost run answers, unconfirmed announcements, what the store could not record
        self.recovery = Recovery(
            config=config, store=store, notifier=notifier, clock=clock, api=api,
            intent_grace=intent_grace, poll_seconds=poll_seconds,
            announce=lambda *a, **k: self.announce(*a, **k),
            started=lambda *a: self.starts.started(*a), ask=lambda *a: self._ask(*a))
        self.settle_stale = self.recovery.settle_stale
        self.due_settlements = self.recovery.due_settlements
        self.settle_one = self.recovery.settle_one
        self.record_unrecorded = self.recovery.record_unrecorded
        self.save_unsaved = self.recovery.save_unsaved
        self.recover_announcements = self.recovery.recover_announcements
        # subscriptions, and the per-job history read that decides a job's builds
        self.following = Following(store=store, api=api, clock=clock,
                                   poll_seconds=poll_seconds, history_polls=history_polls,
                                   announce=lambda build: self.announce(build, None))
        self.discover = self.following.discover
        self.job_history = self.following.job_history
        self.next_check = self.following.next_check
        self.is_followed = self.following.is_followed
        self.subscribe = self.following.subscribe
        self.unsubscribe = self.following.unsubscribe
        self.subscriptions = self.following.subscriptions
        # a build's result in its thread and its channel message, once
        # ``changes`` subscriptions: whether a build broke or fixed its branch
        self.changes = Changes(store=store, following=self.following, clock=clock)
        self.reports = Reports(config=config, store=store, notifier=notifier, clock=clock,
                               tracker=self.tracker, link=self.link,
                               where=self.recovery.where, max_age=max_age,
                               poll_seconds=poll_seconds, outputs=BuildOutputs(api=api),
                               flip=self.changes.flip, flip_waits=self.changes.waits)
        self.report = self.reports.report
        # Notify me: a DM to whoever asked, once, when a build's report is finished
        self.notify = NotifyMe(config=config, store=store, notifier=notifier, clock=clock,
                               link=self.link, where=self.recovery.where,
                               stale_after=intent_grace, alive=alive, max_age=max_age)
        self.notify_click = self.notify.clicked
        # I'm on it: failure replies remembered as posted; a success closes the claims
        self.on_it = OnIt(config=config, store=store, notifier=notifier, clock=clock,
                          stale_after=intent_grace)
        self.on_it_click = self.on_it.clicked
        self.reports.posted = self.on_it.remember
        self.reports.ending = self.on_it.succeeded
        self.reports.finished = self.notify.send_due
        # the run call to CodeArts, and a build's channel message
        self.starts = Starts(config=config, store=store, notifier=notifier, clock=clock,
                             api=api, recovery=self.recovery, link=self.link,
                             poll_seconds=poll_seconds, alive=alive,
                             announcer=lambda b, url: self.announce(b, url),
                             groups=groups or StaticUserGroups())
        self.start = self.starts.start
        self.announce = self.starts.announce
        # the Workflow Builder step: its runs recorded once, completed once
        self.workflow = WorkflowSteps(store=store, notifier=notifier, clock=clock,
                                      grace=intent_grace, link=self.link)

    # --- helpers ---------------------------------------------------------------------

    def link(self, build: Build) -> str | None:
        if not self.link_template:  # checked when the settings were read
            return None
        return format_build_link(self.link_template, job_id=build.job_id,
                                 build_no=build.build_no,
                                 daily_build_number=build.daily_build_number,
                                 project_id=self.project_id or "")

    # --- requests --------------------------------------------------------------------

    def new_request(self, *, user_id: str, team_id: str | None, channel_id: str, text: str,
                    response_url: str | None, approved: Approved,
                    rebuild_of: str | None = None, received_at: float | None = None,
                    request_id: str | None = None) -> None:
        """Record an approved request, then ask Run/Cancel or start it at once.
        ``request_id``: the id to give it (a workflow step's, derived from its run).

        A Rebuild always asks first, and asks with the same question while it is open,
        so two clicks on one Rebuild button can start one build at most."""
        confirm = approved.confirm or rebuild_of is not None
        state = self._first_state(approved, confirm=confirm)
        if rebuild_of is not None:
            self.expire_due()  # an expired question must not stand in for a new one
            if self._ask_again(rebuild_of, user_id, response_url):
                return
        awaits = approved.approval if state is RequestState.AWAITING else None
        try:
            request = self.store.add_request(
                id=request_id or uuid.uuid4().hex, state=state,
                now=self.clock(), ttl=awaits.ttl if awaits else CONFIRM_TTL, user_id=user_id,
                team_id=team_id, channel_id=channel_id, job_name=approved.job_name,
                job_id=approved.job_id, command=text.strip(), body=approved.body,
                response_url=response_url, decision="confirm" if confirm else "approved",
                rebuild_of=rebuild_of, approvals_needed=awaits.needed if awaits else None)
        except OpenQuestion:  # another click (or replica) asked it a moment ago
            if not self._asked_meanwhile(rebuild_of, user_id, response_url):
                raise
            return
        log.info("request %s user=%s channel=%s job=%s confirm=%s rebuild_of=%s", request.id,
                 user_id, channel_id, approved.job_name, confirm, rebuild_of)
        self._after_new(request, response_url, state, confirm=confirm, received_at=received_at)

    def _after_new(self, request: Request, response_url: str | None, state: RequestState,
                   *, confirm: bool, received_at: float | None) -> None:
        """A request just recorded: asked Run/Cancel, or its first move made at once."""
        self.metrics.commands.labels("confirm" if confirm else "started").inc()
        if not confirm:
            self._first_move(request, response_url, state)
            return
        self._ask(request, response_url)
        if received_at is not None:
            self.metrics.confirmation_seconds.observe(time.monotonic() - received_at)

    def _first_state(self, approved: Approved, *, confirm: bool) -> RequestState:
        """A new request's state: PENDING asks Run/Cancel; a job without confirmation
        that needs approval waits for it at once (AWAITING); one with max_running starts
        through a slot claim (PENDING); any other is sent at once (SENDING)."""
        if confirm:
            return RequestState.PENDING
        if approved.approval:
            return RequestState.AWAITING
        if self.limits.max_running(approved.job_name) is not None:
            return RequestState.PENDING
        return RequestState.SENDING

    def _first_move(self, request: Request, response_url: str | None,
                    state: RequestState) -> None:
        """A new request that asks no Run/Cancel: it waits for approval, claims a slot of
        ``max_running``, or is sent at once."""
        if state is RequestState.AWAITING:
            self.approvals.ask_approval(request, response_url)
        elif state is RequestState.PENDING:  # without confirmation: a slot of max_running
            self.limits.start_in_slot(request, response_url)
        else:
            self.start(request, response_url)

    def _asked_meanwhile(self, rebuild_of: str | None, user_id: str,
                         response_url: str | None) -> bool:
        """A Rebuild's question was asked by another click a moment ago: ask that one
        (only a Rebuild can find its question open already). False when there is none."""
        return rebuild_of is not None and self._ask_again(rebuild_of, user_id, response_url)

    def _ask_again(self, build_id: str, user_id: str, response_url: str | None) -> bool:
        question = self.store.pending_rebuild(build_id=build_id, user_id=user_id,
                                              now=self.clock())
        if question is None:
            return False
        self._ask(question, response_url)
        return True

    def _ask(self, request: Request, response_url: str | None) -> None:
        slots = self.limits.slots(request.job_name)
        if slots is not None and approval_rule(self.config, request.job_name) is None \
                and self.store.running_count(request.job_name) + slots.elsewhere >= slots.limit:
            # Queue, not Run
            self.limits.ask_full(request, response_url, replace=False, slots=slots)
            return
        question = msg.confirmation(
            request.id, request.job_name, self.description(request.job_name), request.body,
            minutes=CONFIRM_MINUTES, rebuild=request.rebuild_of is not None)
        if not self.notifier.respond(response_url, question):
            # no response_url (a form submitted), or it went stale (they last 30 minutes)
            self.notifier.ephemeral(request.channel_id, request.user_id, question)

    def expire_due(self) -> None:
        """Pending questions past their time: expired, audited and told, each once."""
        now = self.clock()
        for request in self.store.expire_pending(now=now):
            self.act(decisions.expired(request))
        for request in self.store.expire_awaiting(now=now):
            self.approvals.approval_expired(request)
        for request in self.store.expire_queued(now=now):
            self.limits.queue_expired(request)

    # --- the door: each click on a request's buttons ---------------------------------------
    # One call per click: load the row, check who clicked (one step for every button), make
    # the conditional move through the store, audit and perform the effects. The answer
    # says what the clicker is told; the Slack side renders it.

    def get_request(self, id: str) -> Request | None:
        return self.store.get_request(id)

    def get_build(self, id: str) -> Build | None:
        return self.store.get_build(id)

    def not_started(self, *, decision: str, user_id: str, channel_id: str, job: str | None,
                    detail: str | None) -> None:
        """A command that started nothing (help, or refused): counted, and audited unless
        it was help."""
        self.metrics.commands.labels("help" if decision == "help" else "refused").inc()
        if decision != "help":
            self.store.audit(decision=decision, now=self.clock(), user_id=user_id,
                             channel_id=channel_id, job=job, detail=detail)

    def run_clicked(self, click: Click) -> Answer:
        """Run: pending -> sending (or awaiting approval), by the requester, once."""
        now = self.clock()
        how = self._run_claim(click, now)
        claim = self.store.claim_request(id=click.value, user_id=click.user_id, now=now, **how)
        decision = decisions.run_claimed(claim, click.response_url, how.get("slots"))
        if decision is not None:
            return self.act(decision)
        return self.limits.claim_refused(click, claim.request, claim.reason, "Run",
                                         Told.NOT_YOURS)

    def handlers(self) -> dict[type, Callable[[Any], object]]:
        return {**super().handlers(),
                AskApproval: lambda e: self.approvals.ask_approval(e.request, e.url),
                OfferQueue: lambda e: self.limits.ask_full(e.request, e.url, slots=e.slots),
                Queued: lambda e: self.limits.perform((e,))}

    def _run_claim(self, click: Click, now: float) -> dict[str, Any]:
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
        elif (slots := self.limits.slots(request.job_name)) is not None:
            how["slots"] = slots  # at max_running the claim says "full"
        return how

    def cancel(self, click: Click) -> Answer:
        """Cancel: pending -> cancelled, by the requester."""
        found = self.own_request(click, "Cancel", Told.NOT_YOURS)
        if isinstance(found, Answer):
            return found
        answer = self.act(decisions.cancel(found))
        if answer.told is Told.LOST:
            current = self.store.get_request(found.id)
            return decisions.cancel_lost(found, current.state if current
                                         else ClaimReason.MISSING)
        return answer

    def editable(self, click: Click) -> Answer:
        """Edit parameters: the requester's pending request, if its job has a form."""
        found = self.own_request(click, "Edit", Told.NOT_YOURS, quiet=True)
        if isinstance(found, Answer):
            return found
        if found.state is not RequestState.PENDING:
            return Answer(Told.ALREADY, found, found.state)
        if found.job_name not in self.config.jobs:  # a raw build task ID: no parameters
            return Answer(Told.NO_FORM, found)
        return Answer(Told.EDITABLE, found)

    def replace_edited(self, request_id: str, user_id: str) -> Answer:
        """An edited request's old question dies first (the store's conditional move, so
        its Run can never start a build)."""
        old = self.store.get_request(request_id)
        if old is None or old.user_id != user_id:
            return NOTHING
        answer = self.act(decisions.replace_edited(old))
        return NOTHING if answer.told is Told.LOST else answer

    # --- the door: stop, subscriptions, and what the Slack side reads to answer -----------

    def stop(self, *, job_id: str, job_name: str, build_no: str, daily: str, user_id: str,
             channel_id: str, build: Build | None) -> Answer:
        """Ask CodeArts to stop a build (the Stop button and /build stop): audited, and
        said in the build's thread when the bot follows it."""
        try:
            self.api.stop_build(job_id, build_no)
        except CodeArtsError as exc:
            return Answer(Told.STOP_FAILED, error=exc)
        self.store.audit(decision="stop", now=self.clock(),
                         request_id=build.id if build is not None else None,
                         user_id=user_id, channel_id=channel_id, job=job_name,
                         build_no=build_no, daily_build_number=daily)
        if build is not None:
            self.thread_note(build, msg.stop_requested(user_id, job_name, daily, build_no))
        return Answer(Told.STOP_ASKED)

    def recent_builds(self, job_id: str) -> list[BuildRow]:
        """/build status <job>: its last builds (raises CodeArtsError)."""
        return recent_builds(self.api, self.store, job_id, now=self.clock(),
                             config=self.config)

    def last_results(self, jobs: list[tuple[str, str]], pool: Executor) -> list[LastResult]:
        """/build status: each job's newest build, read side by side in ``pool``."""
        return last_results(self.api, self.store, jobs, pool=pool, now=self.clock(),
                            config=self.config)

    def standing(self, job_id: str, build_no: str) -> tuple[Standing, Build | None]:
        """What CodeArts says of one build of a job, and the bot's record of it if any."""
        standing = build_standing(self.api, job_id, build_no)
        ours = self.store.builds_by_number(job_id=job_id, build_nos=[build_no]).get(build_no)
        return standing, ours

    def build_facts(self, job_id: str, build_no: str) -> BuildFacts | None:
        """A pasted build link's preview: where that build stands (None: unknown)."""
        return read_build(self.api, self.store, job_id, build_no, now=self.clock())

    def daily_of(self, job_id: str, build_no: str, ours: Build | None) -> str:
        """A build's daily number as the bot knows it: from its own row, else from the
        record a subscription read when it found it; "" when not known."""
        if ours is not None:
            return ours.daily_build_number
        followed = self.store.followed_by_number(job_id=job_id, build_nos=[build_no])
        found = followed.get(build_no)
        return found.daily_build_number if found is not None else ""

    # --- following a build ---------------------------------------------------------------

    def poll(self, build: Build, lease: Lease) -> None:
        """Ask CodeArts how a leased build is doing; reschedule or report it."""
        answer: BuildState | CodeArtsError
        read_at: float | None = None  # the history read that decided it (None: its record)
        try:
            answer, read_at = self.following.state_of(build)
        except CodeArtsError as exc:
            log.warning("status check failed build=%s job=%s failures=%d error=%s", build.id,
                        build.job_name, build.failures + 1, type(exc).__name__)
            answer = exc
        if isinstance(answer, BuildState) and answer.daily_build_number \
                and not build.daily_build_number:
            self.store.set_daily_build_number(id=build.id,
                                              daily_build_number=answer.daily_build_number)
            build = replace(build, daily_build_number=answer.daily_build_number)
        decision = decide_poll(build, answer, poll=self.poll_seconds, max_age=self.max_age)
        if decision.watch is WatchState.WATCHING:
            if isinstance(answer, BuildState):
                self.progress(build, lease)  # before the reschedule gives the lease back
            after = self.clock() + decision.delay
            if read_at is not None:  # with the job's other builds: one history read for all
                after = self.next_check(build.job_id, read_at + decision.delay)
            self.store.reschedule(id=build.id, owner=lease.owner, token=lease.token,
                                  next_check_at=after, failures=decision.failures)
            return
        assert decision.result is not None
        if self.store.begin_report(id=build.id, owner=lease.owner, token=lease.token,
                                   result=decision.result, duration_ms=decision.duration_ms,
                                   now=self.clock()):
            log.info("build ended build=%s job=%s daily=%s result=%s", build.id, build.job_name,
                     build.daily_build_number, decision.result)
            self.metrics.builds_ended.labels(decision.result.split(":")[0]).inc()
            self.report(replace(build, watch=WatchState.REPORTING, result=decision.result,
                                duration_ms=decision.duration_ms, failures=0), lease)

    def poll_job(self, leased: list[tuple[Build, Lease]]) -> list[tuple[Build, Lease]]:
        """Poll builds of one job at once: the job's history is read once, and the builds it
        shows still running with nothing else to do (no progress update due, no daily number
        to keep) are rescheduled in one write. The others are returned for ``poll`` one by
        one (which finds the same history read, or reads their own record)."""
        try:
            decided, rest = self.following.states_of(leased)
        except CodeArtsError:
            return leased  # each build's own poll counts and logs its failure
        later: list[Reschedule] = []
        for build, lease, state, read_at in decided:
            decision = decide_poll(build, state, poll=self.poll_seconds, max_age=self.max_age)
            if decision.watch is not WatchState.WATCHING or self.tracker.due(build) or (
                    state.daily_build_number and not build.daily_build_number):
                rest.append((build, lease))
                continue
            after = self.next_check(build.job_id, (read_at or self.clock()) + decision.delay)
            later.append(Reschedule(build.id, lease.owner, lease.token, after,
                                    decision.failures))
        self.store.reschedule_many(later)
        return rest

    # --- buttons on a build's messages -----------------------------------------------------

    def thread_note(self, build: Build, message: dict[str, Any]) -> None:
        """A word in the build's thread (or to the requester, where there is no thread)."""
        channel, ts = self.recovery.where(build)
        if channel and ts:
            self.notifier.post(channel, message, thread_ts=ts)
        elif build.user_id:  # a build a subscription found has no requester to tell
            self.notifier.direct(build.user_id, message)


