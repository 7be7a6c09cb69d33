"""Approvals by a second person (or more) of a request awaiting them.

A request awaiting approval is a ``buildbot_requests`` row in state ``awaiting``, with
``approvals_needed``, who approved (``approved_by``: " U1 U2 ", each once, in order),
``approvals_given``, and where the approval message is (updated in place as it is
decided). Each Approve click is one conditional UPDATE that adds the approver only if
they are not there yet and more approvals are needed; the approval that makes it enough
moves the request to sending (or, at the job's max_running, to the queue) in the same
transaction, under the job's slot lock: on any number of replicas exactly one click
starts the build. Rejecting, withdrawing and expiring are moves that one caller makes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

# Approval lives in lifecycle; ``from bot.store import Approval`` still works
from bot.lifecycle import Approval, ApprovalOutcome, Request, RequestState
from bot.store.confirmations import RequestQueries
from bot.store.limits import Slots
from bot.store.schema import requests


class ApprovalQueries(RequestQueries):
    """Approvals: recorded once per person; the one that makes enough starts the build."""

    def record_approval(self, *, id: str, approver: str, now: float,
                        slots: Slots | None = None, queue_ttl: float = 3600.0) -> Approval:
        """Add ``approver`` to an awaiting request, once per person, in one conditional
        UPDATE; the approval that makes it enough moves it to sending in the same
        transaction (so on any number of replicas exactly one click starts the build).
        With ``slots``, a job at its limit then queues it instead (``queued``), open
        for ``queue_ttl`` seconds."""
        with self._tx() as c:
            if slots is not None:  # taken first: every slot decision locks in one order
                self._lock_slot(c, slots.job_name, now)
            recorded = self._add_approver(c, id, approver, now)
            row = c.execute(sa.select(requests).where(requests.c.id == id)).mappings().first()
            if row is None:
                return Approval(ApprovalOutcome.MISSING)
            request = Request.from_row(row)
            if recorded and len(request.approved_by) >= (request.approvals_needed or 1):
                started = self._start_approved(c, request, now, slots, queue_ttl)
                if started is not None:
                    return started
        if recorded:
            return Approval(ApprovalOutcome.RECORDED, request)
        return self._not_recorded(request, approver, now)

    def _add_approver(self, c: Connection, id: str, approver: str, now: float) -> bool:
        """The one conditional UPDATE: ``approver`` added to a request still awaiting and
        open, if not there yet and more approvals are needed; True when this call did."""
        approved_by = sa.func.coalesce(requests.c.approved_by, " ")
        given = sa.func.coalesce(requests.c.approvals_given, 0)
        return c.execute(requests.update().where(
            requests.c.id == id, requests.c.state == RequestState.AWAITING.value,
            requests.c.expires_at > now,
            ~approved_by.contains(f" {approver} ", autoescape=True),
            given < sa.func.coalesce(requests.c.approvals_needed, 1))
            .values(approved_by=approved_by + approver + " ", approvals_given=given + 1,
                    updated_at=now)).rowcount == 1

    def _start_approved(self, c: Connection, request: Request, now: float,
                        slots: Slots | None, queue_ttl: float) -> Approval | None:
        """The approval that made enough, in the same transaction: queued when the job's
        slots are full, else moved to sending; None if neither move was made."""
        if slots is not None and self._running(c, slots.job_name) + \
                slots.elsewhere >= slots.limit:
            queued = {"updated_at": now, "queued_at": now, "expires_at": now + queue_ttl}
            if self._move(c, requests, requests.c.state, request.id, RequestState.AWAITING,
                          RequestState.QUEUED, queued):
                return Approval(ApprovalOutcome.QUEUED, replace(
                    request, state=RequestState.QUEUED, expires_at=now + queue_ttl))
        if self._move(c, requests, requests.c.state, request.id, RequestState.AWAITING,
                      RequestState.SENDING, {"updated_at": now}):
            return Approval(ApprovalOutcome.START, replace(request, state=RequestState.SENDING))
        return None

    def _not_recorded(self, request: Request, approver: str, now: float) -> Approval:
        """Why an approval was not added, as the request stands after the attempt."""
        if request.state is not RequestState.AWAITING:
            return Approval(request.state, request)
        if approver in request.approved_by:
            return Approval(ApprovalOutcome.APPROVED_ALREADY, request)
        if request.expires_at <= now:
            return self._expire_on_approval(request, now)
        # enough approvals came first; it is starting
        return Approval(ApprovalOutcome.ENOUGH, request)

    def _expire_on_approval(self, request: Request, now: float) -> Approval:
        """An approval of a request past its time expires it, unless the sweep did first."""
        if self.move_request(id=request.id, old=RequestState.AWAITING,
                             new=RequestState.EXPIRED, now=now):
            return Approval(ApprovalOutcome.EXPIRES_NOW, request)  # this click tells it
        current = self.get_request(request.id)
        return Approval(current.state if current else ApprovalOutcome.MISSING, current)

    def end_awaiting(self, *, id: str, new: RequestState, now: float,
                     requester: str | None = None, error: str | None = None) -> bool:
        """An awaiting request rejected, withdrawn (``requester`` must be its own) or not
        asked, while still open; True when this call made the move."""
        values: dict[str, Any] = {"updated_at": now}
        if error is not None:
            values["error"] = error
        who = () if requester is None else (requests.c.user_id == requester,)
        with self._tx() as c:
            return self._move(c, requests, requests.c.state, id, RequestState.AWAITING, new,
                              values, requests.c.expires_at > now, *who)

    def expire_awaiting(self, *, now: float) -> list[Request]:
        """Requests awaiting approval past their time that this call expired (each once)."""
        with self._tx() as c:
            due = list(c.execute(sa.select(requests).where(
                requests.c.state == RequestState.AWAITING.value,
                requests.c.expires_at <= now)).mappings())
        return [Request.from_row(r) for r in due
                if self.move_request(id=r["id"], old=RequestState.AWAITING,
                                     new=RequestState.EXPIRED, now=now)]

    def set_approval_message(self, *, id: str, channel: str, ts: str) -> None:
        """Where the approval message is, so each decision updates it in place."""
        with self._tx() as c:
            c.execute(requests.update().where(requests.c.id == id)
                      .values(approval_channel=channel, approval_ts=ts))
