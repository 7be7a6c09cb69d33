""""Notify me" (issue 28): who asked for a direct message when a build ends, and each such
message sent once.

A click toggles a ``wanted`` row (insert, or delete while it is still ``wanted``). Once the
build's watch is done, whoever finds the row claims it with one conditional UPDATE
(``wanted`` -> ``sending``, its owner and a new ``tries``, which fences every later write),
records the DM conversation before posting, and marks it ``sent`` after. A claim whose
owner died (its heartbeat stopped) or that is older than any live post can last is claimed
again; the new holder looks in the DM conversation before posting again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from bot.lifecycle import WatchState
from bot.store.base import StoreBase
from bot.store.heartbeats import _dead
from bot.store.schema import builds, notify_requests

n = notify_requests


class NotifyState(StrEnum):
    WANTED = "wanted"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class Toggle(StrEnum):
    """What a Notify me click did."""

    ON = "on"  # asked: a DM will come
    OFF = "off"  # asked before: undone
    SENDING = "sending"  # the build ended: the DM is being (or was) sent; nothing changed


@dataclass(frozen=True)
class NotifyRow:
    build_id: str
    user_id: str
    state: NotifyState
    asked_at: float
    tries: int
    dm_channel: str | None

    @classmethod
    def from_row(cls, row: Any) -> NotifyRow:
        return cls(build_id=row["build_id"], user_id=row["user_id"],
                   state=NotifyState(row["state"]), asked_at=row["asked_at"],
                   tries=int(row["tries"] or 0), dm_channel=row["dm_channel"])


def _claimable(now: float, stale_after: float) -> sa.ColumnElement[bool]:
    """A row that may be claimed now: asked and not yet claimed, or claimed by an owner
    that died, handed back for a retry that is due, or claimed longer ago than any live
    post lasts."""
    return sa.or_(
        n.c.state == NotifyState.WANTED.value,
        sa.and_(n.c.state == NotifyState.SENDING.value, sa.or_(
            sa.and_(n.c.owner.is_(None), n.c.retry_at <= now),
            n.c.owner.in_(_dead(now)),
            n.c.claimed_at < now - stale_after)))


class NotifyQueries(StoreBase):
    """The rows of "Notify me"."""

    def toggle_notify(self, *, build_id: str, user_id: str, now: float) -> Toggle:
        """The click of ``user_id``: asked when they had not asked, undone when they had
        (and the DM is not on its way yet)."""
        with self._tx() as c:
            undone = c.execute(n.delete().where(
                n.c.build_id == build_id, n.c.user_id == user_id,
                n.c.state == NotifyState.WANTED.value)).rowcount
        if undone:
            return Toggle.OFF
        try:
            with self._tx() as c:
                c.execute(n.insert().values(build_id=build_id, user_id=user_id,
                                            state=NotifyState.WANTED.value, asked_at=now,
                                            tries=0))
        except IntegrityError:  # a row in another state (or a double click's twin)
            with self._tx() as c:
                state = c.execute(sa.select(n.c.state).where(
                    n.c.build_id == build_id, n.c.user_id == user_id)).scalar()
            return Toggle.ON if state in (None, NotifyState.WANTED.value) else Toggle.SENDING
        return Toggle.ON

    def notify_wanted(self, build_id: str, user_id: str) -> bool:
        """Whether ``user_id`` asked for a DM about this build (not sent yet)."""
        with self._tx() as c:
            return c.execute(sa.select(n.c.state).where(
                n.c.build_id == build_id, n.c.user_id == user_id)).scalar() is not None

    def notify_due(self, *, now: float, stale_after: float, build_id: str | None = None,
                   limit: int = 50) -> list[NotifyRow]:
        """Rows that may be claimed now, of builds whose watch is done (of one build, when
        ``build_id`` is given), the oldest asked first."""
        q = (sa.select(n).join(builds, builds.c.id == n.c.build_id)
             .where(builds.c.watch == WatchState.DONE.value, _claimable(now, stale_after))
             .order_by(n.c.asked_at).limit(limit))
        if build_id is not None:
            q = q.where(n.c.build_id == build_id)
        with self._tx() as c:
            return [NotifyRow.from_row(r) for r in c.execute(q).mappings()]

    def claim_notify(self, row: NotifyRow, *, now: float, stale_after: float) -> int | None:
        """Claim the row for this process (one caller wins): its new ``tries`` (the fence of
        every later write), or None when another caller took it or it changed."""
        tries = row.tries + 1
        with self._tx() as c:
            took = c.execute(n.update().where(
                n.c.build_id == row.build_id, n.c.user_id == row.user_id,
                n.c.tries == row.tries, _claimable(now, stale_after))
                .values(state=NotifyState.SENDING.value, owner=self.owner or "?",
                        claimed_at=now, retry_at=None, tries=tries)).rowcount
        return tries if took == 1 else None

    def _held(self, row: NotifyRow, tries: int) -> tuple[sa.ColumnElement[bool], ...]:
        return (n.c.build_id == row.build_id, n.c.user_id == row.user_id,
                n.c.tries == tries, n.c.state == NotifyState.SENDING.value)

    def set_notify_channel(self, row: NotifyRow, *, tries: int, channel: str) -> bool:
        """The DM conversation, recorded before the post (False: the claim was lost)."""
        with self._tx() as c:
            return c.execute(n.update().where(*self._held(row, tries))
                             .values(dm_channel=channel)).rowcount == 1

    def notify_sent(self, row: NotifyRow, *, tries: int, ts: str | None) -> bool:
        with self._tx() as c:
            return c.execute(n.update().where(*self._held(row, tries)).values(
                state=NotifyState.SENT.value, dm_ts=ts, owner=None)).rowcount == 1

    def notify_failed(self, row: NotifyRow, *, tries: int, error: str) -> bool:
        """Slack's final refusal (or given up): never tried again."""
        with self._tx() as c:
            return c.execute(n.update().where(*self._held(row, tries)).values(
                state=NotifyState.FAILED.value, error=error[:64], owner=None)).rowcount == 1

    def notify_later(self, row: NotifyRow, *, tries: int, retry_at: float) -> bool:
        """A passing refusal: handed back, claimable again at ``retry_at`` (the next holder
        looks in the DM conversation before posting)."""
        with self._tx() as c:
            return c.execute(n.update().where(*self._held(row, tries)).values(
                owner=None, retry_at=retry_at)).rowcount == 1

    def notify_rows(self, build_id: str) -> list[tuple[str, str]]:
        """(user, state) of every row of a build (status, tests)."""
        with self._tx() as c:
            return [(r.user_id, r.state) for r in c.execute(
                sa.select(n.c.user_id, n.c.state).where(n.c.build_id == build_id)
                .order_by(n.c.asked_at))]
