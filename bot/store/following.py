"""Following: subscriptions, job watches, and the webhook's nudge.

A subscription (``buildbot_subscriptions``: channel, job, filter all | failures)
announces the job's builds started outside Slack (issue 16); ``since_no`` is the build
number up to which its history was looked at. Each subscribed job has one
``buildbot_job_watch`` row, leased like a build (one live holder, a new fencing token
per lease, every write naming it), whose holder reads the job's history once per
interval however many channels subscribe. Each new build is recorded once per channel:
a ``buildbot_builds`` row with origin "subscription", unique on (job, build number,
channel), so a second insert (another replica, a restart) does nothing.

The webhook's nudge brings due times forward: one conditional UPDATE that only moves
checks earlier and leaves every lease as it is.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as _pg_insert
from sqlalchemy.dialects.sqlite import insert as _sqlite_insert

from bot.codearts.answers import BuildRecord
from bot.lifecycle import (
    ORIGIN_SUBSCRIPTION,
    AnnounceState,
    Build,
    RequestState,
    Subscription,
    WatchState,
)
from bot.store.base import StoreBase
from bot.store.heartbeats import _dead
from bot.store.housekeeping import _INSERT_AUDIT, _audit_row
from bot.store.schema import _OURS, builds, job_watch, requests, subscriptions


class FollowingQueries(StoreBase):
    """Following: subscriptions, job watches, builds found, the webhook's nudge."""

    # --- subscriptions --------------------------------------------------------------------

    def subscribe(self, *, channel_id: str, job_name: str, job_id: str, filter: str,
                  user_id: str, now: float, since_no: int | None,
                  branch: str | None = None) -> tuple[str, str | None] | None:
        """Subscribe the channel to the job (or replace its mode and branch filter: one
        subscription per job and channel); opens the job's watch. Returns the mode and
        filter it had before (None: it is new)."""
        insert = (_pg_insert if self.postgres else _sqlite_insert)
        where = (subscriptions.c.channel_id == channel_id, subscriptions.c.job_name == job_name)
        had = sa.select(subscriptions.c.filter, subscriptions.c.branch).where(*where)
        with self._tx() as c:
            before = c.execute(had).first()
            if before is None:
                added = c.execute(insert(subscriptions).values(
                    channel_id=channel_id, job_name=job_name, job_id=job_id, filter=filter,
                    created_by=user_id, created_at=now, since_no=since_no, branch=branch)
                    .on_conflict_do_nothing().returning(subscriptions.c.id)).first() is not None
                if not added:  # another replica made it a moment ago
                    before = c.execute(had).first()
            if before is not None:
                c.execute(subscriptions.update().where(*where)
                          .values(filter=filter, job_id=job_id, branch=branch))
            c.execute(insert(job_watch).values(job_id=job_id, next_check_at=now, failures=0)
                      .on_conflict_do_nothing(index_elements=["job_id"]))
        return None if before is None else (str(before[0]), before[1])

    def unsubscribe(self, *, channel_id: str, job_name: str) -> bool:
        """End the channel's subscription to the job; True if there was one."""
        with self._tx() as c:
            return c.execute(subscriptions.delete().where(
                subscriptions.c.channel_id == channel_id,
                subscriptions.c.job_name == job_name)).rowcount == 1

    def subscriptions_of(self, *, channel_id: str | None = None,
                         job_id: str | None = None) -> list[Subscription]:
        q = sa.select(subscriptions).order_by(subscriptions.c.job_name, subscriptions.c.id)
        if channel_id is not None:
            q = q.where(subscriptions.c.channel_id == channel_id)
        if job_id is not None:
            q = q.where(subscriptions.c.job_id == job_id)
        with self._tx() as c:
            return [Subscription.from_row(r) for r in c.execute(q).mappings()]

    def advance_since(self, *, id: int, to: int) -> None:
        """Builds up to number ``to`` have been looked at for this subscription."""
        with self._tx() as c:
            c.execute(subscriptions.update().where(
                subscriptions.c.id == id,
                sa.or_(subscriptions.c.since_no.is_(None), subscriptions.c.since_no < to))
                .values(since_no=to))

    def subscribed_jobs(self, job_ids: Collection[str]) -> set[str]:
        """Those of these build task IDs that a channel subscribes to."""
        if not job_ids:
            return set()
        with self._tx() as c:
            return set(c.execute(sa.select(subscriptions.c.job_id).distinct().where(
                subscriptions.c.job_id.in_(list(job_ids)))).scalars())

    # --- job watches: leased, fenced, rescheduled -----------------------------------------

    def lease_job_watches(self, *, owner: str, now: float, lease_seconds: float,
                          limit: int) -> list[tuple[str, int, float]]:
        """Lease up to ``limit`` due watches of subscribed jobs, the longest overdue first,
        never one another live replica holds; returns (job ID, fencing token, due time)."""
        free = sa.or_(job_watch.c.lease_until.is_(None), job_watch.c.lease_until < now,
                      job_watch.c.lease_owner.in_(_dead(now)))
        wanted = sa.exists().where(subscriptions.c.job_id == job_watch.c.job_id)
        due = (sa.select(job_watch.c.job_id)
               .where(job_watch.c.next_check_at <= now, free, wanted)
               .order_by(job_watch.c.next_check_at).limit(limit))
        if self.postgres:
            due = due.with_for_update(skip_locked=True)
        q = (job_watch.update().where(job_watch.c.job_id.in_(due.scalar_subquery()), free)
             .values(lease_owner=owner, lease_until=now + lease_seconds,
                     lease_token=sa.func.coalesce(job_watch.c.lease_token, 0) + 1)
             .returning(job_watch.c.job_id, job_watch.c.lease_token,
                        job_watch.c.next_check_at))
        with self._tx() as c:
            return [(str(r[0]), int(r[1]), float(r[2])) for r in c.execute(q)]

    def reschedule_job_watch(self, *, job_id: str, owner: str, token: int,
                             next_check_at: float, failures: int = 0) -> bool:
        with self._tx() as c:
            return c.execute(job_watch.update().where(
                job_watch.c.job_id == job_id, job_watch.c.lease_owner == owner,
                job_watch.c.lease_token == token)
                .values(next_check_at=next_check_at, failures=failures,
                        lease_until=None)).rowcount == 1

    def job_watch_failures(self, job_id: str) -> int:
        with self._tx() as c:
            return int(c.execute(sa.select(job_watch.c.failures).where(
                job_watch.c.job_id == job_id)).scalar() or 0)

    # --- builds a subscription found ------------------------------------------------------

    def slack_numbers(self, *, job_id: str,
                      build_nos: Collection[str]) -> dict[str, tuple[str, str]]:
        """Those of these build numbers that the bot started (or adopted) from Slack: the
        channel and the requester of each."""
        if not build_nos:
            return {}
        with self._tx() as c:
            return {str(r[0]): (str(r[1]), str(r[2])) for r in c.execute(sa.select(
                builds.c.build_no, builds.c.channel_id, builds.c.user_id).where(
                builds.c.job_id == job_id, builds.c.build_no.in_(list(build_nos)),
                _OURS))}

    def followed_by_number(self, *, job_id: str,
                           build_nos: Collection[str]) -> dict[str, Build]:
        """Builds of the job a subscription follows (in any channel), by number: what their
        record said (daily number, who started them) for ``/build status``."""
        if not build_nos:
            return {}
        with self._tx() as c:
            rows = c.execute(sa.select(builds).where(
                builds.c.job_id == job_id, builds.c.build_no.in_(list(build_nos)),
                builds.c.origin == ORIGIN_SUBSCRIPTION)).mappings()
            found = [Build.from_row(r) for r in rows]
        # the row that knows most (a daily number) wins
        return {b.build_no: b for b in sorted(found, key=lambda b: bool(b.daily_build_number))}

    def followed_numbers(self, *, job_id: str, channel_id: str,
                         build_nos: Collection[str]) -> set[str]:
        """Those of these build numbers already followed in this channel."""
        if not build_nos:
            return set()
        with self._tx() as c:
            return {str(n) for n in c.execute(sa.select(builds.c.build_no).where(
                builds.c.job_id == job_id, builds.c.channel_id == channel_id,
                builds.c.build_no.in_(list(build_nos)),
                builds.c.origin == ORIGIN_SUBSCRIPTION)).scalars()}

    def sending_since(self, job_id: str) -> float | None:
        """When the oldest run call of this job still in flight was claimed (its build may be
        in the history already, not yet recorded as ours); None when there is none."""
        with self._tx() as c:
            found = c.execute(sa.select(sa.func.min(requests.c.updated_at)).where(
                requests.c.job_id == job_id,
                requests.c.state == RequestState.SENDING.value)).scalar()
        return None if found is None else float(found)

    def follow_build(self, *, job_id: str, job_name: str, build_no: str, channel_id: str,
                     notify: str, now: float, first_check_at: float,
                     record: BuildRecord | None = None) -> Build | None:
        """Record a build a subscription found, once per (job, build number, channel): the
        unique index makes a second insert (another replica, a restart) do nothing.
        ``all`` claims its announcement (posting); ``failures`` has none (fallback).
        ``record``: its build-info record (daily number, branch, who started it), kept."""
        record = record or BuildRecord()
        announce = AnnounceState.POSTING if notify == "all" else AnnounceState.FALLBACK
        row: dict[str, Any] = {
            "id": uuid.uuid4().hex, "created_at": now, "user_id": "", "channel_id": channel_id,
            "job_name": job_name, "job_id": job_id, "build_no": build_no,
            "daily_build_number": record.daily_build_number or "", "response_url": None,
            "announce": announce.value,
            "announce_claimed_at": now, "announce_owner": self.owner,
            "message_channel": None, "message_ts": None,
            "watch": WatchState.WATCHING.value, "next_check_at": first_check_at,
            "lease_owner": None, "lease_until": None, "lease_token": None, "failures": 0,
            "result": None, "duration_ms": None, "finished_at": None,
            "origin": ORIGIN_SUBSCRIPTION, "notify": notify, "branch": record.code_branch,
            "started_by": record.executor, "trigger": record.trigger}
        insert = (_pg_insert if self.postgres else _sqlite_insert)(builds)
        with self._tx() as c:
            if c.execute(insert.values(**row).on_conflict_do_nothing()
                         .returning(builds.c.id)).first() is None:
                return None  # (rowcount is not reliable for an upsert on every driver)
            c.execute(_INSERT_AUDIT, _audit_row(
                decision="followed", now=now, request_id=row["id"], channel_id=channel_id,
                job=job_name, build_no=build_no, detail=f"subscription: {notify}"))
        return Build.from_row(row)

    # --- ``changes``: the branch of earlier builds, and a flip settled once ---------------

    def known_branches(self, *, job_id: str,
                       build_nos: Collection[str]) -> dict[str, tuple[str, str]]:
        """The branch and daily number the bot knows of these builds (from any of its
        rows: a followed build's record, a build of ours' codeBranch parameter)."""
        if not build_nos:
            return {}
        found: dict[str, tuple[str, str]] = {}
        with self._tx() as c:
            for no, branch, daily in c.execute(sa.select(
                    builds.c.build_no, builds.c.branch, builds.c.daily_build_number).where(
                    builds.c.job_id == job_id, builds.c.build_no.in_(list(build_nos)),
                    builds.c.branch.is_not(None))):
                if str(no) not in found or (daily and not found[str(no)][1]):
                    found[str(no)] = (str(branch), str(daily or ""))
        return found

    def open_changes_below(self, *, job_id: str, channel_id: str, build_no: str) -> list[str]:
        """The numbers of this channel's ``changes`` builds of the job, older than this one,
        whose report is not done yet (their flips are said first)."""
        with self._tx() as c:
            found = c.execute(sa.select(builds.c.build_no).where(
                builds.c.job_id == job_id, builds.c.channel_id == channel_id,
                builds.c.origin == ORIGIN_SUBSCRIPTION, builds.c.notify == "changes",
                builds.c.watch != WatchState.DONE.value)).scalars()
            return [str(n) for n in found if str(n).isdigit() and build_no.isdigit()
                    and int(n) < int(build_no)]

    def settle_flip(self, *, id: str, flip: str) -> str:
        """What the end of a ``changes`` build meant, settled once: the first answer is
        kept (a conditional UPDATE), so a retry after a crash posts the same. Returns the
        kept one."""
        with self._tx() as c:
            c.execute(builds.update().where(builds.c.id == id, builds.c.flip.is_(None))
                      .values(flip=flip))
            kept = c.execute(sa.select(builds.c.flip).where(builds.c.id == id)).scalar()
        return str(kept if kept is not None else flip)

    # --- the webhook's nudge --------------------------------------------------------------

    def make_due(self, *, at: float, job_ids: Collection[str] | None = None) -> int:
        """Followed builds (of these jobs, or all) checked next at ``at`` instead of later:
        one conditional UPDATE that only brings checks forward and leaves every lease as
        it is (a build being checked right now keeps its holder). Returns how many moved."""
        q = builds.update().where(builds.c.watch == WatchState.WATCHING.value,
                                  builds.c.next_check_at > at)
        if job_ids is not None:
            if not job_ids:
                return 0
            q = q.where(builds.c.job_id.in_(list(job_ids)))
        with self._tx() as c:
            return int(c.execute(q.values(next_check_at=at)).rowcount)

    def make_jobs_due(self, *, at: float, job_ids: Collection[str] | None = None) -> int:
        """Subscribed jobs' history read at ``at`` instead of later (the webhook nudge)."""
        q = job_watch.update().where(job_watch.c.next_check_at > at)
        if job_ids is not None:
            if not job_ids:
                return 0
            q = q.where(job_watch.c.job_id.in_(list(job_ids)))
        with self._tx() as c:
            return int(c.execute(q.values(next_check_at=at)).rowcount)

    def followed_jobs(self, job_ids: Collection[str]) -> set[str]:
        """Those of these build task IDs that have a build being followed."""
        if not job_ids:
            return set()
        with self._tx() as c:
            return set(c.execute(sa.select(builds.c.job_id).distinct().where(
                builds.c.watch == WatchState.WATCHING.value,
                builds.c.job_id.in_(list(job_ids)))).scalars())
