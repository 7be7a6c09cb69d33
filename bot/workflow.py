"""The Workflow Builder step "Run a CodeArts build", on the engine's side: a run is
recorded once (keyed by Slack's ``function_execution_id``), becomes an ordinary request
(announced in its channel and followed like a typed build, with every guarantee of one),
and is completed once when that request's build ends or when it is clear it will never
start: ``functions.completeSuccess`` with the build's numbers, result and link, or
``functions.completeError`` with the reason a person would be given.

Completing is crash-proof like every other effect: the intent is a conditional UPDATE
made before the Slack call (``claim_completion``), the mark another after it
(``complete_function_run``). A process that dies in between leaves a claim that another
(or the same one, restarted) takes over after ``grace`` and makes the call again; Slack
answers a second completion ``execution_not_in_running_state``, which means it is done.

The decision (``completion_for``) is pure: the run, its request and its build in, the
completion (or None: not yet) out.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from bot import messages as msg
from bot.lifecycle import Build, Request, RequestState
from bot.notifier import Notifier
from bot.store import FunctionRun, Store

log = logging.getLogger(__name__)

# The states of a request that will never start a build, and how the step says so.
NEVER_STARTED = {RequestState.CANCELLED: "cancelled", RequestState.EXPIRED: "expired",
                 RequestState.REJECTED: "rejected", RequestState.WITHDRAWN: "withdrawn",
                 RequestState.REFUSED: "refused", RequestState.FAILED: "failed"}
# Slack's answers to a completion that mean the step is already complete (or gone)
ALREADY_COMPLETE = frozenset({"execution_not_in_running_state", "function_execution_not_found"})
TOKEN_FRESH = 14 * 60.0  # the event's token lives 15 minutes: after that, the bot's own
_NAMESPACE = uuid.UUID("6f1c1f0e-2d4b-4f7e-9a55-0b6c8e1d2a90")


def request_id_for(execution_id: str) -> str:
    """The id of the request a run makes: derived from the execution, so it is the same
    whoever computes it (and never a second request for one run)."""
    return uuid.uuid5(_NAMESPACE, execution_id).hex


def completion_for(run: FunctionRun, request: Request | None, build: Build | None, *,
                   now: float, grace: float,
                   link: Callable[[Build], str | None]) -> dict[str, Any] | None:
    """How the run completes now: ``{"outputs": {...}}`` or ``{"error": "..."}``; None
    while its build may still start or is running."""
    if run.error is not None:
        return {"error": run.error}
    if build is not None:
        if build.result is None:
            return None
        if build.result != "success":
            return {"error": msg.step_failed(build.job_name, build.daily_build_number,
                                             build.build_no, build.result, build.duration_ms)}
        return {"outputs": {"build_number": build.build_no,
                            "daily_build_number": build.daily_build_number,
                            "result": build.result, "link": link(build) or ""}}
    if request is None:
        if now - run.created_at < grace:
            return None  # being recorded now
        return {"error": msg.step_not_started("The build", "lost")}
    never = NEVER_STARTED.get(request.state)
    if never is not None:
        return {"error": msg.step_not_started(request.job_name, never, request.error)}
    return None  # waiting to start (approval, queue), or starting


class WorkflowSteps:
    """Runs of the step: recorded, and completed once."""

    def __init__(self, *, store: Store, notifier: Notifier, clock: Callable[[], float],
                 grace: float, link: Callable[[Build], str | None]) -> None:
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self.grace = grace
        self.link = link

    def record(self, *, execution_id: str, user_id: str, channel_id: str,
               token: str | None, error: str | None) -> str | None:
        """Record a run (``error``: refused already, why); the id of the request it is to
        make, or None when the run was recorded before (the event came again)."""
        request_id = request_id_for(execution_id)
        if not self.store.add_function_run(id=execution_id, now=self.clock(), user_id=user_id,
                                           channel_id=channel_id, request_id=request_id,
                                           token=token, error=error):
            log.info("workflow step %s already recorded: nothing done again", execution_id)
            return None
        return request_id

    def complete_due(self, limit: int = 100) -> int:
        """Complete every run whose outcome is known (the watcher calls this each round);
        how many were completed."""
        now = self.clock()
        done = 0
        for run in self.store.unfinished_function_runs(now=now, grace=self.grace,
                                                       limit=limit):
            try:
                done += self.complete(run)
            except Exception:
                log.exception("workflow step %s not completed", run.id)
        return done

    def complete(self, run: FunctionRun) -> bool:
        now = self.clock()
        outcome = run.outcome if run.state == "completing" else None
        if outcome is None:
            outcome = completion_for(run, self.store.get_request(run.request_id),
                                     self.store.get_build(run.request_id), now=now,
                                     grace=self.grace, link=self.link)
        if outcome is None:
            return False
        if not self.store.claim_completion(run, now=now, grace=self.grace, outcome=outcome):
            return False  # another replica took it
        fresh = run.token if run.token and now - run.created_at < TOKEN_FRESH else None
        sent = self.notifier.complete_function(run.id, outputs=outcome.get("outputs"),
                                               error=outcome.get("error"), token=fresh)
        if sent.ok or sent.error in ALREADY_COMPLETE or sent.permanent:
            if not sent.ok:
                log.warning("workflow step %s: Slack answered %s; taken as complete", run.id,
                            sent.error)
            self.store.complete_function_run(run.id, claimed_at=now, now=self.clock())
            return sent.ok
        self.store.release_completion(run.id, claimed_at=now)  # Slack busy: next round
        return False
