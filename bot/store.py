"""State behind SQLAlchemy Core: pending confirmations, started builds, the audit log.

Exactly-once without flags in memory: every step that must happen once is a
conditional ``UPDATE ... WHERE state = ...`` and the caller acts only when it
changed a row. Watches are leased rows (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL), so several replicas share them and a dead one's come back.
Times are epoch seconds (floats): portable across SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

log = logging.getLogger(__name__)

metadata = sa.MetaData()

requests = sa.Table(
    "buildbot_requests", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # pending running started cancelled expired failed unknown
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("user_id", sa.String(32), nullable=False),
    sa.Column("team_id", sa.String(32), nullable=True),
    sa.Column("channel_id", sa.String(32), nullable=False),
    sa.Column("job_name", sa.String(200), nullable=False),
    sa.Column("job_id", sa.String(32), nullable=False),
    sa.Column("command", sa.Text, nullable=False),  # normalised command text, for Rebuild
    sa.Column("body", sa.Text, nullable=False),  # the exact JSON sent to CodeArts
    sa.Column("response_url", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
)

builds = sa.Table(
    "buildbot_builds", metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # the request's id
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("user_id", sa.String(32), nullable=False),
    sa.Column("channel_id", sa.String(32), nullable=False),
    sa.Column("job_name", sa.String(200), nullable=False),
    sa.Column("job_id", sa.String(32), nullable=False),
    sa.Column("build_no", sa.String(32), nullable=False),
    sa.Column("daily_build_number", sa.String(64), nullable=False),
    sa.Column("response_url", sa.Text, nullable=True),
    # announce: posting (claimed by the process that started it, or a recovery),
    # posted (ts known), fallback (posted through the response_url: no ts)
    sa.Column("announce", sa.String(16), nullable=False, server_default="posting"),
    sa.Column("announce_claimed_at", sa.Float, nullable=True),
    sa.Column("message_channel", sa.String(32), nullable=True),
    sa.Column("message_ts", sa.String(32), nullable=True),
    # watch: watching, reporting, done
    sa.Column("watch", sa.String(16), nullable=False, server_default="watching"),
    sa.Column("next_check_at", sa.Float, nullable=False),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("result", sa.String(32), nullable=True),
    sa.Column("duration_ms", sa.BigInteger, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Index("buildbot_builds_due", "watch", "next_check_at"),
)

audit = sa.Table(
    "buildbot_audit", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("request_id", sa.String(32), nullable=True),
    sa.Column("user_id", sa.String(32), nullable=True),
    sa.Column("channel_id", sa.String(32), nullable=True),
    sa.Column("job", sa.String(200), nullable=True),
    sa.Column("parameters", sa.Text, nullable=True),
    sa.Column("decision", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("daily_build_number", sa.String(64), nullable=True),
    sa.Column("build_no", sa.String(32), nullable=True),
    sa.Column("error_code", sa.String(64), nullable=True),
    sa.Column("error_msg", sa.Text, nullable=True),
)


# Built once: a statement made per call costs more to build and to key for SQLAlchemy's
# compiled cache than SQLite takes to run it (these are the per-command and per-poll ones).
_INSERT_REQUEST = requests.insert()
_INSERT_AUDIT = audit.insert()
_RESCHEDULE = (builds.update()
               .where(builds.c.id == sa.bindparam("b_id"),
                      builds.c.lease_owner == sa.bindparam("b_owner"))
               .values(next_check_at=sa.bindparam("b_next"), failures=sa.bindparam("b_failures"),
                       lease_until=None))


@dataclass(frozen=True)
class Claim:
    """What a Run click found: ``ok`` only for the one click that moved pending -> running."""

    ok: bool
    reason: str  # claimed, missing, not_yours, expired, or the state it was already in
    row: RowMapping | None = None


def engine_url(url: str) -> str:
    """Accept the plain ``postgresql://`` spelling operators use; we ship psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str) -> Engine:
    url = engine_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            if ":memory:" not in url:
                # WAL lets readers work beside the writer; NORMAL syncs at checkpoints,
                # which loses nothing when the bot crashes (only on power loss).
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


