"""Builds and their watches: recorded, announced, leased, reported, progress.

``buildbot_builds`` has one row per build the bot follows; a build it started has its
request's id. ``record_build`` moves the request from sending to started, inserts the
build and its audit row in one transaction; if another process settled the request
first it raises ``AlreadySettled`` and nothing is written.

The channel message is announced once: the row is made ``posting``, claimed by the
process that started it (``announce_owner``); ``set_announced`` moves it to posted (the
message's ts) or fallback, once. Recovery re-claims a post only when its owner died or
has been at it longer than any live post lasts, each by exactly one caller.

The watch is a lease: ``lease_due`` gives each due build to one replica
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL), never one another live replica holds, and a
dead process's leases at once. Each lease gets a new fencing token (``lease_token``);
every write of a holder names it, so one that froze past its lease cannot write over
the next holder's work. The result is posted once: watching -> reporting (the holder's
conditional move, before it posts) -> done.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa

from bot.lifecycle import (
    AnnounceState,
    Build,
    Request,
    RequestState,
    WatchState,
    branch_of_body,
)
from bot.store.base import StoreBase
from bot.store.heartbeats import DEAD_AFTER, _dead
from bot.store.housekeeping import _INSERT_AUDIT, _audit_row
from bot.store.schema import _OURS, builds, processes, requests

# Built once: a statement made per call costs more to build and to key for SQLAlchemy's
# compiled cache than SQLite takes to run it (these are the per-command and per-poll ones).
_RESCHEDULE = (builds.update()
               .where(builds.c.id == sa.bindparam("b_id"),
                      builds.c.lease_owner == sa.bindparam("b_owner"))
               .values(next_check_at=sa.bindparam("b_next"), failures=sa.bindparam("b_failures"),
                       lease_until=None))
_RESCHEDULE_HELD = _RESCHEDULE.where(builds.c.lease_token == sa.bindparam("b_token"))
REPORT_GRACE = 180.0  # a result being posted is not taken over until this long past its lease


def _lease_due(postgres: bool) -> sa.Update:
    """``lease_due``'s statement, built once (it runs several times a second at scale): a
    lease is free when there is none, it has passed (a result being posted: ``grace``
    past), or its holder died."""
    now = sa.bindparam("l_now", type_=sa.Float)
    expired_before = sa.case((builds.c.watch == WatchState.REPORTING.value,
                              sa.bindparam("l_reporting_before", type_=sa.Float)), else_=now)
    dead = sa.select(processes.c.id).where(
        processes.c.beat_at < sa.bindparam("l_dead_before", type_=sa.Float))
    free = sa.or_(builds.c.lease_until.is_(None), builds.c.lease_until < expired_before,
                  builds.c.lease_owner.in_(dead))
    active = (WatchState.WATCHING.value, WatchState.REPORTING.value)
    due = (sa.select(builds.c.id)
           .where(builds.c.watch.in_(active), builds.c.next_check_at <= now, free,
                  builds.c.job_id.not_in(sa.bindparam("l_skip", expanding=True)))
           .order_by(builds.c.next_check_at).limit(sa.bindparam("l_limit", type_=sa.Integer)))
    if postgres:
        due = due.with_for_update(skip_locked=True)
    return (builds.update().where(builds.c.id.in_(due.scalar_subquery()), free)
            .values(lease_owner=sa.bindparam("l_owner"),
                    lease_until=sa.bindparam("l_until", type_=sa.Float),
                    lease_token=sa.func.coalesce(builds.c.lease_token, 0) + 1)
            .returning(*builds.c))


_LEASE_DUE, _LEASE_DUE_PG = _lease_due(False), _lease_due(True)


class Reschedule(NamedTuple):
    """A watched build's next check, written by its lease holder (``reschedule_many``)."""

    id: str
    owner: str
    token: int | None
    next_check_at: float
    failures: int


class AlreadySettled(Exception):
    """The request left ``sending`` in another process (a restart settled it) first."""


def _token(token: int | None) -> tuple[sa.ColumnElement[bool], ...]:
    return () if token is None else (builds.c.lease_token == token,)


