"""Limits: a job's max_running (its slot row) and the hourly per-user limit.

``buildbot_job_slots`` has one row per job with a max_running. Every decision that may
start a build of such a job (a Run click, an approval, a queued request's turn) locks
the job's slot row first (FOR UPDATE on PostgreSQL by the UPDATE itself; on SQLite the
UPDATE takes the database's write lock), then counts the running builds and moves the
request in the same transaction: on any number of replicas, never more builds start
than the limit allows. The hourly limit counts a user's builds of a job started in the
last hour and their requests on the way to one; a claim checks it in the same UPDATE,
under the same lock, so two clicks at once count each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as _pg_insert
from sqlalchemy.dialects.sqlite import insert as _sqlite_insert
from sqlalchemy.engine import Connection

from bot.lifecycle import HOUR, Build, RequestState, WatchState
from bot.store.base import StoreBase
from bot.store.schema import _OURS, builds, job_slots, requests

# requests on their way to a build: they count against the per-user limit
_ON_THE_WAY = (RequestState.AWAITING.value, RequestState.SENDING.value,
               RequestState.QUEUED.value)


@dataclass(frozen=True)
class Slots:
    """A job's limit on builds running at once (``max_running``), and how many of its
    builds CodeArts says run that this bot did not start (they count too)."""

    job_name: str
    limit: int
    elsewhere: int = 0
    note: str = ""  # for the question: "unknown" (CodeArts could not say), or the build
    # CodeArts says runs that is not ours


class LimitQueries(StoreBase):
    """The per-user limit, and a job's running builds counted under its slot lock."""

    # --- the per-user limit ---------------------------------------------------------------

    def _in_window(self, user_id: str, job_name: str, now: float) -> tuple[Any, Any]:
        """Two selects: this user's builds of the job started in the last hour, and their
        requests of it on the way to a build (awaiting approval or being sent)."""
        started = sa.select(builds.c.created_at).where(
            builds.c.user_id == user_id, builds.c.job_name == job_name,
            builds.c.created_at > now - HOUR)
        flying = sa.select(requests.c.id).where(
            requests.c.user_id == user_id, requests.c.job_name == job_name,
            requests.c.state.in_(_ON_THE_WAY))
        return started, flying

    def _under_limit(self, user_id: str, limit: tuple[str, int], now: float,
                     id: str) -> sa.ColumnElement[bool]:
        job_name, per_hour = limit
        started, _ = self._in_window(user_id, job_name, now)
        other = requests.alias("other")  # the row being updated is not one of them
        flying = sa.select(other.c.id).where(
            other.c.user_id == user_id, other.c.job_name == job_name,
            other.c.state.in_(_ON_THE_WAY),
            other.c.id != id)
        count = (sa.select(sa.func.count()).select_from(started.subquery()).scalar_subquery()
                 + sa.select(sa.func.count()).select_from(flying.subquery()).scalar_subquery())
        return count < per_hour

    def recent_starts(self, *, user_id: str, job_name: str, now: float) -> list[float]:
        """When this user's builds of the job started in the last hour; a request on its
        way to a build (awaiting approval, being sent) counts as starting now."""
        started, flying = self._in_window(user_id, job_name, now)
        with self._tx() as c:
            times = [float(t) for t in c.execute(started).scalars()]
            times += [now for _ in c.execute(flying).scalars()]
        return times

    # --- a job's max_running: its slot ----------------------------------------------------

    def _lock_slot(self, c: Connection, job_name: str, now: float) -> None:
        insert = (_pg_insert if self.postgres else _sqlite_insert)(job_slots)
        c.execute(insert.values(job_name=job_name, locked_at=now)
                  .on_conflict_do_nothing(index_elements=["job_name"]))
        c.execute(job_slots.update().where(job_slots.c.job_name == job_name)
                  .values(locked_at=now))

    @staticmethod
    def _running_query(job_name: str) -> Any:
        """How many builds of the job run now: started and still watched (the build has
        not ended), plus requests being sent (a run call in flight)."""
        started = (sa.select(sa.func.count()).select_from(builds)
                   .where(builds.c.job_name == job_name, _OURS,
                          builds.c.watch == WatchState.WATCHING.value).scalar_subquery())
        sending = (sa.select(sa.func.count()).select_from(requests)
                   .where(requests.c.job_name == job_name,
                          requests.c.state == RequestState.SENDING.value).scalar_subquery())
        return sa.select(started + sending)

    def _running(self, c: Connection, job_name: str) -> int:
        return int(c.execute(self._running_query(job_name)).scalar_one())

    def _slots_full(self, c: Connection, slots: Slots, now: float) -> bool:
        self._lock_slot(c, slots.job_name, now)
        return self._running(c, slots.job_name) + slots.elsewhere >= slots.limit

    def running_count(self, job_name: str) -> int:
        """Builds of the job running now (no lock: for what a question shows)."""
        with self._tx() as c:
            return self._running(c, job_name)

    def has_build(self, *, job_id: str, build_no: str) -> bool:
        """Did this bot start (or adopt) this build?"""
        with self._tx() as c:
            return c.execute(sa.select(builds.c.id).where(
                builds.c.job_id == job_id, builds.c.build_no == build_no,
                _OURS)).first() is not None

    def running_builds(self, job_name: str, limit: int = 5) -> list[Build]:
        """The job's builds still running, the newest first (for what a question shows)."""
        with self._tx() as c:
            rows = c.execute(sa.select(builds).where(
                builds.c.job_name == job_name, builds.c.watch == WatchState.WATCHING.value,
                _OURS).order_by(builds.c.created_at.desc()).limit(limit)).mappings()
            return [Build.from_row(r) for r in rows]
