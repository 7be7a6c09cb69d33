"""The App Home (issue 29): who opened it, when it may next be published, and whether
what it shows changed.

One ``buildbot_home_tabs`` row per person who opened the bot's Home. Publishing is
claimed with one conditional UPDATE (``claim_home``): only when the row is due
(``next_at`` passed) and something is to show (``dirty`` or an unconfirmed
``publishing``); the claim moves ``next_at`` on by the interval, so on any number of
replicas a person's Home is published at most once per interval. The claim records the
intent (``publishing``) before the ``views.publish``; ``home_published`` confirms it. A
process that dies in between leaves ``publishing`` set, and the next claim (after the
interval) publishes again. The state shown is read after the claim, so it is always the
current one: never a queue of old views.

What marks a Home dirty is the data itself (``mark_changed``): one UPDATE that flags each
Home whose person has a request or build that changed since it was last published, or
that may approve a request of a job that changed. It needs no hook in the code that makes
the changes, and catches changes made by any replica.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from bot.lifecycle import Build, Request, RequestState
from bot.store.base import StoreBase
from bot.store.schema import _OURS, builds, home_tabs, requests

HOME_KEEP = 24 * 3600.0  # a Home opened longer ago than this is no longer kept fresh


class HomeQueries(StoreBase):
    """Who has a Home, when it may be published, what changed, and what it shows."""

    def home_opened(self, *, user_id: str, team_id: str | None, now: float) -> None:
        """The person opened their Home: it is dirty (shown again when its turn comes)."""
        with self._tx() as c:
            if c.execute(home_tabs.update().where(home_tabs.c.user_id == user_id).values(
                    opened_at=now, dirty=True)).rowcount == 1:
                return
        try:
            with self._tx() as c:
                c.execute(home_tabs.insert().values(
                    user_id=user_id, team_id=team_id, opened_at=now, seen_at=0.0, next_at=0.0,
                    dirty=True, publishing=False, approves=""))
        except IntegrityError:  # another replica added it a moment ago: mark it
            with self._tx() as c:
                c.execute(home_tabs.update().where(home_tabs.c.user_id == user_id).values(
                    opened_at=now, dirty=True))

    def claim_home(self, *, user_id: str, now: float, every: float) -> bool:
        """Take this person's publishing turn: True for the one caller (on any replica)
        that moved ``next_at`` on; False when it is not due or shows nothing new."""
        with self._tx() as c:
            return c.execute(home_tabs.update().where(
                home_tabs.c.user_id == user_id, home_tabs.c.next_at <= now,
                sa.or_(home_tabs.c.dirty.is_(True), home_tabs.c.publishing.is_(True)),
            ).values(next_at=now + every, seen_at=now, dirty=False,
                     publishing=True)).rowcount == 1

    def home_published(self, *, user_id: str, approves: Sequence[str], ok: bool) -> None:
        """After a publish: confirmed (``ok``), or given up this turn (dirty again, so the
        next turn tries again). ``approves``: the jobs this person may approve."""
        values: dict[str, object] = {"publishing": False,
                                     "approves": _spaced(approves)}
        if not ok:
            values["dirty"] = True
        with self._tx() as c:
            c.execute(home_tabs.update().where(home_tabs.c.user_id == user_id).values(values))

    def due_homes(self, *, now: float, limit: int = 50) -> list[str]:
        """People whose Home is due and has something new, longest waiting first."""
        with self._tx() as c:
            return list(c.execute(sa.select(home_tabs.c.user_id).where(
                home_tabs.c.next_at <= now,
                sa.or_(home_tabs.c.dirty.is_(True), home_tabs.c.publishing.is_(True)),
            ).order_by(home_tabs.c.next_at).limit(limit)).scalars())

    def mark_changed(self, *, now: float) -> int:
        """Flag every kept Home whose person's requests or builds changed since it was
        published, or a request they may approve changed; returns how many."""
        h = home_tabs.c
        own_request = sa.exists().where(requests.c.user_id == h.user_id,
                                        requests.c.updated_at > h.seen_at)
        own_build = sa.exists().where(builds.c.user_id == h.user_id, _OURS,
                                      sa.or_(builds.c.created_at > h.seen_at,
                                             builds.c.finished_at > h.seen_at))
        to_approve = sa.exists().where(
            requests.c.updated_at > h.seen_at, requests.c.approvals_needed.is_not(None),
            h.approves.like(sa.literal("% ") + requests.c.job_name + sa.literal(" %")))
        with self._tx() as c:
            return int(c.execute(home_tabs.update().where(
                h.dirty.is_(False), h.opened_at > now - HOME_KEEP,
                sa.or_(own_request, own_build, to_approve)).values(dirty=True)).rowcount)

    def home_team(self, user_id: str) -> str | None:
        with self._tx() as c:
            return c.execute(sa.select(home_tabs.c.team_id).where(
                home_tabs.c.user_id == user_id)).scalar()

    # --- what a Home shows ----------------------------------------------------------------

    def awaiting_requests(self, *, now: float, job_names: Sequence[str],
                          limit: int = 500) -> list[Request]:
        """Open requests awaiting approval of these jobs, oldest first."""
        if not job_names:
            return []
        with self._tx() as c:
            rows = c.execute(sa.select(requests).where(
                requests.c.state == RequestState.AWAITING.value, requests.c.expires_at > now,
                requests.c.job_name.in_(list(job_names)),
            ).order_by(requests.c.created_at).limit(limit)).mappings()
            return [Request.from_row(r) for r in rows]

    def waiting_requests_of(self, user_id: str, limit: int = 500) -> list[Request]:
        """This person's requests waiting for a slot (queued) or an approval."""
        with self._tx() as c:
            rows = c.execute(sa.select(requests).where(
                requests.c.user_id == user_id,
                requests.c.state.in_((RequestState.QUEUED.value, RequestState.AWAITING.value)),
            ).order_by(requests.c.created_at).limit(limit)).mappings()
            return [Request.from_row(r) for r in rows]

    def builds_of(self, user_id: str, *, running: bool, limit: int) -> tuple[list[Build], int]:
        """This person's running (no result yet) or finished builds, newest first: up to
        ``limit`` of them, and how many there are."""
        done = builds.c.result.is_(None) if running else builds.c.result.is_not(None)
        where = (builds.c.user_id == user_id, _OURS, done)
        order = builds.c.created_at if running else builds.c.finished_at
        with self._tx() as c:
            count = int(c.execute(sa.select(sa.func.count()).select_from(builds).where(
                *where)).scalar() or 0)
            rows = c.execute(sa.select(builds).where(*where).order_by(
                order.desc()).limit(limit)).mappings()
            return [Build.from_row(r) for r in rows], count

    def permalinks(self, ids: Sequence[str]) -> dict[str, str]:
        """The channel messages' permalinks already asked for, by build id."""
        if not ids:
            return {}
        with self._tx() as c:
            return {r.id: r.permalink for r in c.execute(sa.select(
                builds.c.id, builds.c.permalink).where(
                builds.c.id.in_(list(ids)), builds.c.permalink.is_not(None)))}

    def set_permalink(self, *, id: str, permalink: str) -> None:
        with self._tx() as c:
            c.execute(builds.update().where(builds.c.id == id).values(permalink=permalink))


def _spaced(names: Sequence[str]) -> str:
    """`` a b `` (each name once, space-separated, with a space either side) or ``""``."""
    return f" {' '.join(sorted(set(names)))} " if names else ""
