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
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as _pg_insert
from sqlalchemy.dialects.sqlite import insert as _sqlite_insert
from sqlalchemy.engine import Connection, Engine, RowMapping

# Claim and Approval live in lifecycle; ``from bot.store import Claim`` still works
from bot.lifecycle import (
    HOUR,
    ORIGIN_SUBSCRIPTION,
    AnnounceState,
    Approval,
    ApprovalOutcome,
    Build,
    Claim,
    ClaimReason,
    Request,
    RequestState,
    State,
    Subscription,
    WatchState,
    check,
)

log = logging.getLogger(__name__)

metadata = sa.MetaData()

requests = sa.Table(
    "buildbot_requests", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # a lifecycle.RequestState
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
    sa.Column("rebuild_of", sa.String(32), nullable=True),  # the build a Rebuild click repeats
    # approval by a second person: approvals needed, who approved (" U1 U2 ", each once,
    # in order), and where the approval message is (updated in place as it is decided)
    sa.Column("approvals_needed", sa.Integer, nullable=True),
    sa.Column("approved_by", sa.Text, nullable=True),
    sa.Column("approvals_given", sa.Integer, nullable=True),
    sa.Column("approval_channel", sa.String(32), nullable=True),
    sa.Column("approval_ts", sa.String(32), nullable=True),
    # the queue (a job at its max_running): when the request joined it (FIFO per job)
    sa.Column("queued_at", sa.Float, nullable=True),
    # the process (incarnation) that moved it to sending and so makes its run call
    sa.Column("intent_owner", sa.String(32), nullable=True),
    # one open Rebuild question per build and user, however many clicks and replicas
    sa.Index("buildbot_requests_open_rebuild", "rebuild_of", "user_id", unique=True,
             sqlite_where=sa.text("state = 'pending'"),
             postgresql_where=sa.text("state = 'pending'")),
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
    # a lifecycle.AnnounceState: posting (claimed by the process that started it, or a
    # recovery), posted (ts known), fallback (posted through the response_url: no ts)
    sa.Column("announce", sa.String(16), nullable=False, server_default="posting"),
    sa.Column("announce_claimed_at", sa.Float, nullable=True),
    sa.Column("message_channel", sa.String(32), nullable=True),
    sa.Column("message_ts", sa.String(32), nullable=True),
    # the process (incarnation) posting the channel message while announce is posting
    sa.Column("announce_owner", sa.String(32), nullable=True),
    # a lifecycle.WatchState: watching, reporting, done
    sa.Column("watch", sa.String(16), nullable=False, server_default="watching"),
    sa.Column("next_check_at", sa.Float, nullable=False),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.Float, nullable=True),
    # fencing: a new number with every lease; a holder's writes name it, so one that
    # froze past its lease cannot write over the next holder's work
    sa.Column("lease_token", sa.BigInteger, nullable=True),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("result", sa.String(32), nullable=True),
    sa.Column("duration_ms", sa.BigInteger, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
    # live progress: the line the channel message shows, and when it may next be updated
    sa.Column("progress_text", sa.Text, nullable=True),
    sa.Column("progress_due_at", sa.Float, nullable=True),
    # a build a subscription found: origin "subscription" (NULL: the bot's own), and what
    # its channel asked for (all | failures); once per job, build number and channel
    sa.Column("origin", sa.String(16), nullable=True),
    sa.Column("notify", sa.String(16), nullable=True),
    sa.Index("buildbot_builds_due", "watch", "next_check_at"),
    sa.Index("buildbot_builds_followed", "job_id", "build_no", "channel_id", unique=True,
             sqlite_where=sa.text("origin = 'subscription'"),
             postgresql_where=sa.text("origin = 'subscription'")),
)

