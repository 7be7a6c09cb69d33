"""Runs of the Workflow Builder step (``buildbot_function_runs``, bot.workflow).

Each run is one row keyed by Slack's ``function_execution_id``: recording it twice is
refused by the primary key, so an event Slack delivers again starts nothing. Its
completion (``functions.completeSuccess`` / ``completeError``) happens once: a
conditional UPDATE ``open -> completing`` (or a ``completing`` claim older than the
grace, whose process died before it could say) is the intent, made before the call;
``completing -> done`` after it, by the claim's holder only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from bot.store.base import StoreBase
from bot.store.schema import function_runs

OPEN, COMPLETING, DONE = "open", "completing", "done"


@dataclass(frozen=True)
class FunctionRun:
    id: str
    created_at: float
    user_id: str
    channel_id: str
    request_id: str
    state: str
    error: str | None
    token: str | None = field(repr=False)  # Slack's just-in-time token: a secret
    claimed_at: float | None
    outcome: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: Any) -> FunctionRun:
        outcome = json.loads(row["outcome"]) if row["outcome"] else None
        return cls(id=row["id"], created_at=row["created_at"], user_id=row["user_id"],
                   channel_id=row["channel_id"], request_id=row["request_id"],
                   state=row["state"], error=row["error"], token=row["token"],
                   claimed_at=row["claimed_at"], outcome=outcome)


class FunctionRunQueries(StoreBase):
    """The step's runs: recorded once, completed once."""

    def add_function_run(self, *, id: str, now: float, user_id: str, channel_id: str,
                         request_id: str, token: str | None, error: str | None) -> bool:
        """Record a run; False when it was recorded before (the event came again)."""
        try:
            with self._tx() as c:
                c.execute(function_runs.insert().values(
                    id=id, created_at=now, user_id=user_id, channel_id=channel_id,
                    request_id=request_id, state=OPEN, error=error, token=token))
        except sa.exc.IntegrityError:
            return False
        return True

    def get_function_run(self, id: str) -> FunctionRun | None:
        with self._tx() as c:
            row = c.execute(sa.select(function_runs).where(function_runs.c.id == id)
                            ).mappings().first()
        return FunctionRun.from_row(row) if row else None

    def unfinished_function_runs(self, *, now: float, grace: float,
                                 limit: int = 100) -> list[FunctionRun]:
        """Runs not completed yet: open ones, and claims older than ``grace`` (their
        holder died between the intent and the mark)."""
        t = function_runs
        with self._tx() as c:
            rows = c.execute(sa.select(t).where(sa.or_(
                t.c.state == OPEN,
                sa.and_(t.c.state == COMPLETING, t.c.claimed_at < now - grace)))
                .order_by(t.c.created_at).limit(limit)).mappings().all()
        return [FunctionRun.from_row(r) for r in rows]

    def claim_completion(self, run: FunctionRun, *, now: float, grace: float,
                         outcome: dict[str, Any]) -> bool:
        """The intent: this process completes the run with ``outcome``. True for one
        claimer only; a claim older than ``grace`` may be taken over (its outcome kept)."""
        t = function_runs
        with self._tx() as c:
            taken = c.execute(t.update().where(t.c.id == run.id, t.c.state == OPEN)
                              .values(state=COMPLETING, claimed_at=now,
                                      outcome=json.dumps(outcome))).rowcount == 1
            if taken:
                return True
            return bool(c.execute(t.update().where(
                t.c.id == run.id, t.c.state == COMPLETING, t.c.claimed_at < now - grace)
                .values(claimed_at=now)).rowcount == 1)

    def release_completion(self, id: str, *, claimed_at: float) -> None:
        """The completion could not be made now (Slack busy): open again, same outcome."""
        t = function_runs
        with self._tx() as c:
            c.execute(t.update().where(t.c.id == id, t.c.state == COMPLETING,
                                       t.c.claimed_at == claimed_at)
                      .values(state=OPEN))

    def complete_function_run(self, id: str, *, claimed_at: float, now: float) -> bool:
        """Slack has the completion: done, and the token forgotten. By the claim's holder
        only (``claimed_at`` is its mark)."""
        t = function_runs
        with self._tx() as c:
            return bool(c.execute(t.update().where(
                t.c.id == id, t.c.state == COMPLETING, t.c.claimed_at == claimed_at)
                .values(state=DONE, done_at=now, token=None)).rowcount == 1)
