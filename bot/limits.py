"""The limits on starting builds: a job's max_running (its queue, Queue, Run anyway and
Leave) and the per-user hourly limit."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bot import decisions
from bot import messages as msg
from bot.answers import NOTHING, Answer, Click, Told
from bot.clicks import Desk
from bot.codearts.client import CodeArtsClient
from bot.codearts.errors import CodeArtsError
from bot.config import BuildbotConfig
from bot.effects import Queued
from bot.lifecycle import CONFIRM_MINUTES, ClaimReason, Request, RequestState, next_allowed
from bot.notifier import Notifier
from bot.policy import Denied, approval_rule, over_limit_problem, per_user_limit
from bot.store import Slots, Store

log = logging.getLogger(__name__)


class Limits(Desk):
    """max_running and its queue, and the hourly limit."""

    def __init__(self, *, config: BuildbotConfig, store: Store, notifier: Notifier,
                 clock: Callable[[], float], api: CodeArtsClient,
                 start: Callable[[Request, str | None], Denied | None]) -> None:
        super().__init__(config=config, store=store, notifier=notifier, clock=clock)
        self.api = api
        self.start = start  # the engine's one call to CodeArts

    # --- one build at a time and the queue ------------------------------------------
    # A job with max_running starts a build only through a claim that counts its running
    # builds under the job's slot lock (the store). At the limit the requester is offered
    # Queue (and admins Run anyway); queued requests start, oldest first, when the
    # watcher's pass finds a free slot (release_queue), or expire after queue_ttl.

    def max_running(self, job_name: str) -> int | None:
        job = self.config.jobs.get(job_name)
        return job.max_running if job is not None else None

    def queue_ttl(self, job_name: str) -> float:
        job = self.config.jobs.get(job_name)
        return job.queue_ttl_seconds if job is not None else 3600.0

    def slots(self, job_name: str) -> Slots | None:
        """The job's slot limit; None for a job without max_running. With
        check_codearts_running (and a slot free by the store), CodeArts is asked too: a
        build of the job it says runs that this bot did not start takes a slot, and a
        check that fails fills them all (not known is not free)."""
        job = self.config.jobs.get(job_name)
        if job is None or job.max_running is None:
            return None
        slots = Slots(job_name, job.max_running)
        if not job.check_codearts_running or \
                self.store.running_count(job_name) >= job.max_running:
            return slots
        try:
            running, last = self.api.job_running(job.id)
        except CodeArtsError as exc:
            log.warning("could not ask CodeArts whether job=%s runs: %s", job_name,
                        type(exc).__name__)
            return Slots(job_name, job.max_running, elsewhere=job.max_running, note="unknown")
        if running and not (last and self.store.has_build(job_id=job.id, build_no=last)):
            return Slots(job_name, job.max_running, elsewhere=1, note=last or "?")
        return slots

    def start_in_slot(self, request: Request, response_url: str | None) -> None:
        """A job without confirmation but with max_running: start it if a slot is free,
        else ask Queue / Run anyway."""
        slots = self.slots(request.job_name)
        claim = self.store.claim_request(id=request.id, user_id=request.user_id,
                                         now=self.clock(), slots=slots)
        if claim.ok and claim.request is not None:
            self.start(claim.request, response_url)
        elif claim.reason is ClaimReason.FULL:
            self.ask_full(request, response_url, replace=False, slots=slots)
        else:
            log.info("request %s not started: %s", request.id, claim.reason)

    def ask_full(self, request: Request, response_url: str | None, *,
                 replace: bool = True, slots: Slots | None = None) -> None:
        """The job is at its max_running: say what runs, offer Queue (and, to an admin's
        own request, Run anyway) or Cancel. The request stays pending until answered."""
        now = self.clock()
        running = [(b.daily_build_number or f"#{b.build_no}", b.user_id, now - b.created_at)
                   for b in self.store.running_builds(request.job_name)]
        question = msg.at_limit(
            request.id, request.job_name, self.description(request.job_name), request.body,
            running=running, limit=self.max_running(request.job_name) or 1,
            queue_minutes=int(self.queue_ttl(request.job_name) // 60),
            admin=request.user_id in self.config.admins, minutes=CONFIRM_MINUTES,
            replace=replace, elsewhere=slots.note if slots is not None else "")
        if not self.notifier.respond(response_url, question):
            self.notifier.ephemeral(request.channel_id, request.user_id, question)

    def queued(self, request: Request, response_url: str | None) -> None:
        """Tell the requester their place in the queue (replacing their question)."""
        position = self.store.queue_position(request.id)
        if position is None:  # it started (or left) in the meantime: that said so
            return
        current = self.store.get_request(request.id) or request
        self.notifier.respond(response_url, msg.queued(
            request.id, request.job_name, position=position, expires_at=current.expires_at))

    def release_queue(self) -> int:
        """Start queued requests, oldest of each job first, while their job has a free
        slot; each is claimed queued -> sending under the slot lock, so it starts once
        on any number of replicas. Returns how many this call started."""
        started = 0
        for job_name in self.store.queued_jobs(now=self.clock()):
            moved = False
            while True:
                # a job no longer in the file has no limit: its queue drains
                slots = self.slots(job_name) or Slots(job_name, 1 << 30)
                request = self.store.claim_next_queued(slots=slots, now=self.clock())
                if request is None:
                    break
                moved = True
                started += 1
                log.info("queued request %s of job=%s gets a free slot", request.id, job_name)
                self.act(decisions.dequeued(request))
            if moved:
                self.update_positions(job_name)
        return started

    def queue_expired(self, request: Request) -> None:
        """Audit and tell a queued request this process expired (once)."""
        self.act(decisions.queue_expired(request, self._queue_minutes(request)))

    def _queue_minutes(self, request: Request) -> int:
        return int(self.queue_ttl(request.job_name) // 60)

    # --- the door: queue clicks -----------------------------------------------------------

    def queue(self, click: Click) -> Answer:
        """Queue: pending -> queued (the requester's, while the question is open; under the
        per-user limit), then the requester's place; the queue is released at once in
        case a slot freed meanwhile."""
        request = self.store.get_request(click.value)
        if request is not None and approval_rule(self.config, request.job_name) is not None:
            return self.refused(click, request, Told.QUEUE_REFUSED, "needs_approval", "Queue")
        now = self.clock()
        how: dict[str, Any] = {}
        if request is not None:
            limit = per_user_limit(self.config, request.job_name, click.user_id)
            if limit is not None:
                how["limit"] = (request.job_name, limit)
            how["values"] = {"queued_at": now,
                             "expires_at": now + self.queue_ttl(request.job_name),
                             "response_url": click.response_url or request.response_url}
        claim = self.store.claim_request(id=click.value, user_id=click.user_id, now=now,
                                         to=RequestState.QUEUED, **how)
        if not claim.ok or claim.request is None:
            return self.claim_refused(click, claim.request, claim.reason, "Queue",
                                       Told.QUEUE_REFUSED)
        return self.act(decisions.queued_by_click(claim.request, click.user_id))

    def handlers(self) -> dict[type, Callable[[Any], object]]:
        return {**super().handlers(), Queued: self._queued_then_release}

    def _queued_then_release(self, effect: Queued) -> None:
        self.queued(effect.request, effect.url)
        self.release_queue()  # a slot may have freed since

    def run_anyway(self, click: Click) -> Answer:
        """Run anyway: an admin's own request starts past the job's max_running."""
        found = self.own_request(click, "Run anyway", Told.QUEUE_REFUSED)
        if isinstance(found, Answer):
            return found
        request = found
        if click.user_id not in self.config.admins:
            return self.refused(click, request, Told.QUEUE_REFUSED, "not_admin", "Run anyway")
        if approval_rule(self.config, request.job_name) is not None:
            return self.refused(click, request, Told.QUEUE_REFUSED, "needs_approval",
                                 "Run anyway")
        claim = self.store.claim_request(id=request.id, user_id=click.user_id, now=self.clock())
        if not claim.ok or claim.request is None:
            return self.claim_refused(click, claim.request or request, claim.reason,
                                       "Run anyway", Told.QUEUE_REFUSED)
        return self.act(decisions.run_anyway(claim.request, click.user_id, click.response_url))

    def leave_queue(self, click: Click) -> Answer:
        """Leave: queued -> withdrawn, by the requester, while it waits."""
        found = self.own_request(click, "Leave", Told.QUEUE_REFUSED)
        if isinstance(found, Answer):
            return found
        answer = self.act(decisions.leave_queue(found, click.user_id))
        if answer.told is not Told.LOST:
            return answer
        current = self.store.get_request(found.id)
        if current is not None and current.state is RequestState.QUEUED \
                and current.expires_at <= self.clock():  # past its time: expired here
            expired = self.act(decisions.expired_while_queued(current,
                                                              self._queue_minutes(current)))
            if expired.told is not Told.LOST:
                return NOTHING
            current = self.store.get_request(found.id)
        return self.refused(click, current, Told.QUEUE_REFUSED,
                            current.state if current else "missing", "Leave")

    def claim_refused(self, click: Click, request: Request | None,
                       reason: ClaimReason | RequestState, what: str, told: Told) -> Answer:
        if request is None or reason is ClaimReason.MISSING:
            return self.refused(click, None, told, "missing", what)
        if reason is ClaimReason.OVER_LIMIT:
            return self.over_limit_answer(request)
        if reason is ClaimReason.EXPIRES_NOW:
            log.info("%s click found request=%s past its time", what, request.id)
            return self.expired_now(request)
        if told is Told.NOT_YOURS and reason is not ClaimReason.NOT_YOURS:
            return Answer(Told.ALREADY, request, reason)
        return self.refused(click, request, told, reason, what)

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

    def over_limit_answer(self, request: Request) -> Answer:
        problem = (self.over_limit(request.job_name, request.user_id)
                   or f"You have reached the hourly limit of builds of `{request.job_name}`.")
        self.store.audit(decision="over_limit", now=self.clock(), request_id=request.id,
                         user_id=request.user_id, channel_id=request.channel_id,
                         job=request.job_name, detail=problem)
        return Answer(Told.OVER_LIMIT, request, detail=problem)
