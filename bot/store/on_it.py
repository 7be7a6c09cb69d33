""""I'm on it" (issue 28): the failure replies the bot posted, who took each, and the
success that closed it.

A failure reply is remembered once it is posted (or found in its thread on a retry), with
what it says, so a click can edit it. Taking is one conditional UPDATE (``taker IS NULL``):
one taker, however many clicks and replicas; releasing is one too (``taker = <them>``).
When a later build of the job on the same branch succeeds, every open claim before it is
closed with one UPDATE naming that build, so its "fixed" message can say who was on it
(``claim_closed_by``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from bot.store.base import StoreBase
from bot.store.schema import on_it

o = on_it


class Took(StrEnum):
    """What an I'm on it click did."""

    TAKEN = "taken"
    RELEASED = "released"
    HELD = "held"  # someone else is on it: nothing changed
    CLOSED = "closed"  # a later build succeeded: nothing changed
    MISSING = "missing"  # no such failure reply


@dataclass(frozen=True)
class FailureReply:
    build_id: str
    job_id: str
    job_name: str
    build_no: str
    daily_build_number: str
    branch: str | None
    channel: str
    ts: str
    reply: dict[str, Any]
    taker: str | None
    closed_by: str | None

    @classmethod
    def from_row(cls, row: Any) -> FailureReply:
        try:
            reply = json.loads(row["reply"])
        except ValueError:
            reply = {}
        return cls(build_id=row["build_id"], job_id=row["job_id"], job_name=row["job_name"],
                   build_no=row["build_no"], daily_build_number=row["daily_build_number"] or "",
                   branch=row["branch"], channel=row["channel"], ts=row["ts"],
                   reply=reply if isinstance(reply, dict) else {}, taker=row["taker"],
                   closed_by=row["closed_by"])


def _branch_is(branch: str | None) -> sa.ColumnElement[bool]:
    return o.c.branch.is_(None) if branch is None else o.c.branch == branch


class OnItQueries(StoreBase):
    """The rows of "I'm on it"."""

    def remember_failure_reply(self, *, build_id: str, job_id: str, job_name: str,
                               build_no: str, daily_build_number: str, branch: str | None,
                               channel: str, ts: str, reply: dict[str, Any],
                               now: float) -> None:
        """A failure reply is in Slack at ``channel``/``ts``: remembered once (a retry that
        found it again changes nothing)."""
        if not build_no.isdigit() or len(build_no) > 18:
            return  # not a build number CodeArts gives: nothing to order it by
        try:
            with self._tx() as c:
                c.execute(o.insert().values(
                    build_id=build_id, job_id=job_id, job_name=job_name[:200],
                    build_no=build_no, build_number=int(build_no),
                    daily_build_number=daily_build_number[:64],
                    branch=branch[:255] if branch else None, channel=channel, ts=ts,
                    reply=json.dumps(reply), posted_at=now, shown="", changed_at=now))
        except IntegrityError:
            pass  # remembered already

    def failure_reply(self, build_id: str) -> FailureReply | None:
        with self._tx() as c:
            row = c.execute(sa.select(o).where(o.c.build_id == build_id)).mappings().first()
        return FailureReply.from_row(row) if row is not None else None

    def take_or_release(self, *, build_id: str, user_id: str, now: float) -> Took:
        """The click of ``user_id``: taken when nobody is on it, released when they are;
        otherwise nothing changes (someone else has it, or it is closed)."""
        with self._tx() as c:
            if c.execute(o.update().where(o.c.build_id == build_id, o.c.taker.is_(None),
                                          o.c.closed_at.is_(None))
                         .values(taker=user_id, taken_at=now, changed_at=now)).rowcount == 1:
                return Took.TAKEN
        with self._tx() as c:
            if c.execute(o.update().where(o.c.build_id == build_id, o.c.taker == user_id,
                                          o.c.closed_at.is_(None))
                         .values(taker=None, taken_at=None, changed_at=now)).rowcount == 1:
                return Took.RELEASED
        row = self.failure_reply(build_id)
        if row is None:
            return Took.MISSING
        return Took.CLOSED if row.closed_by is not None else Took.HELD

    def reply_shows(self, *, build_id: str, taker: str | None) -> None:
        """Slack took the edit showing ``taker`` (None: nobody) on the reply, while it is
        still the taker (a later click's edit is not marked done by an earlier one)."""
        same = o.c.taker.is_(None) if taker is None else o.c.taker == taker
        with self._tx() as c:
            c.execute(o.update().where(o.c.build_id == build_id, same)
                      .values(shown=taker or ""))

    def replies_to_edit(self, *, before: float, limit: int = 20) -> list[FailureReply]:
        """Failure replies whose taker changed before ``before`` and that do not show it
        yet: their edit was lost (its process died, or Slack would not take it)."""
        with self._tx() as c:
            rows = c.execute(sa.select(o).where(
                o.c.changed_at < before,
                sa.func.coalesce(o.c.shown, "") != sa.func.coalesce(o.c.taker, ""))
                .order_by(o.c.changed_at).limit(limit)).mappings()
            return [FailureReply.from_row(r) for r in rows]

    def close_claims(self, *, job_id: str, branch: str | None, build_no: str,
                     now: float) -> int:
        """A build of the job on ``branch`` succeeded: every open claim of an earlier build
        there closes, naming it. How many closed."""
        if not build_no.isdigit() or len(build_no) > 18:
            return 0
        with self._tx() as c:
            return int(c.execute(o.update().where(
                o.c.job_id == job_id, _branch_is(branch), o.c.build_number < int(build_no),
                o.c.closed_at.is_(None)).values(closed_by=build_no, closed_at=now)).rowcount)

    def claim_closed_by(self, job_id: str, branch: str | None, build_no: str) -> str | None:
        """Who was on the failure that the success ``build_no`` of the job on ``branch``
        closed (the latest such failure someone took); None when nobody was."""
        with self._tx() as c:
            return c.execute(sa.select(o.c.taker).where(
                o.c.job_id == job_id, _branch_is(branch), o.c.closed_by == build_no,
                o.c.taker.is_not(None)).order_by(o.c.build_number.desc()).limit(1)).scalar()

    def on_it_of(self, *, job_id: str, build_nos: list[str]) -> dict[str, str]:
        """Build number -> who is on it, for those of these builds someone took (open)."""
        if not build_nos:
            return {}
        with self._tx() as c:
            return {r.build_no: r.taker for r in c.execute(
                sa.select(o.c.build_no, o.c.taker).where(
                    o.c.job_id == job_id, o.c.build_no.in_(build_nos), o.c.taker.is_not(None),
                    o.c.closed_at.is_(None)))}
