"""Processes: one row per running bot process (``buildbot_processes``), and which died.

A process is an incarnation: a new id at every start. It beats every
``HEARTBEAT_EVERY`` seconds; one silent for ``DEAD_AFTER`` seconds is dead, and a clean
stop sets its beat to 0 so it is dead at once. What a dead process left open (a run call
it claimed, a channel post, a lease) is taken over by the other features' conditional
UPDATEs, which name ``_dead``; an owner with no row here is never taken for dead.
"""

from __future__ import annotations

import sqlalchemy as sa

from bot.store.base import StoreBase
from bot.store.schema import processes

HEARTBEAT_EVERY = 3.0  # seconds between two beats of a process
DEAD_AFTER = 15.0  # a process whose last beat is this old has died (or is frozen)


def _dead(now: float) -> sa.Select[tuple[str]]:
    """The processes that stopped beating (or stopped cleanly) by ``now``. An owner with
    no row (an older version, a test's store) is never taken for dead: the grace rules."""
    return sa.select(processes.c.id).where(processes.c.beat_at < now - DEAD_AFTER)


class ProcessQueries(StoreBase):
    """Processes: who is alive."""

    def beat(self, *, id: str, now: float, host: str, pid: int) -> None:
        """This process is alive at ``now`` (its row is made at the first beat)."""
        with self._tx() as c:
            if c.execute(processes.update().where(processes.c.id == id)
                         .values(beat_at=now)).rowcount == 0:
                c.execute(processes.insert().values(id=id, host=host[:255], pid=pid,
                                                    started_at=now, beat_at=now))

    def end_process(self, id: str) -> None:
        """This process stopped cleanly with nothing in flight: what it held is free now."""
        with self._tx() as c:
            c.execute(processes.update().where(processes.c.id == id).values(beat_at=0.0))

    def processes_alive(self, *, now: float) -> list[str]:
        with self._tx() as c:
            return list(c.execute(sa.select(processes.c.id).where(
                processes.c.beat_at >= now - DEAD_AFTER)).scalars())
