"""The queue: requests waiting for a free slot of their job, first come first served.

A queued request is a ``buildbot_requests`` row in state ``queued``, ``queued_at`` when
it joined (its place: FIFO per job, then by id), open until ``expires_at``. When a slot
frees, ``claim_next_queued`` counts the job's running builds and moves its oldest queued
request to sending under the job's slot lock (see limits.py), in one transaction: each
free slot starts one request, and each request starts once, on any number of replicas.
Leaving the queue and expiring are conditional moves that one caller makes.
"""

from __future__ import annotations

from dataclasses import replace

import sqlalchemy as sa

from bot.lifecycle import Request, RequestState
from bot.store.confirmations import RequestQueries
from bot.store.limits import Slots
from bot.store.schema import requests


class QueueQueries(RequestQueries):
    """The queue: its next request's turn, its order, leaving it, expiring in it."""

    def claim_next_queued(self, *, slots: Slots, now: float) -> Request | None:
        """The oldest queued request of the job, moved to sending when the job has a free
        slot: counted and moved under the slot lock, so on any number of replicas each
        free slot starts one request, and each request starts once."""
        with self._tx() as c:
            if self._slots_full(c, slots, now):
                return None
            row = c.execute(sa.select(requests).where(
                requests.c.job_name == slots.job_name,
                requests.c.state == RequestState.QUEUED.value, requests.c.expires_at > now)
                .order_by(requests.c.queued_at, requests.c.id).limit(1)).mappings().first()
            if row is None or not self._move(c, requests, requests.c.state, row["id"],
                                             RequestState.QUEUED, RequestState.SENDING,
                                             {"updated_at": now}):
                return None
        return replace(Request.from_row(row), state=RequestState.SENDING)

    def queued_jobs(self, *, now: float) -> list[str]:
        """The jobs with a request waiting in the queue (not past its time)."""
        with self._tx() as c:
            return [str(j) for j in c.execute(sa.select(requests.c.job_name).where(
                requests.c.state == RequestState.QUEUED.value, requests.c.expires_at > now)
                .distinct()).scalars()]

    def queue_of(self, job_name: str) -> list[Request]:
        """The job's queue, first in line first."""
        with self._tx() as c:
            rows = c.execute(sa.select(requests).where(
                requests.c.job_name == job_name, requests.c.state == RequestState.QUEUED.value)
                .order_by(requests.c.queued_at, requests.c.id)).mappings()
            return [Request.from_row(r) for r in rows]

    def queue_position(self, id: str) -> int | None:
        """1 for the first in line; None when the request is not queued."""
        found = self.get_request(id)
        if found is None or found.state is not RequestState.QUEUED:
            return None
        ids = [r.id for r in self.queue_of(found.job_name)]
        return ids.index(id) + 1 if id in ids else None

    def leave_queue(self, *, id: str, user_id: str, now: float) -> bool:
        """queued -> withdrawn, by its requester, while it is open; True when this call
        made the move."""
        with self._tx() as c:
            return self._move(c, requests, requests.c.state, id, RequestState.QUEUED,
                              RequestState.WITHDRAWN, {"updated_at": now},
                              requests.c.user_id == user_id, requests.c.expires_at > now)

    def expire_queued(self, *, now: float) -> list[Request]:
        """Queued requests past their time that this call expired (each once)."""
        with self._tx() as c:
            due = list(c.execute(sa.select(requests).where(
                requests.c.state == RequestState.QUEUED.value,
                requests.c.expires_at <= now)).mappings())
        return [Request.from_row(r) for r in due
                if self.move_request(id=r["id"], old=RequestState.QUEUED,
                                     new=RequestState.EXPIRED, now=now)]
