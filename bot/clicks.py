"""What the engine and its feature collaborators share: the store, the notifier, the
jobs file and the clock, and the one step every button takes first: load the clicked
request and check who clicked (a click that changes nothing is logged, audited when it
was someone else's, and answered with why)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bot import messages as msg
from bot.answers import Answer, Click, Told
from bot.config import BuildbotConfig
from bot.decisions import expired_by_click
from bot.effects import (
    Audit,
    Count,
    Decision,
    Effect,
    Move,
    Positions,
    Respond,
    Start,
    TellRequester,
    UpdateApproval,
)
from bot.lifecycle import Request, RequestState
from bot.notifier import Notifier
from bot.policy import Denied
from bot.store import Store

log = logging.getLogger(__name__)

# refusals audited as a click on someone else's request (or not theirs to decide)
_AUDITED_REFUSALS = frozenset({"not_yours", "not_admin", "self", "not_approver",
                               "not_requester"})


class Desk:
    """The collaborators every feature works with, and the checks of a click."""

    # the engine's one run call (``Starts.start``), for the ``Start`` effect
    start: Callable[[Request, str | None], Denied | None]

    def __init__(self, *, config: BuildbotConfig, store: Store, notifier: Notifier,
                 clock: Callable[[], float]) -> None:
        self.config = config
        self.store = store
        self.notifier = notifier
        self.metrics = notifier.metrics
        self.clock = clock

    def description(self, job_name: str) -> str:
        job = self.config.jobs.get(job_name)
        return job.description if job is not None else ""

    def refused(self, click: Click, request: Request | None, told: Told, reason: str,
                what: str, *, quiet: bool = False) -> Answer:
        """A click that changed nothing: logged, audited when it was someone else's (or
        not theirs to decide), and answered with ``reason``."""
        log.info("%s click refused request=%s user=%s reason=%s", what, click.value,
                 click.user_id, reason)
        if request is not None and reason in _AUDITED_REFUSALS and not quiet:
            detail = f"{what} on {request.user_id}'s request"
            self.store.audit(decision="refused_click", now=self.clock(), request_id=request.id,
                             user_id=click.user_id, channel_id=request.channel_id,
                             job=request.job_name,
                             detail=detail if told is Told.NOT_YOURS else f"{detail}: {reason}")
        if request is None and told is Told.NOT_YOURS:
            return Answer(Told.MISSING)
        return Answer(told, request, reason)

    def own_request(self, click: Click, what: str, told: Told, *,
                    quiet: bool = False) -> Request | Answer:
        """The request a requester's button is about, when the clicker is its requester;
        otherwise the answer saying why not."""
        request = self.store.get_request(click.value)
        if request is None:
            return self.refused(click, None, told, "missing", what)
        if request.user_id != click.user_id:
            mine = "not_requester" if told is Told.APPROVAL_REFUSED else "not_yours"
            return self.refused(click, request, told, mine, what, quiet=quiet)
        return request

    def expired_now(self, request: Request) -> Answer:
        """This click found the question past its time and expired it: it tells it."""
        return self.act(expired_by_click(request))

    # --- making a decision's move and performing its effects ---------------------------

    def act(self, decision: Decision) -> Answer:
        """Make the decision's move (if any) and, only if this call won it, perform its
        effects in order: the decision's answer, or ``Told.LOST`` when another click (or
        replica) made a move first and the caller must say why from the row as it is."""
        if decision.move is not None and not self.moved(decision.move):
            return Answer(Told.LOST)
        self.perform(decision.effects)
        return decision.answer

    def moved(self, move: Move) -> bool:
        """The move, made with one conditional UPDATE: True when this call made it."""
        now = self.clock()
        if move.open_only and move.old is RequestState.AWAITING:
            return self.store.end_awaiting(id=move.id, new=move.new, now=now,
                                           requester=move.requester, error=move.error)
        if move.open_only and move.old is RequestState.QUEUED:
            assert move.requester is not None and move.new is RequestState.WITHDRAWN
            return self.store.leave_queue(id=move.id, user_id=move.requester, now=now)
        assert move.requester is None and not move.open_only  # no such conditional move
        return self.store.move_request(id=move.id, old=move.old, new=move.new, now=now,
                                       error=move.error)

    def perform(self, effects: tuple[Effect, ...]) -> None:
        """Each effect, in order: the only place a decision's effects are carried out."""
        handlers = self.handlers()
        for effect in effects:
            handlers[type(effect)](effect)

    def handlers(self) -> dict[type, Callable[[Any], object]]:
        """How each kind of effect is performed; a feature adds its own."""
        return {
            Audit: self._write_audit,
            Count: lambda e: self.metrics.commands.labels(e.outcome).inc(),
            Respond: lambda e: self.notifier.respond(e.url, e.message),
            TellRequester: lambda e: self.tell_requester(e.request, e.message, e.url),
            UpdateApproval: self._update_approval_message,
            Start: lambda e: self.start(e.request, e.url),
            Positions: lambda e: self.update_positions(e.job_name),
        }

    def _write_audit(self, effect: Audit) -> None:
        request = effect.request
        self.store.audit(decision=effect.decision, now=self.clock(), request_id=request.id,
                         user_id=effect.user_id or request.user_id,
                         channel_id=effect.channel_id or request.channel_id,
                         job=request.job_name, detail=effect.detail,
                         parameters=request.body if effect.parameters else None)

    def _update_approval_message(self, effect: UpdateApproval) -> None:
        """Where the approval question was posted (read again: it is set after posting)."""
        current = self.store.get_request(effect.request.id) or effect.request
        if current.approval_channel and current.approval_ts:
            self.notifier.update(current.approval_channel, current.approval_ts,
                                 effect.message)

    def update_positions(self, job_name: str) -> None:
        """Best effort: each queued requester's message shows their new place."""
        for position, request in enumerate(self.store.queue_of(job_name), start=1):
            self.notifier.respond(request.response_url, msg.queued(
                request.id, request.job_name, position=position,
                expires_at=request.expires_at))

    def tell_requester(self, request: Request, message: msg.Message,
                       response_url: str | None = None) -> None:
        """Through the click's response_url (it replaces the "waiting" message); after
        its 30 minutes, as a direct message."""
        if not self.notifier.respond(response_url or request.response_url, message):
            self.notifier.direct(request.user_id, {"text": message["text"]})
