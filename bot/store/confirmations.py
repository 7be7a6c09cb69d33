"""Requests and their confirmations: recorded, claimed by a Run click, moved.

``buildbot_requests`` has one row per request to run a job (a /build command, a form,
a Rebuild click), its state a ``lifecycle.RequestState``. A confirmation is a pending
request; exactly one Run click moves it to sending (``claim_request``: one conditional
UPDATE, with the hourly limit and the job's slot checked under the slot lock in the same
transaction); any other click gets the reason, and a request past its time is expired
by exactly one caller (a click or the sweep). Sending is an intent: its owner (this
process) makes the run call once; ``stale_sending`` finds those whose owner died or took
longer than any call lasts, for recovery to settle from the job's history, never to
send again. One open Rebuild question per build and user: a unique index, so a second
one raises ``OpenQuestion``.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

# Claim lives in lifecycle; ``from bot.store import Claim`` still works
from bot.lifecycle import Claim, ClaimReason, Request, RequestState
from bot.store.heartbeats import _dead
from bot.store.housekeeping import _INSERT_AUDIT, _audit_row
from bot.store.limits import LimitQueries, Slots
from bot.store.schema import requests

# Built once: a statement made per call costs more to build and to key for SQLAlchemy's
# compiled cache than SQLite takes to run it (these are the per-command and per-poll ones).
_INSERT_REQUEST = requests.insert()


class OpenQuestion(Exception):
    """This user already has an unanswered Rebuild question for this build."""



class RequestQueries(LimitQueries):
    """Requests: recorded, claimed, moved, expired, and the run calls left open."""

    def add_request(self, *, id: str, state: RequestState, now: float, ttl: float,
                    user_id: str, team_id: str | None, channel_id: str, job_name: str,
                    job_id: str, command: str, body: dict[str, Any], response_url: str | None,
                    decision: str | None = None, rebuild_of: str | None = None,
                    approvals_needed: int | None = None) -> Request:
        """Record a request; with ``decision``, its audit row too, in the same transaction.
        ``approvals_needed``: it starts awaiting approval (a job without confirmation)."""
        row = {"id": id, "state": RequestState(state).value, "created_at": now,
               "expires_at": now + ttl, "updated_at": now, "user_id": user_id,
               "team_id": team_id, "channel_id": channel_id, "job_name": job_name,
               "job_id": job_id, "command": command, "body": json.dumps(body),
               "response_url": response_url, "error": None, "rebuild_of": rebuild_of}
        if approvals_needed is not None:
            row["approvals_needed"] = approvals_needed
        try:
            self._insert_request(row, decision, body)
        except sa.exc.IntegrityError:
            if rebuild_of is None:
                raise
            raise OpenQuestion(rebuild_of) from None
        return Request.from_row(row)

    def _insert_request(self, row: dict[str, Any], decision: str | None,
                        body: dict[str, Any]) -> None:
        now, id, user_id, channel_id, job_name = (row["created_at"], row["id"], row["user_id"],
                                                  row["channel_id"], row["job_name"])
        with self._tx() as c:
            c.execute(_INSERT_REQUEST, row)
            if decision is not None:
                c.execute(_INSERT_AUDIT, _audit_row(
                    decision=decision, now=now, request_id=id, user_id=user_id,
                    channel_id=channel_id, job=job_name, parameters=body))

    def get_request(self, id: str) -> Request | None:
        with self._tx() as c:
            row = c.execute(sa.select(requests).where(requests.c.id == id)).mappings().first()
        return None if row is None else Request.from_row(row)

    def pending_rebuild(self, *, build_id: str, user_id: str, now: float) -> Request | None:
        """This user's unanswered Rebuild question for this build, if one is still open."""
        with self._tx() as c:
            row = c.execute(sa.select(requests).where(
                requests.c.rebuild_of == build_id, requests.c.user_id == user_id,
                requests.c.state == RequestState.PENDING.value, requests.c.expires_at > now)
                .order_by(requests.c.created_at).limit(1)).mappings().first()
        return None if row is None else Request.from_row(row)

    def claim_request(self, *, id: str, user_id: str, now: float,
                      to: RequestState = RequestState.SENDING,
                      values: dict[str, Any] | None = None,
                      limit: tuple[str, int] | None = None,
                      slots: Slots | None = None) -> Claim:
        """Move one pending request to sending (or ``to``: awaiting approval, with
        ``values``), atomically; any other click gets the reason. ``limit`` (job name,
        builds per hour) is checked in the same UPDATE: over it, the reason is
        ``over_limit`` and the request stays pending. It is checked under the job's slot
        lock, so two claims at once on two replicas count each other. ``slots``: the
        job's running builds are counted under that lock in the same transaction; at its
        limit the reason is ``full`` and the request stays pending."""
        under = () if limit is None else (self._under_limit(user_id, limit, now, id),)
        changed, full, row = self._try_claim(id=id, user_id=user_id, now=now, to=to,
                                             values=values, limit=limit, slots=slots,
                                             under=under)
        if row is None:
            return Claim(False, ClaimReason.MISSING)
        request = Request.from_row(row)
        if changed:
            return Claim(True, ClaimReason.CLAIMED, request)
        return self._not_claimed(request, user_id=user_id, now=now, full=full,
                                 over_limit=bool(under))

    def _try_claim(self, *, id: str, user_id: str, now: float, to: RequestState,
                   values: dict[str, Any] | None, limit: tuple[str, int] | None,
                   slots: Slots | None,
                   under: tuple[Any, ...]) -> tuple[bool, bool, sa.RowMapping | None]:
        """The claim's one transaction: the job's slots counted (or its lock taken), the
        conditional move, and the row as it then stands. Returns whether this call moved
        it, whether the job's slots were full, and the row (None: no such request)."""
        full = False
        with self._tx() as c:
            if slots is not None:
                full = self._slots_full(c, slots, now)
            elif limit is not None:  # the job's lock: a concurrent claim counts this one
                self._lock_slot(c, limit[0], now)
            changed = not full and self._move(
                c, requests, requests.c.state, id, RequestState.PENDING, to,
                {"updated_at": now, **(values or {})}, requests.c.user_id == user_id,
                requests.c.expires_at > now, *under)
            row = c.execute(sa.select(requests).where(requests.c.id == id)).mappings().first()
        return changed, full, row

    def _not_claimed(self, request: Request, *, user_id: str, now: float, full: bool,
                     over_limit: bool) -> Claim:
        """Why a claim did not move the request, as it stands after the attempt."""
        if request.user_id != user_id:
            return Claim(False, ClaimReason.NOT_YOURS, request)
        waiting = request.state is RequestState.PENDING and request.expires_at > now
        if waiting and full:
            return Claim(False, ClaimReason.FULL, request)
        if waiting and over_limit:
            return Claim(False, ClaimReason.OVER_LIMIT, request)
        if request.state is RequestState.PENDING:  # so it is past its time
            return self._expire_on_click(request, now)
        return Claim(False, request.state, request)

    def _expire_on_click(self, request: Request, now: float) -> Claim:
        """A click on a pending request past its time expires it, unless the sweep did
        first (and told it)."""
        if self.move_request(id=request.id, old=RequestState.PENDING,
                             new=RequestState.EXPIRED, now=now):
            return Claim(False, ClaimReason.EXPIRES_NOW, request)  # this click tells it
        current = self.get_request(request.id)
        if current is None:
            return Claim(False, ClaimReason.MISSING)
        return Claim(False, current.state, current)

    def move_request(self, *, id: str, old: RequestState, new: RequestState, now: float,
                     error: str | None = None) -> bool:
        """Conditional state change; True when this call made it."""
        values: dict[str, Any] = {"updated_at": now}
        if error is not None:
            values["error"] = error
        with self._tx() as c:
            return self._move(c, requests, requests.c.state, id, old, new, values)

    def expire_pending(self, *, now: float) -> list[Request]:
        """Pending requests past their time that this call moved to expired (each once)."""
        with self._tx() as c:
            due = list(c.execute(sa.select(requests).where(
                requests.c.state == RequestState.PENDING.value,
                requests.c.expires_at <= now)).mappings())
        return [Request.from_row(r) for r in due
                if self.move_request(id=r["id"], old=RequestState.PENDING,
                                     new=RequestState.EXPIRED, now=now)]

    def stale_sending(self, *, older_than: float, noted: str | None = None,
                      noted_before: float | None = None,
                      now: float | None = None) -> list[Request]:
        """Requests claimed but never finished: the process calling CodeArts died (its
        heartbeat stopped, by ``now``) or has had it longer than any live call lasts
        (older than ``older_than``), or the call's answer was lost (error starting with
        ``noted``, older than ``noted_before``)."""
        stale = requests.c.updated_at < older_than
        if now is not None:
            stale = sa.or_(stale, requests.c.intent_owner.in_(_dead(now)))
        if noted is not None and noted_before is not None:
            stale = sa.or_(stale, sa.and_(requests.c.error.startswith(noted, autoescape=True),
                                          requests.c.updated_at < noted_before))
        with self._tx() as c:
            rows = c.execute(sa.select(requests).where(
                requests.c.state == RequestState.SENDING.value, stale)).mappings()
            return [Request.from_row(r) for r in rows]

    def note_answer_lost(self, *, id: str, now: float, error: str) -> bool:
        """The run call's answer was lost: the request stays sending, to be settled from
        the job's history; no state changes, so no transition."""
        with self._tx() as c:
            return c.execute(requests.update().where(
                requests.c.id == id, requests.c.state == RequestState.SENDING.value)
                .values(error=error[:1000], updated_at=now)).rowcount == 1