# A channel's subscription to a job's builds started outside Slack (issue 16).
subscriptions = sa.Table(
    "buildbot_subscriptions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("channel_id", sa.String(32), nullable=False),
    sa.Column("job_name", sa.String(200), nullable=False),
    sa.Column("job_id", sa.String(32), nullable=False),
    sa.Column("filter", sa.String(16), nullable=False),  # all | failures
    sa.Column("created_by", sa.String(32), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("since_no", sa.BigInteger, nullable=True),  # builds up to it were looked at
    sa.UniqueConstraint("channel_id", "job_name", name="buildbot_subscriptions_channel_job"),
)

# One row per subscribed job: its history is read by whichever replica leases it, once
# per interval however many channels subscribe.
job_watch = sa.Table(
    "buildbot_job_watch", metadata,
    sa.Column("job_id", sa.String(32), primary_key=True),
    sa.Column("next_check_at", sa.Float, nullable=False),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Column("lease_token", sa.BigInteger, nullable=True),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
)

# One row per running bot process (an incarnation: a new one at every start). Each beats
# every HEARTBEAT_EVERY seconds; one silent for DEAD_AFTER seconds is dead, and what it
# left open (a run call, a channel post, a lease) is taken over at once, not after a grace.
processes = sa.Table(
    "buildbot_processes", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("beat_at", sa.Float, nullable=False),  # 0 once it stopped cleanly
)

HEARTBEAT_EVERY = 3.0  # seconds between two beats of a process
DEAD_AFTER = 15.0  # a process whose last beat is this old has died (or is frozen)

_OURS = builds.c.origin.is_(None)  # the bot's own builds (started or adopted from Slack)

# One row per job with a max_running: locked by every decision that may start one of its
# builds (a Run click, an approval, a queued request's turn), so replicas take turns.
job_slots = sa.Table(
    "buildbot_job_slots", metadata,
    sa.Column("job_name", sa.String(200), primary_key=True),
    sa.Column("locked_at", sa.Float, nullable=True),
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
_RESCHEDULE_HELD = _RESCHEDULE.where(builds.c.lease_token == sa.bindparam("b_token"))
REPORT_GRACE = 180.0  # a result being posted is not taken over until this long past its lease


# requests on their way to a build: they count against the per-user limit
_ON_THE_WAY = (RequestState.AWAITING.value, RequestState.SENDING.value,
               RequestState.QUEUED.value)


class AlreadySettled(Exception):
    """The request left ``sending`` in another process (a restart settled it) first."""


class OpenQuestion(Exception):
    """This user already has an unanswered Rebuild question for this build."""


@dataclass(frozen=True)
class Slots:
    """A job's limit on builds running at once (``max_running``), and how many of its
    builds CodeArts says run that this bot did not start (they count too)."""

    job_name: str
    limit: int
    elsewhere: int = 0
    note: str = ""  # for the question: "unknown" (CodeArts could not say), or the build
    # CodeArts says runs that is not ours


def engine_url(url: str) -> str:
    """Accept the plain ``postgresql://`` spelling operators use; we ship psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str, *, threads: int = 10) -> Engine:
    """An engine whose pool has a connection for each of the ``threads`` that use it
    (workers, watcher, HTTP server), so none waits on another's connection."""
    url = engine_url(url)
    if url.startswith("sqlite"):
        # Each pooled connection is used by one thread at a time (check_same_thread only
        # guards against sharing, which the pool never does); SQLite itself serialises
        # writers, and busy_timeout makes a second writer wait instead of failing.
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                                  pool_size=threads, max_overflow=threads)

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
    return sa.create_engine(url, pool_pre_ping=True, pool_size=threads, max_overflow=threads)


class DatabaseClock:
    """Epoch seconds by the database's clock, so replicas whose own clocks drift still
    agree on leases, expiries and due times.

    Asking the database on every call would add a round trip to every step; instead
    the difference between the database's clock and ours is measured at most every
    ``refresh`` seconds (to within half a round trip) and added to our clock. If the
    database cannot be asked, the last difference is kept. ``offset`` is a seam for
    tests that move time forward."""

    def __init__(self, engine: Engine, *, refresh: float = 30.0,
                 local: Callable[[], float] = time.time,
                 offset: Callable[[], float] = lambda: 0.0) -> None:
        self._engine = engine
        self._refresh = refresh
        self._local = local
        self._offset = offset
        self._skew = 0.0
        self._measured_at: float | None = None
        self._lock = threading.Lock()
        if engine.dialect.name == "postgresql":
            self._query = sa.text("SELECT EXTRACT(EPOCH FROM now())")
        else:  # SQLite: julianday('now') is UTC with millisecond precision
            self._query = sa.text("SELECT (julianday('now') - 2440587.5) * 86400.0")

    @property
    def skew(self) -> float:
        return self._skew

    def measure(self) -> None:
        before = self._local()
        try:
            with self._engine.connect() as c:
                db = float(c.execute(self._query).scalar_one())
        except Exception:
            log.debug("could not read the database's clock; keeping the last difference")
            return
        after = self._local()
        with self._lock:
            self._skew = db - (before + after) / 2
            self._measured_at = after

    def __call__(self) -> float:
        now = self._local()
        last = self._measured_at
        if last is None or now - last > self._refresh or now < last:
            self.measure()
        return self._local() + self._skew + self._offset()


class Store:
    """The few queries the bot needs; every method is one short transaction, and every
    state change one conditional UPDATE that the lifecycle table allows."""

    def __init__(self, engine: Engine, *, owner: str | None = None) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        # this process's incarnation (see ``processes``): written with every intent it
        # opens, so whoever finds the intent can tell whether its owner still lives
        self.owner = owner

    @classmethod
    def from_url(cls, url: str, *, threads: int = 10) -> Store:
        store = cls(make_engine(url, threads=threads))
        store.create_tables()
        return store

    def create_tables(self) -> None:
        metadata.create_all(self.engine)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Databases made by an older version lack the newer (always nullable) columns."""
        inspector = sa.inspect(self.engine)
        for table in (requests, builds, audit, processes):
            have = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in have:
                    continue
                assert column.nullable, f"{table.name}.{column.name} must be nullable to add"
                kind = column.type.compile(dialect=self.engine.dialect)
                with self._tx() as c:
                    c.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
                log.info("added column %s.%s", table.name, column.name)

        for table in (requests, builds, audit):
            for index in table.indexes:
                index.create(self.engine, checkfirst=True)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def _move(self, c: Connection, table: sa.Table, column: sa.Column[Any], id: str,
              old: State, new: State, values: dict[str, Any],
              *conditions: sa.ColumnElement[bool]) -> bool:
        """The one way a state changes: allowed by the lifecycle table, and made by this
        call only if the row was still in ``old``."""
        check(old, new)
        if new is RequestState.SENDING:  # an intent: this process makes the run call
            values = {**values, "intent_owner": self.owner}
        q = (table.update().where(table.c.id == id, column == old.value, *conditions)
             .values({column.name: new.value, **values}))
        return bool(c.execute(q).rowcount == 1)

    # --- confirmations -------------------------------------------------

    def add_request(self, *, id: str, state: RequestState, now: float, ttl: float,
                    user_id: str, team_id: str | None, channel_id: str, job_name: str,
                    job_id: str, command: str, body: dict[str, Any], response_url: str | None,
                    decision: str | None = None, rebuild_of: str | None = None,
                    approvals_needed: int | None = None) -> Request:
        """Record a request; with ``decision``, its audit row too, in the same transaction.
        ``approvals_needed``: it starts awaiting approval (a job without confirmation)."""
        row = dict(id=id, state=RequestState(state).value, created_at=now, expires_at=now + ttl,
                   updated_at=now, user_id=user_id, team_id=team_id, channel_id=channel_id,
                   job_name=job_name, job_id=job_id, command=command, body=json.dumps(body),
                   response_url=response_url, error=None, rebuild_of=rebuild_of)
        if approvals_needed is not None:
            row["approvals_needed"] = approvals_needed
        try:
            self._insert_request(row, decision, body)
        except sa.exc.IntegrityError:
            if rebuild_of is None:
                raise
            raise OpenQuestion(rebuild_of) from None
        return Request.from_row(row)

    def _insert_request(self, row: dict[str, Any], decision: str | None,
                        body: dict[str, Any]) -> None:
        now, id, user_id, channel_id, job_name = (row["created_at"], row["id"], row["user_id"],
                                                  row["channel_id"], row["job_name"])
        with self._tx() as c:
            c.execute(_INSERT_REQUEST, row)
            if decision is not None:
                c.execute(_INSERT_AUDIT, _audit_row(
                    decision=decision, now=now, request_id=id, user_id=user_id,
                    channel_id=channel_id, job=job_name, parameters=body))

    def get_request(self, id: str) -> Request | None:
        with self._tx() as c:
            row = c.execute(sa.select(requests).where(requests.c.id == id)).mappings().first()
        return None if row is None else Request.from_row(row)

    def pending_rebuild(self, *, build_id: str, user_id: str, now: float) -> Request | None:
        """This user's unanswered Rebuild question for this build, if one is still open."""
        with self._tx() as c:
            row = c.execute(sa.select(requests).where(
                requests.c.rebuild_of == build_id, requests.c.user_id == user_id,
                requests.c.state == RequestState.PENDING.value, requests.c.expires_at > now)
                .order_by(requests.c.created_at).limit(1)).mappings().first()
        return None if row is None else Request.from_row(row)

    def claim_request(self, *, id: str, user_id: str, now: float,
                      to: RequestState = RequestState.SENDING,
                      values: dict[str, Any] | None = None,
                      limit: tuple[str, int] | None = None,
                      slots: Slots | None = None) -> Claim:
        """Move one pending request to sending (or ``to``: awaiting approval, with
        ``values``), atomically; any other click gets the reason. ``limit`` (job name,
        builds per hour) is checked in the same UPDATE: over it, the reason is
        ``over_limit`` and the request stays pending. It is checked under the job's slot
        lock, so two claims at once on two replicas count each other. ``slots``: the
        job's running builds are counted under that lock in the same transaction; at its
        limit the reason is ``full`` and the request stays pending."""
        under = () if limit is None else (self._under_limit(user_id, limit, now, id),)
        full = False
        with self._tx() as c:
            if slots is not None:
                full = self._slots_full(c, slots, now)
            elif limit is not None:  # the job's lock: a concurrent claim counts this one
                self._lock_slot(c, limit[0], now)
            changed = not full and self._move(
                c, requests, requests.c.state, id, RequestState.PENDING, to,
                {"updated_at": now, **(values or {})}, requests.c.user_id == user_id,
                requests.c.expires_at > now, *under)
            row = c.execute(sa.select(requests).where(requests.c.id == id)).mappings().first()
        if row is None:
            return Claim(False, ClaimReason.MISSING)
        request = Request.from_row(row)
        if changed:
            return Claim(True, ClaimReason.CLAIMED, request)
        if request.user_id != user_id:
            return Claim(False, ClaimReason.NOT_YOURS, request)
        if full and request.state is RequestState.PENDING and request.expires_at > now:
            return Claim(False, ClaimReason.FULL, request)
        if request.state is RequestState.PENDING and request.expires_at > now and under:
            return Claim(False, ClaimReason.OVER_LIMIT, request)
        if request.state is RequestState.PENDING:  # so it is past its time
            if self.move_request(id=id, old=RequestState.PENDING, new=RequestState.EXPIRED,
                                 now=now):
                # this click tells it, nobody else
                return Claim(False, ClaimReason.EXPIRES_NOW, request)
            current = self.get_request(id)  # the sweep expired it first, and told it
            if current is None:
                return Claim(False, ClaimReason.MISSING)
            return Claim(False, current.state, current)
        return Claim(False, request.state, request)

    def move_request(self, *, id: str, old: RequestState, new: RequestState, now: float,
                     error: str | None = None) -> bool:
        """Conditional state change; True when this call made it."""
        values: dict[str, Any] = {"updated_at": now}
        if error is not None:
            values["error"] = error
        with self._tx() as c:
            return self._move(c, requests, requests.c.state, id, old, new, values)

    # --- guard rails: approvals and the per-user limit ----------------------------

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

    def record_approval(self, *, id: str, approver: str, now: float,
                        slots: Slots | None = None, queue_ttl: float = 3600.0) -> Approval:
        """Add ``approver`` to an awaiting request, once per person, in one conditional
        UPDATE; the approval that makes it enough moves it to sending in the same
        transaction (so on any number of replicas exactly one click starts the build).
        With ``slots``, a job at its limit then queues it instead (``queued``), open
        for ``queue_ttl`` seconds."""
        approved_by = sa.func.coalesce(requests.c.approved_by, " ")
        given = sa.func.coalesce(requests.c.approvals_given, 0)
        with self._tx() as c:
            if slots is not None:  # taken first: every slot decision locks in one order
                self._lock_slot(c, slots.job_name, now)
            recorded = c.execute(requests.update().where(
                requests.c.id == id, requests.c.state == RequestState.AWAITING.value,
                requests.c.expires_at > now,
                ~approved_by.contains(f" {approver} ", autoescape=True),
                given < sa.func.coalesce(requests.c.approvals_needed, 1))
                .values(approved_by=approved_by + approver + " ", approvals_given=given + 1,
                        updated_at=now)).rowcount == 1
            row = c.execute(sa.select(requests).where(requests.c.id == id)).mappings().first()
            if row is None:
                return Approval(ApprovalOutcome.MISSING)
            request = Request.from_row(row)
            if recorded and len(request.approved_by) >= (request.approvals_needed or 1):
                if slots is not None and self._running(c, slots.job_name) + \
                        slots.elsewhere >= slots.limit:
                    queued = {"updated_at": now, "queued_at": now, "expires_at": now + queue_ttl}
                    if self._move(c, requests, requests.c.state, id, RequestState.AWAITING,
                                  RequestState.QUEUED, queued):
                        return Approval(ApprovalOutcome.QUEUED, replace(
                            request, state=RequestState.QUEUED, expires_at=now + queue_ttl))
                if self._move(c, requests, requests.c.state, id, RequestState.AWAITING,
                              RequestState.SENDING, {"updated_at": now}):
                    return Approval(ApprovalOutcome.START,
                                    replace(request, state=RequestState.SENDING))
        if recorded:
            return Approval(ApprovalOutcome.RECORDED, request)
        if request.state is not RequestState.AWAITING:
            return Approval(request.state, request)
        if approver in request.approved_by:
            return Approval(ApprovalOutcome.APPROVED_ALREADY, request)
        if request.expires_at <= now:
            if self.move_request(id=id, old=RequestState.AWAITING, new=RequestState.EXPIRED,
                                 now=now):
                return Approval(ApprovalOutcome.EXPIRES_NOW, request)  # this click tells it
            current = self.get_request(id)
            return Approval(current.state if current else ApprovalOutcome.MISSING, current)
        # enough approvals came first; it is starting
        return Approval(ApprovalOutcome.ENOUGH, request)

    def end_awaiting(self, *, id: str, new: RequestState, now: float,
                     requester: str | None = None, error: str | None = None) -> bool:
        """An awaiting request rejected, withdrawn (``requester`` must be its own) or not
        asked, while still open; True when this call made the move."""
        values: dict[str, Any] = {"updated_at": now}
        if error is not None:
            values["error"] = error
        who = () if requester is None else (requests.c.user_id == requester,)
        with self._tx() as c:
            return self._move(c, requests, requests.c.state, id, RequestState.AWAITING, new,
                              values, requests.c.expires_at > now, *who)

    def expire_awaiting(self, *, now: float) -> list[Request]:
        """Requests awaiting approval past their time that this call expired (each once)."""
        with self._tx() as c:
            due = list(c.execute(sa.select(requests).where(
                requests.c.state == RequestState.AWAITING.value,
                requests.c.expires_at <= now)).mappings())
        return [Request.from_row(r) for r in due
                if self.move_request(id=r["id"], old=RequestState.AWAITING,
                                     new=RequestState.EXPIRED, now=now)]

    def set_approval_message(self, *, id: str, channel: str, ts: str) -> None:
        """Where the approval message is, so each decision updates it in place."""
        with self._tx() as c:
            c.execute(requests.update().where(requests.c.id == id)
                      .values(approval_channel=channel, approval_ts=ts))

    # --- one build at a time and the queue --------------------------------------------
    # Every decision that may start a build of a job with max_running locks the job's
    # slot row first (FOR UPDATE on PostgreSQL by the UPDATE itself; on SQLite the UPDATE
    # takes the database's write lock), then counts and moves in the same transaction.

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

    def expire_pending(self, *, now: float) -> list[Request]:
        """Pending requests past their time that this call moved to expired (each once)."""
        with self._tx() as c:
            due = list(c.execute(sa.select(requests).where(
                requests.c.state == RequestState.PENDING.value,
                requests.c.expires_at <= now)).mappings())
        return [Request.from_row(r) for r in due
                if self.move_request(id=r["id"], old=RequestState.PENDING,
                                     new=RequestState.EXPIRED, now=now)]

    def stale_sending(self, *, older_than: float, noted: str | None = None,
                      noted_before: float | None = None,
                      now: float | None = None) -> list[Request]:
        """Requests claimed but never finished: the process calling CodeArts died (its
        heartbeat stopped, by ``now``) or has had it longer than any live call lasts
        (older than ``older_than``), or the call's answer was lost (error starting with
        ``noted``, older than ``noted_before``)."""
        stale = requests.c.updated_at < older_than
        if now is not None:
            stale = sa.or_(stale, requests.c.intent_owner.in_(_dead(now)))
        if noted is not None and noted_before is not None:
            stale = sa.or_(stale, sa.and_(requests.c.error.startswith(noted, autoescape=True),
                                          requests.c.updated_at < noted_before))
        with self._tx() as c:
            rows = c.execute(sa.select(requests).where(
                requests.c.state == RequestState.SENDING.value, stale)).mappings()
            return [Request.from_row(r) for r in rows]

    def note_answer_lost(self, *, id: str, now: float, error: str) -> bool:
        """The run call's answer was lost: the request stays sending, to be settled from
        the job's history; no state changes, so no transition."""
        with self._tx() as c:
            return c.execute(requests.update().where(
                requests.c.id == id, requests.c.state == RequestState.SENDING.value)
                .values(error=error[:1000], updated_at=now)).rowcount == 1

    # --- builds ----------------------------------------------------------

    def record_build(self, *, request: Request, build_no: str, daily_build_number: str,
                     now: float, first_check_at: float) -> Build:
        """Mark the request started, open its watch, claim its announcement and audit it,
        in one transaction; return the new build."""
        build = dict(id=request.id, created_at=now, user_id=request.user_id,
                     channel_id=request.channel_id, job_name=request.job_name,
                     job_id=request.job_id, build_no=build_no,
                     daily_build_number=daily_build_number, response_url=request.response_url,
                     announce=AnnounceState.POSTING.value, announce_claimed_at=now,
                     announce_owner=self.owner, message_channel=None, message_ts=None, watch=WatchState.WATCHING.value,
                     next_check_at=first_check_at, lease_owner=None, lease_until=None,
                     lease_token=None,
                     failures=0, result=None, duration_ms=None, finished_at=None)
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

    def set_announced(self, *, id: str, channel: str | None, ts: str | None) -> bool:
        """posting -> posted (with the message's ts) or fallback (no ts); True if moved."""
        new = AnnounceState.POSTED if ts else AnnounceState.FALLBACK
        with self._tx() as c:
            return self._move(c, builds, builds.c.announce, id, AnnounceState.POSTING, new,
                              {"message_channel": channel, "message_ts": ts})

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

    # --- watches ---------------------------------------------------------

    def lease_due(self, *, owner: str, now: float, lease_seconds: float, limit: int,
                  skip_jobs: tuple[str, ...] = (), grace: float = REPORT_GRACE) -> list[Build]:
        """Lease up to ``limit`` due watches to ``owner``, the longest overdue first; never
        one another live replica holds, and a result being posted only once its holder's
        lease is ``grace`` seconds past; a dead process's leases at once. Each lease gets a
        new fencing token."""
        expired_before = sa.case((builds.c.watch == WatchState.REPORTING.value,
                                  now - grace), else_=now)
        free = sa.or_(builds.c.lease_until.is_(None), builds.c.lease_until < expired_before,
                      builds.c.lease_owner.in_(_dead(now)))
        active = (WatchState.WATCHING.value, WatchState.REPORTING.value)
        due = (sa.select(builds.c.id)
               .where(builds.c.watch.in_(active), builds.c.next_check_at <= now, free,
                      *((builds.c.job_id.not_in(skip_jobs),) if skip_jobs else ()))
               .order_by(builds.c.next_check_at).limit(limit))
        if self.postgres:
            due = due.with_for_update(skip_locked=True)
        q = (builds.update().where(builds.c.id.in_(due.scalar_subquery()), free)
             .values(lease_owner=owner, lease_until=now + lease_seconds,
                     lease_token=sa.func.coalesce(builds.c.lease_token, 0) + 1)
             .returning(*builds.c))
        with self._tx() as c:
            rows = list(c.execute(q).mappings())
        rows.sort(key=lambda r: r["next_check_at"])
        return [Build.from_row({**r, "age": now - r["created_at"]}) for r in rows]

    def reschedule(self, *, id: str, owner: str, next_check_at: float, failures: int,
                   token: int | None = None) -> bool:
        q = _RESCHEDULE if token is None else _RESCHEDULE_HELD
        with self._tx() as c:
            return c.execute(q, dict(b_id=id, b_owner=owner, b_next=next_check_at,
                                     b_failures=failures, b_token=token)).rowcount == 1

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

    # --- processes: who is alive ---------------------------------------------------

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

    def release(self, *, id: str, owner: str, token: int | None) -> bool:
        """Give a lease back untouched (the watcher took more than it may run now)."""
        with self._tx() as c:
            return c.execute(builds.update().where(
                builds.c.id == id, builds.c.lease_owner == owner, *_token(token))
                .values(lease_owner=None, lease_until=None)).rowcount == 1

    def still_held(self, *, id: str, owner: str, token: int | None, now: float,
                   lease_seconds: float) -> bool:
        """Right before posting: is this lease still ours and live? Renews it if so."""
        with self._tx() as c:
            return c.execute(builds.update().where(
                builds.c.id == id, builds.c.lease_owner == owner, builds.c.lease_until > now,
                *_token(token)).values(lease_until=now + lease_seconds)).rowcount == 1

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

    def set_daily_build_number(self, *, id: str, daily_build_number: str) -> None:
        """CodeArts told the daily number only later (the run answer had none)."""
        with self._tx() as c:
            c.execute(builds.update().where(builds.c.id == id,
                                            builds.c.daily_build_number == "")
                      .values(daily_build_number=daily_build_number))

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

    def watching_count(self) -> int:
        with self._tx() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(builds)
                                 .where(builds.c.watch != WatchState.DONE.value)).scalar_one())

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
        return int(gone)

    def prune_audit(self, *, before: float, batch: int = 500) -> int:
        """Delete up to ``batch`` audit rows older than ``before`` (small batches keep each
        transaction short); returns how many went."""
        oldest = sa.select(audit.c.id).where(audit.c.at < before).order_by(audit.c.id).limit(batch)
        with self._tx() as c:
            return int(c.execute(audit.delete().where(
                audit.c.id.in_(oldest.scalar_subquery()))).rowcount)

    # --- status and the webhook nudge ---------------------------------------------------

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

    def followed_jobs(self, job_ids: Collection[str]) -> set[str]:
        """Those of these build task IDs that have a build being followed."""
        if not job_ids:
            return set()
        with self._tx() as c:
            return set(c.execute(sa.select(builds.c.job_id).distinct().where(
                builds.c.watch == WatchState.WATCHING.value,
                builds.c.job_id.in_(list(job_ids)))).scalars())

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

    # --- subscriptions and followed builds (issue 16) ------------------------------------
    # A subscription (channel, job) announces the job's builds started outside Slack. Each
    # subscribed job has a job_watch row, leased like a build, whose holder reads the job's
    # history once per interval and records each new build once per channel: a builds row
    # with origin "subscription", unique on (job, build number, channel).

    def subscribe(self, *, channel_id: str, job_name: str, job_id: str, filter: str,
                  user_id: str, now: float, since_no: int | None) -> str | None:
        """Subscribe the channel to the job (or change its filter); opens the job's watch.
        Returns the filter it had before (None: it is new)."""
        insert = (_pg_insert if self.postgres else _sqlite_insert)
        where = (subscriptions.c.channel_id == channel_id, subscriptions.c.job_name == job_name)
        with self._tx() as c:
            before = c.execute(sa.select(subscriptions.c.filter).where(*where)).scalar()
            if before is None:
                added = c.execute(insert(subscriptions).values(
                    channel_id=channel_id, job_name=job_name, job_id=job_id, filter=filter,
                    created_by=user_id, created_at=now, since_no=since_no)
                    .on_conflict_do_nothing().returning(subscriptions.c.id)).first() is not None
                if not added:  # another replica made it a moment ago
                    before = c.execute(sa.select(subscriptions.c.filter).where(*where)).scalar()
            if before is not None:
                c.execute(subscriptions.update().where(*where)
                          .values(filter=filter, job_id=job_id))
            c.execute(insert(job_watch).values(job_id=job_id, next_check_at=now, failures=0)
                      .on_conflict_do_nothing(index_elements=["job_id"]))
        return before

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

    def make_jobs_due(self, *, at: float, job_ids: Collection[str] | None = None) -> int:
        """Subscribed jobs' history read at ``at`` instead of later (the webhook nudge)."""
        q = job_watch.update().where(job_watch.c.next_check_at > at)
        if job_ids is not None:
            if not job_ids:
                return 0
            q = q.where(job_watch.c.job_id.in_(list(job_ids)))
        with self._tx() as c:
            return int(c.execute(q.values(next_check_at=at)).rowcount)

    def subscribed_jobs(self, job_ids: Collection[str]) -> set[str]:
        """Those of these build task IDs that a channel subscribes to."""
        if not job_ids:
            return set()
        with self._tx() as c:
            return set(c.execute(sa.select(subscriptions.c.job_id).distinct().where(
                subscriptions.c.job_id.in_(list(job_ids)))).scalars())

    def slack_numbers(self, *, job_id: str, build_nos: Collection[str]) -> set[str]:
        """Those of these build numbers that the bot started (or adopted) from Slack."""
        if not build_nos:
            return set()
        with self._tx() as c:
            return {str(n) for n in c.execute(sa.select(builds.c.build_no).where(
                builds.c.job_id == job_id, builds.c.build_no.in_(list(build_nos)),
                _OURS)).scalars()}

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

    def follow_build(self, *, job_id: str, job_name: str, build_no: str, channel_id: str,
                     notify: str, now: float, first_check_at: float) -> Build | None:
        """Record a build a subscription found, once per (job, build number, channel): the
        unique index makes a second insert (another replica, a restart) do nothing.
        ``all`` claims its announcement (posting); ``failures`` has none (fallback)."""
        announce = AnnounceState.POSTING if notify == "all" else AnnounceState.FALLBACK
        row = dict(id=uuid.uuid4().hex, created_at=now, user_id="", channel_id=channel_id,
                   job_name=job_name, job_id=job_id, build_no=build_no,
                   daily_build_number="", response_url=None, announce=announce.value,
                   announce_claimed_at=now, announce_owner=self.owner,
                   message_channel=None, message_ts=None,
                   watch=WatchState.WATCHING.value, next_check_at=first_check_at,
                   lease_owner=None, lease_until=None, lease_token=None, failures=0,
                   result=None, duration_ms=None, finished_at=None,
                   origin=ORIGIN_SUBSCRIPTION, notify=notify)
        insert = (_pg_insert if self.postgres else _sqlite_insert)(builds)
        with self._tx() as c:
            if c.execute(insert.values(**row).on_conflict_do_nothing()
                         .returning(builds.c.id)).first() is None:
                return None  # (rowcount is not reliable for an upsert on every driver)
            c.execute(_INSERT_AUDIT, _audit_row(
                decision="followed", now=now, request_id=row["id"], channel_id=channel_id,
                job=job_name, build_no=build_no, detail=f"subscription: {notify}"))
        return Build.from_row(row)

    def sending_since(self, job_id: str) -> float | None:
        """When the oldest run call of this job still in flight was claimed (its build may be
        in the history already, not yet recorded as ours); None when there is none."""
        with self._tx() as c:
            found = c.execute(sa.select(sa.func.min(requests.c.updated_at)).where(
                requests.c.job_id == job_id,
                requests.c.state == RequestState.SENDING.value)).scalar()
        return None if found is None else float(found)

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


def _dead(now: float) -> sa.Select[tuple[str]]:
    """The processes that stopped beating (or stopped cleanly) by ``now``. An owner with
    no row (an older version, a test's store) is never taken for dead: the grace rules."""
    return sa.select(processes.c.id).where(processes.c.beat_at < now - DEAD_AFTER)


def _token(token: int | None) -> tuple[sa.ColumnElement[bool], ...]:
    return () if token is None else (builds.c.lease_token == token,)


AUDIT_TEXT_LIMIT = 4096  # characters kept of an audit row's detail, error and parameters


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
    return dict(at=now, request_id=_cap(request_id, 32), user_id=_cap(user_id, 32),
                channel_id=_cap(channel_id, 32), job=_cap(job, 200),
                parameters=_cap(params, AUDIT_TEXT_LIMIT), decision=_cap(decision, 32),
                detail=_cap(detail, AUDIT_TEXT_LIMIT),
                daily_build_number=_cap(daily_build_number, 64), build_no=_cap(build_no, 32),
                error_code=_cap(error_code, 64), error_msg=_cap(error_msg, AUDIT_TEXT_LIMIT))
