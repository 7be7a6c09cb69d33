"""Housekeeping: the audit log, and forgetting what is old.

``buildbot_audit`` has one row per decision (a request, a start, a refusal, a report).
Where the store makes the row a decision records (a request, a started build, a build a
subscription found), the audit row is written in the same transaction, so it is logged
exactly when the row is made. Each text is capped (``AUDIT_TEXT_LIMIT``), so a hostile
command or a huge API error cannot grow the log without bound.

``prune`` forgets finished requests and builds and long-dead processes, never one still
open nor a request whose build row remains; ``prune_audit`` deletes old audit rows in
small batches, each its own short transaction.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from bot.lifecycle import RequestState, WatchState
from bot.store.base import StoreBase
from bot.store.schema import audit, builds, notify_requests, on_it, processes, requests

AUDIT_TEXT_LIMIT = 4096  # characters kept of an audit row's detail, error and parameters

# Built once: a statement made per call costs more to build and to key for SQLAlchemy's
# compiled cache than SQLite takes to run it (these are the per-command and per-poll ones).
_INSERT_AUDIT = audit.insert()


def _cap(text: str | None, limit: int) -> str | None:
    """At most ``limit`` characters, saying how much was cut: a hostile command or a huge
    API error cannot grow the audit log without bound."""
    if text is None or len(text) <= limit:
        return text
    note = f"... [{len(text) - limit} more characters cut]"
    return text[: max(0, limit - len(note))] + note


def _audit_row(*, decision: str, now: float, request_id: str | None = None,
               user_id: str | None = None, channel_id: str | None = None, job: str | None = None,
               parameters: Any = None, detail: str | None = None,
               daily_build_number: str | None = None, build_no: str | None = None,
               error_code: str | None = None, error_msg: str | None = None) -> dict[str, Any]:
    params = None if parameters is None else json.dumps(parameters, ensure_ascii=False)
    return {"at": now, "request_id": _cap(request_id, 32), "user_id": _cap(user_id, 32),
            "channel_id": _cap(channel_id, 32), "job": _cap(job, 200),
            "parameters": _cap(params, AUDIT_TEXT_LIMIT), "decision": _cap(decision, 32),
            "detail": _cap(detail, AUDIT_TEXT_LIMIT),
            "daily_build_number": _cap(daily_build_number, 64),
            "build_no": _cap(build_no, 32), "error_code": _cap(error_code, 64),
            "error_msg": _cap(error_msg, AUDIT_TEXT_LIMIT)}


class Housekeeping(StoreBase):
    """The audit log, and pruning."""

    # --- audit ----------------------------------------------------------------------------

    def audit(self, *, decision: str, now: float, request_id: str | None = None,
              user_id: str | None = None, channel_id: str | None = None, job: str | None = None,
              parameters: Any = None, detail: str | None = None,
              daily_build_number: str | None = None, build_no: str | None = None,
              error_code: str | None = None, error_msg: str | None = None) -> None:
        with self._tx() as c:
            c.execute(_INSERT_AUDIT, _audit_row(
                decision=decision, now=now, request_id=request_id, user_id=user_id,
                channel_id=channel_id, job=job, parameters=parameters, detail=detail,
                daily_build_number=daily_build_number, build_no=build_no,
                error_code=error_code, error_msg=error_msg))

    def audit_rows(self, *, request_id: str | None = None) -> list[RowMapping]:
        q = sa.select(audit).order_by(audit.c.id)
        if request_id is not None:
            q = q.where(audit.c.request_id == request_id)
        with self._tx() as c:
            return list(c.execute(q).mappings())

    # --- pruning --------------------------------------------------------------------------

    def prune(self, *, before: float) -> int:
        """Forget finished requests and builds last touched before ``before`` (the audit
        log stays); returns how many rows went. A Rebuild on such a thread says so."""
        ended = [s.value for s in RequestState
                 if s not in (RequestState.PENDING, RequestState.SENDING,
                              RequestState.AWAITING, RequestState.QUEUED)]
        with self._tx() as c:
            c.execute(processes.delete().where(processes.c.beat_at < before))
            gone = c.execute(builds.delete().where(builds.c.watch == WatchState.DONE.value,
                                                   builds.c.finished_at < before)).rowcount
            gone += c.execute(requests.delete().where(
                requests.c.state.in_(ended), requests.c.updated_at < before,
                ~sa.exists().where(builds.c.id == requests.c.id))).rowcount
            c.execute(notify_requests.delete().where(  # "Notify me" rows of builds gone
                notify_requests.c.asked_at < before,
                ~sa.exists().where(builds.c.id == notify_requests.c.build_id)))
            c.execute(on_it.delete().where(  # failure replies of builds gone
                on_it.c.posted_at < before, ~sa.exists().where(builds.c.id == on_it.c.build_id)))
        return int(gone)

    def prune_audit(self, *, before: float, batch: int = 500) -> int:
        """Delete up to ``batch`` audit rows older than ``before`` (small batches keep each
        transaction short); returns how many went."""
        oldest = sa.select(audit.c.id).where(audit.c.at < before).order_by(audit.c.id).limit(batch)
        with self._tx() as c:
            return int(c.execute(audit.delete().where(
                audit.c.id.in_(oldest.scalar_subquery()))).rowcount)