class BuildQueries(StoreBase):
    """Builds: recorded, announced once, watched under a fenced lease, reported once."""

    # --- builds ---------------------------------------------------------------------------

    def record_build(self, *, request: Request, build_no: str, daily_build_number: str,
                     now: float, first_check_at: float) -> Build:
        """Mark the request started, open its watch, claim its announcement and audit it,
        in one transaction; return the new build."""
        build = {"id": request.id, "created_at": now, "user_id": request.user_id,
                 "channel_id": request.channel_id, "job_name": request.job_name,
                 "job_id": request.job_id, "build_no": build_no,
                 "daily_build_number": daily_build_number,
                 "response_url": request.response_url,
                 "announce": AnnounceState.POSTING.value, "announce_claimed_at": now,
                 "announce_owner": self.owner, "message_channel": None, "message_ts": None,
                 "watch": WatchState.WATCHING.value, "next_check_at": first_check_at,
                 "lease_owner": None, "lease_until": None, "lease_token": None,
                 "failures": 0, "result": None, "duration_ms": None, "finished_at": None,
                 "branch": branch_of_body(request.body)}
        with self._tx() as c:
            if not self._move(c, requests, requests.c.state, request.id, RequestState.SENDING,
                              RequestState.STARTED, {"updated_at": now}):
                raise AlreadySettled(request.id)  # another process settled it first
            c.execute(builds.insert().values(**build))
            c.execute(_INSERT_AUDIT, _audit_row(
                decision="started", now=now, request_id=request.id,
                user_id=request.user_id, channel_id=request.channel_id,
                job=request.job_name, parameters=request.body,
                daily_build_number=daily_build_number, build_no=build_no))
        return Build.from_row(build)

    def get_build(self, id: str) -> Build | None:
        with self._tx() as c:
            row = c.execute(sa.select(builds).where(builds.c.id == id)).mappings().first()
        return None if row is None else Build.from_row(row)

    def builds_by_number(self, *, job_id: str, build_nos: Collection[str]) -> dict[str, Build]:
        """The bot's own builds of a job among these CodeArts build numbers, by number."""
        if not build_nos:
            return {}
        with self._tx() as c:
            rows = c.execute(sa.select(builds).where(
                builds.c.job_id == job_id, builds.c.build_no.in_(list(build_nos)),
                _OURS)).mappings()
            found = [Build.from_row(r) for r in rows]
        return {b.build_no: b for b in sorted(found, key=lambda b: b.created_at)}

    def set_daily_build_number(self, *, id: str, daily_build_number: str) -> None:
        """CodeArts told the daily number only later (the run answer had none)."""
        with self._tx() as c:
            c.execute(builds.update().where(builds.c.id == id,
                                            builds.c.daily_build_number == "")
                      .values(daily_build_number=daily_build_number))

    def watching_count(self) -> int:
        with self._tx() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(builds)
                                 .where(builds.c.watch != WatchState.DONE.value)).scalar_one())

    # --- the channel message: announced once ----------------------------------------------

    def set_announced(self, *, id: str, channel: str | None, ts: str | None) -> bool:
        """posting -> posted (with the message's ts) or fallback (no ts); True if moved."""
        new = AnnounceState.POSTED if ts else AnnounceState.FALLBACK
        with self._tx() as c:
            return self._move(c, builds, builds.c.announce, id, AnnounceState.POSTING, new,
                              {"message_channel": channel, "message_ts": ts})

    def announce_failed(self, *, id: str, now: float, retry_in: float,
                        stale_after: float) -> bool:
        """This process's post of the channel message ended unconfirmed (429s, 5xx, no
        answer): hand it to recovery ``retry_in`` seconds from now (which looks in the
        channel before posting) instead of when a live post could still be under way."""
        with self._tx() as c:
            return c.execute(builds.update().where(
                builds.c.id == id, builds.c.announce == AnnounceState.POSTING.value,
                builds.c.announce_owner == self.owner)
                .values(announce_claimed_at=now + retry_in - stale_after)).rowcount == 1

    def claim_unannounced(self, *, now: float, stale_after: float) -> list[Build]:
        """Builds whose announcing process died (its heartbeat stopped) or has been at it
        longer than any live post lasts (claimed ``stale_after`` ago, still not posted),
        each re-claimed here by exactly one caller."""
        with self._tx() as c:
            stale = list(c.execute(sa.select(builds).where(
                builds.c.announce == AnnounceState.POSTING.value,
                sa.or_(builds.c.announce_claimed_at < now - stale_after,
                       builds.c.announce_owner.in_(_dead(now))))).mappings())
        mine = []
        for row in stale:
            with self._tx() as c:
                took = c.execute(builds.update().where(
                    builds.c.id == row["id"], builds.c.announce == AnnounceState.POSTING.value,
                    builds.c.announce_claimed_at == row["announce_claimed_at"])
                    .values(announce_claimed_at=now, announce_owner=self.owner)).rowcount == 1
            if took:
                mine.append(Build.from_row(row))
        return mine

    # --- watches: leased, fenced, rescheduled ---------------------------------------------

    def lease_due(self, *, owner: str, now: float, lease_seconds: float, limit: int,
                  skip_jobs: tuple[str, ...] = (), grace: float = REPORT_GRACE) -> list[Build]:
        """Lease up to ``limit`` due watches to ``owner``, the longest overdue first; never
        one another live replica holds, and a result being posted only once its holder's
        lease is ``grace`` seconds past; a dead process's leases at once. Each lease gets a
        new fencing token."""
        q = _LEASE_DUE_PG if self.postgres else _LEASE_DUE
        with self._tx() as c:
            rows = list(c.execute(q, {
                "l_now": now, "l_reporting_before": now - grace,
                "l_dead_before": now - DEAD_AFTER, "l_limit": limit, "l_skip": list(skip_jobs),
                "l_owner": owner, "l_until": now + lease_seconds}).mappings())
        rows.sort(key=lambda r: r["next_check_at"])
        return [Build.from_row({**r, "age": now - r["created_at"]}) for r in rows]

    def reschedule(self, *, id: str, owner: str, next_check_at: float, failures: int,
                   token: int | None = None) -> bool:
        q = _RESCHEDULE if token is None else _RESCHEDULE_HELD
        with self._tx() as c:
            return c.execute(q, {"b_id": id, "b_owner": owner, "b_next": next_check_at,
                                 "b_failures": failures, "b_token": token}).rowcount == 1

    def reschedule_many(self, rows: Sequence[Reschedule]) -> None:
        """``reschedule`` for several builds (one job's poll) in one transaction: each row
        is written only by its lease holder, as one by one."""
        if not rows:
            return
        held = [{"b_id": r.id, "b_owner": r.owner, "b_next": r.next_check_at,
                 "b_failures": r.failures, "b_token": r.token} for r in rows
                if r.token is not None]
        unfenced = [{"b_id": r.id, "b_owner": r.owner, "b_next": r.next_check_at,
                     "b_failures": r.failures} for r in rows if r.token is None]
        with self._tx() as c:
            if held:
                c.execute(_RESCHEDULE_HELD, held)
            if unfenced:
                c.execute(_RESCHEDULE, unfenced)

    def release(self, *, id: str, owner: str, token: int | None) -> bool:
        """Give a lease back untouched (the watcher took more than it may run now)."""
        with self._tx() as c:
            return c.execute(builds.update().where(
                builds.c.id == id, builds.c.lease_owner == owner, *_token(token))
                .values(lease_owner=None, lease_until=None)).rowcount == 1

    def still_held(self, *, id: str, owner: str, token: int | None, now: float,
                   lease_seconds: float) -> bool:
        """Right before posting: is this lease still ours? Renews it if so. A fenced lease
        (``token``) is ours while nobody leased the build since, even past its time: every
        new lease takes a new token, so a holder that waited longer than its lease (behind
        Slack's budget, with results queued at 50 updates a minute) renews it instead of
        dropping the result it was about to post. An unfenced lease must still be live."""
        live = () if token is not None else (builds.c.lease_until > now,)
        with self._tx() as c:
            return c.execute(builds.update().where(
                builds.c.id == id, builds.c.lease_owner == owner, *live,
                *_token(token)).values(lease_until=now + lease_seconds)).rowcount == 1

    # --- reports and progress -------------------------------------------------------------

    def begin_report(self, *, id: str, owner: str, result: str, duration_ms: int | None,
                     now: float, token: int | None = None) -> bool:
        """Move watching -> reporting for the lease holder; only then may it post the result."""
        with self._tx() as c:
            return self._move(c, builds, builds.c.watch, id, WatchState.WATCHING,
                              WatchState.REPORTING,
                              {"result": result, "duration_ms": duration_ms, "finished_at": now},
                              builds.c.lease_owner == owner, *_token(token))

    def finish_report(self, *, id: str, owner: str | None = None,
                      token: int | None = None) -> bool:
        """reporting -> done (for the lease holder, when ``owner`` is given)."""
        held = () if owner is None else (builds.c.lease_owner == owner, *_token(token))
        with self._tx() as c:
            return self._move(c, builds, builds.c.watch, id, WatchState.REPORTING,
                              WatchState.DONE, {"lease_owner": None, "lease_until": None},
                              *held)

    def set_progress(self, *, id: str, owner: str, token: int | None, due_at: float,
                     text: str | None = None) -> bool:
        """After a progress update (``text`` shown) or a refused one (``text`` None: only
        the next time moves): for the lease holder only, while the build is watched."""
        values: dict[str, Any] = {"progress_due_at": due_at}
        if text is not None:
            values["progress_text"] = text
        with self._tx() as c:
            return c.execute(builds.update().where(
                builds.c.id == id, builds.c.lease_owner == owner,
                builds.c.watch == WatchState.WATCHING.value, *_token(token))
                .values(values)).rowcount == 1