class Store:
    """The few queries the bot needs; every method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"

    @classmethod
    def from_url(cls, url: str) -> Store:
        store = cls(make_engine(url))
        store.create_tables()
        return store

    def create_tables(self) -> None:
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # --- confirmations -------------------------------------------------

    def add_request(self, *, id: str, state: str, now: float, ttl: float, user_id: str,
                    team_id: str | None, channel_id: str, job_name: str, job_id: str,
                    command: str, body: dict[str, Any], response_url: str | None,
                    decision: str | None = None) -> None:
        """Record a request; with ``decision``, its audit row too, in the same transaction."""
        with self._tx() as c:
            c.execute(_INSERT_REQUEST, dict(
                id=id, state=state, created_at=now, expires_at=now + ttl, updated_at=now,
                user_id=user_id, team_id=team_id, channel_id=channel_id, job_name=job_name,
                job_id=job_id, command=command, body=json.dumps(body), response_url=response_url,
                error=None))
            if decision is not None:
                c.execute(_INSERT_AUDIT, _audit_row(
                    decision=decision, now=now, request_id=id, user_id=user_id,
                    channel_id=channel_id, job=job_name, parameters=body))

    def get_request(self, id: str) -> RowMapping | None:
        with self._tx() as c:
            return c.execute(sa.select(requests).where(requests.c.id == id)).mappings().first()

    def claim_request(self, *, id: str, user_id: str, now: float) -> Claim:
        """Move one pending request to running, atomically; any other click gets the reason."""
        with self._tx() as c:
            changed = c.execute(
                requests.update()
                .where(requests.c.id == id, requests.c.state == "pending",
                       requests.c.user_id == user_id, requests.c.expires_at > now)
                .values(state="running", updated_at=now)).rowcount
            row = c.execute(sa.select(requests).where(requests.c.id == id)).mappings().first()
        if changed == 1:
            return Claim(True, "claimed", row)
        if row is None:
            return Claim(False, "missing")
        if row["user_id"] != user_id:
            return Claim(False, "not_yours", row)
        if row["state"] == "pending":  # so it is past its time
            self.set_request_state(id=id, state="expired", now=now, only_from="pending")
            return Claim(False, "expired", row)
        return Claim(False, row["state"], row)

    def set_request_state(self, *, id: str, state: str, now: float,
                          only_from: str | None = None, error: str | None = None) -> bool:
        """Conditional state change; True when this call made it."""
        q = requests.update().where(requests.c.id == id)
        if only_from is not None:
            q = q.where(requests.c.state == only_from)
        values: dict[str, Any] = {"state": state, "updated_at": now}
        if error is not None:
            values["error"] = error
        with self._tx() as c:
            return c.execute(q.values(**values)).rowcount == 1

    def expire_pending(self, *, now: float) -> list[RowMapping]:
        """Pending requests past their time that this call moved to expired (each once)."""
        with self._tx() as c:
            due = list(c.execute(sa.select(requests).where(
                requests.c.state == "pending", requests.c.expires_at <= now)).mappings())
        return [r for r in due
                if self.set_request_state(id=r["id"], state="expired", now=now, only_from="pending")]

    def stale_running(self, *, older_than: float) -> list[RowMapping]:
        """Requests claimed but never finished: the bot died while calling CodeArts."""
        with self._tx() as c:
            return list(c.execute(sa.select(requests).where(
                requests.c.state == "running", requests.c.updated_at < older_than)).mappings())

    # --- builds ----------------------------------------------------------

    def record_build(self, *, request: RowMapping, build_no: str, daily_build_number: str,
                     now: float, first_check_at: float) -> dict[str, Any]:
        """Mark the request started, open its watch, claim its announcement and audit it,
        in one transaction; return the new build row."""
        build = dict(id=request["id"], created_at=now, user_id=request["user_id"],
                     channel_id=request["channel_id"], job_name=request["job_name"],
                     job_id=request["job_id"], build_no=build_no,
                     daily_build_number=daily_build_number, response_url=request["response_url"],
                     announce="posting", announce_claimed_at=now, message_channel=None,
                     message_ts=None, watch="watching", next_check_at=first_check_at,
                     lease_owner=None, lease_until=None, failures=0, result=None,
                     duration_ms=None, finished_at=None)
        with self._tx() as c:
            c.execute(requests.update().where(requests.c.id == request["id"])
                      .values(state="started", updated_at=now))
            c.execute(builds.insert().values(**build))
            c.execute(_INSERT_AUDIT, _audit_row(
                decision="started", now=now, request_id=request["id"],
                user_id=request["user_id"], channel_id=request["channel_id"],
                job=request["job_name"], parameters=json.loads(request["body"]),
                daily_build_number=daily_build_number, build_no=build_no))
        return build

    def get_build(self, id: str) -> RowMapping | None:
        with self._tx() as c:
            return c.execute(sa.select(builds).where(builds.c.id == id)).mappings().first()

    def set_announced(self, *, id: str, channel: str | None, ts: str | None) -> None:
        with self._tx() as c:
            c.execute(builds.update().where(builds.c.id == id).values(
                announce="posted" if ts else "fallback", message_channel=channel, message_ts=ts))

    def claim_unannounced(self, *, now: float, stale_after: float) -> list[RowMapping]:
        """Builds whose announcing process died (claimed ``stale_after`` ago, still not
        posted), each re-claimed here by exactly one caller."""
        with self._tx() as c:
            stale = list(c.execute(sa.select(builds).where(
                builds.c.announce == "posting",
                builds.c.announce_claimed_at < now - stale_after)).mappings())
        mine = []
        for row in stale:
            with self._tx() as c:
                took = c.execute(builds.update().where(
                    builds.c.id == row["id"], builds.c.announce == "posting",
                    builds.c.announce_claimed_at == row["announce_claimed_at"])
                    .values(announce_claimed_at=now)).rowcount == 1
            if took:
                mine.append(row)
        return mine

    # --- watches ---------------------------------------------------------

    def lease_due(self, *, owner: str, now: float, lease_seconds: float,
                  limit: int) -> list[RowMapping]:
        """Lease up to ``limit`` due watches to ``owner``; never one another live replica holds."""
        free = sa.or_(builds.c.lease_until.is_(None), builds.c.lease_until < now)
        due = (sa.select(builds.c.id)
               .where(builds.c.watch.in_(("watching", "reporting")), builds.c.next_check_at <= now, free)
               .order_by(builds.c.next_check_at).limit(limit))
        if self.postgres:
            due = due.with_for_update(skip_locked=True)
        q = (builds.update().where(builds.c.id.in_(due.scalar_subquery()), free)
             .values(lease_owner=owner, lease_until=now + lease_seconds)
             .returning(*builds.c))
        with self._tx() as c:
            return list(c.execute(q).mappings())

    def reschedule(self, *, id: str, owner: str, next_check_at: float, failures: int) -> bool:
        with self._tx() as c:
            return c.execute(_RESCHEDULE, dict(b_id=id, b_owner=owner, b_next=next_check_at,
                                               b_failures=failures)).rowcount == 1

    def begin_report(self, *, id: str, owner: str, result: str, duration_ms: int | None,
                     now: float) -> bool:
        """Move watching -> reporting for the lease holder; only then may it post the result."""
        with self._tx() as c:
            return c.execute(builds.update().where(
                builds.c.id == id, builds.c.lease_owner == owner, builds.c.watch == "watching")
                .values(watch="reporting", result=result, duration_ms=duration_ms,
                        finished_at=now)).rowcount == 1

    def finish_report(self, *, id: str) -> None:
        with self._tx() as c:
            c.execute(builds.update().where(builds.c.id == id)
                      .values(watch="done", lease_owner=None, lease_until=None))

    def watching_count(self) -> int:
        with self._tx() as c:
            return c.execute(sa.select(sa.func.count()).select_from(builds)
                             .where(builds.c.watch != "done")).scalar_one()

    def prune(self, *, before: float) -> int:
        """Forget finished requests and builds last touched before ``before`` (the audit
        log stays); returns how many rows went. A Rebuild on such a thread says so."""
        done = ("cancelled", "expired", "failed", "unknown", "started")
        with self._tx() as c:
            gone = c.execute(builds.delete().where(builds.c.watch == "done",
                                                   builds.c.finished_at < before)).rowcount
            gone += c.execute(requests.delete().where(
                requests.c.state.in_(done), requests.c.updated_at < before,
                ~sa.exists().where(builds.c.id == requests.c.id))).rowcount
        return int(gone)

    # --- audit -------------------------------------------------------------

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


def _audit_row(*, decision: str, now: float, request_id: str | None = None,
               user_id: str | None = None, channel_id: str | None = None, job: str | None = None,
               parameters: Any = None, detail: str | None = None,
               daily_build_number: str | None = None, build_no: str | None = None,
               error_code: str | None = None, error_msg: str | None = None) -> dict[str, Any]:
    params = None if parameters is None else json.dumps(parameters, ensure_ascii=False)
    return dict(at=now, request_id=request_id, user_id=user_id, channel_id=channel_id, job=job,
                parameters=params, decision=decision, detail=detail,
                daily_build_number=daily_build_number, build_no=build_no,
                error_code=error_code, error_msg=error_msg)
