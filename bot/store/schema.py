"""The store's tables and indexes, the engine, and the migration step.

- ``buildbot_requests``: one row per request to run a job, through its life
  (``lifecycle.RequestState``): a confirmation, an approval, a place in the queue,
  the run call.
- ``buildbot_builds``: one row per build the bot follows, its id the request's (or a
  new one for a build a subscription found): its channel message, its watch lease,
  its result.
- ``buildbot_subscriptions`` and ``buildbot_job_watch``: channels following a job's
  builds started outside Slack, and one leased row per such job.
- ``buildbot_job_slots``: one row per job with a max_running, locked by every
  decision that may start one of its builds.
- ``buildbot_processes``: one row per running bot process, with its heartbeat.
- ``buildbot_notify``: who asked for a direct message when a build ends ("Notify me").
- ``buildbot_on_it``: failure replies, who is on each ("I'm on it"), and what fixed it.
- ``buildbot_audit``: one row per decision; pruned on its own schedule, not with the
  rows it names.

Times are epoch seconds (floats): portable across SQLite and PostgreSQL. The queries
live beside this module, one module per feature.

Migration: ``create_tables`` makes what is missing at every start. A database made by
an older version gets the newer columns (always nullable, so rows already there stay
valid) and indexes; nothing is ever dropped or changed in place.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

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
    # the App Home: what changed for a person, or for the jobs they approve, since when
    sa.Index("buildbot_requests_user_changed", "user_id", "updated_at"),
    sa.Index("buildbot_requests_changed", "updated_at"),
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
    # the channel message's permalink (chat.getPermalink), asked once for the App Home
    sa.Column("permalink", sa.Text, nullable=True),
    # what the build-info record said of a followed build (read once, when it is found):
    # its branch, the CodeArts user who started it and the trigger word ("SLACK": a build
    # started from Slack in another channel); NULL: not known. The bot's own builds keep
    # the branch their codeBranch parameter named.
    sa.Column("branch", sa.String(255), nullable=True),
    sa.Column("started_by", sa.String(128), nullable=True),
    sa.Column("trigger", sa.String(32), nullable=True),
    # a ``changes`` build: what its end meant (JSON of lifecycle.Flip, "{}": no flip),
    # settled once before its post so that a retry posts the same
    sa.Column("flip", sa.Text, nullable=True),
    sa.Index("buildbot_builds_due", "watch", "next_check_at"),
    sa.Index("buildbot_builds_user", "user_id", "created_at"),  # the App Home's builds
    sa.Index("buildbot_builds_followed", "job_id", "build_no", "channel_id", unique=True,
             sqlite_where=sa.text("origin = 'subscription'"),
             postgresql_where=sa.text("origin = 'subscription'")),
)

_OURS = builds.c.origin.is_(None)  # the bot's own builds (started or adopted from Slack)

# A channel's subscription to a job's builds started outside Slack (issue 16).
subscriptions = sa.Table(
    "buildbot_subscriptions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("channel_id", sa.String(32), nullable=False),
    sa.Column("job_name", sa.String(200), nullable=False),
    sa.Column("job_id", sa.String(32), nullable=False),
    # the mode: all | failures | changes (a database made before issue 28 holds all or
    # failures here, which keep their meaning)
    sa.Column("filter", sa.String(16), nullable=False),
    sa.Column("created_by", sa.String(32), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("since_no", sa.BigInteger, nullable=True),  # builds up to it were looked at
    sa.Column("branch", sa.String(128), nullable=True),  # a branch glob; NULL: every branch
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

# "Notify me" (issue 28): one row per build and person who asked for a direct message
# when it ends. ``state``: wanted (asked; a second click deletes it), sending (claimed by
# ``owner``, fenced by ``tries``, which grows with every claim), sent, failed (Slack's final
# refusal, or given up). ``dm_channel`` is the DM conversation, recorded before the post so
# that a retry can look there for a DM whose answer was lost before posting it again.
notify_requests = sa.Table(
    "buildbot_notify", metadata,
    sa.Column("build_id", sa.String(32), primary_key=True),
    sa.Column("user_id", sa.String(32), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("asked_at", sa.Float, nullable=False),
    sa.Column("owner", sa.String(64), nullable=True),
    sa.Column("claimed_at", sa.Float, nullable=True),
    sa.Column("retry_at", sa.Float, nullable=True),
    sa.Column("tries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("dm_channel", sa.String(32), nullable=True),
    sa.Column("dm_ts", sa.String(32), nullable=True),
    sa.Column("error", sa.String(64), nullable=True),
    sa.Index("buildbot_notify_state", "state"),
)

# "I'm on it" (issue 28): one row per failure reply the bot posted (a failed build's thread
# reply, or a followed build's failure post): where it is and what it says, so a click can
# edit it; who took it (one taker at a time, by conditional UPDATE); and, once a later
# build of the job on the same branch succeeded, that build (the claim is closed).
on_it = sa.Table(
    "buildbot_on_it", metadata,
    sa.Column("build_id", sa.String(32), primary_key=True),
    sa.Column("job_id", sa.String(32), nullable=False),
    sa.Column("job_name", sa.String(200), nullable=False),
    sa.Column("build_no", sa.String(32), nullable=False),
    sa.Column("build_number", sa.BigInteger, nullable=False),  # build_no, for ordering
    sa.Column("daily_build_number", sa.String(64), nullable=True),
    sa.Column("branch", sa.String(255), nullable=True),  # None: not known
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("ts", sa.String(32), nullable=False),
    sa.Column("reply", sa.Text, nullable=False),  # the reply as posted (JSON)
    sa.Column("posted_at", sa.Float, nullable=False),
    sa.Column("taker", sa.String(32), nullable=True),
    sa.Column("taken_at", sa.Float, nullable=True),
    # who the reply in Slack shows as on it ("": nobody), and when the taker last changed:
    # a change whose edit was lost (a crash, Slack busy) is edited again by the watcher
    sa.Column("shown", sa.String(32), nullable=True),
    sa.Column("changed_at", sa.Float, nullable=True),
    sa.Column("closed_by", sa.String(32), nullable=True),  # the build_no that succeeded
    sa.Column("closed_at", sa.Float, nullable=True),
    sa.Index("buildbot_on_it_job", "job_id", "build_number"),
)

# One row per running bot process (an incarnation: a new one at every start). Each beats
# every HEARTBEAT_EVERY seconds (heartbeats.py); one silent for DEAD_AFTER seconds is dead,
# and what it left open (a run call, a channel post, a lease) is taken over at once, not
# after a grace.
processes = sa.Table(
    "buildbot_processes", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("beat_at", sa.Float, nullable=False),  # 0 once it stopped cleanly
)

# One row per job with a max_running: locked by every decision that may start one of its
# builds (a Run click, an approval, a queued request's turn), so replicas take turns.
job_slots = sa.Table(
    "buildbot_job_slots", metadata,
    sa.Column("job_name", sa.String(200), primary_key=True),
    sa.Column("locked_at", sa.Float, nullable=True),
)

# One row per person who opened the bot's App Home (issue 29): their Home is published at
# most once per HOME_EVERY seconds (``next_at``), across replicas, by whoever claims the row
# with a conditional UPDATE. ``dirty``: something they see changed since ``seen_at`` (or
# they opened it); ``publishing``: claimed, not yet confirmed published (a crash leaves it
# set, so the next claim publishes again); ``approves``: the jobs they may approve, as
# " a b ", so a change to one of those requests marks their Home dirty.
home_tabs = sa.Table(
    "buildbot_home_tabs", metadata,
    sa.Column("user_id", sa.String(32), primary_key=True),
    sa.Column("team_id", sa.String(32), nullable=True),
    sa.Column("opened_at", sa.Float, nullable=False),
    sa.Column("seen_at", sa.Float, nullable=False),
    sa.Column("next_at", sa.Float, nullable=False),
    sa.Column("dirty", sa.Boolean, nullable=False),
    sa.Column("publishing", sa.Boolean, nullable=False),
    sa.Column("approves", sa.Text, nullable=False, server_default=""),
    sa.Index("buildbot_home_tabs_due", "next_at"),
)

# One row per run of the Workflow Builder step "Run a CodeArts build" (bot.workflow): Slack's
# function_execution_id is the key, so a redelivered event starts nothing twice. The
# completion is an intent (``completing``, with when it was claimed) before the Slack call
# and ``done`` after it, so a restart in between makes the call again (Slack answers a
# second completion with an error that means it is done).
function_runs = sa.Table(
    "buildbot_function_runs", metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # Slack's function_execution_id
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("user_id", sa.String(32), nullable=False),
    sa.Column("channel_id", sa.String(32), nullable=False),
    sa.Column("request_id", sa.String(32), nullable=False),  # the request it makes
    sa.Column("state", sa.String(16), nullable=False),  # open | completing | done
    sa.Column("error", sa.Text, nullable=True),  # refused before any request: why
    # the just-in-time token Slack sent with the event (it lives 15 minutes at most, or
    # until the step completes); cleared once the step is done
    sa.Column("token", sa.Text, nullable=True),
    sa.Column("claimed_at", sa.Float, nullable=True),  # when a completion was claimed
    sa.Column("outcome", sa.Text, nullable=True),  # the completion made: JSON
    sa.Column("done_at", sa.Float, nullable=True),
)
sa.Index("buildbot_function_runs_state", function_runs.c.state)

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


def create_tables(engine: Engine) -> None:
    """Make the tables and indexes the database lacks (at every start)."""
    metadata.create_all(engine)
    add_missing_columns(engine)


def add_missing_columns(engine: Engine) -> None:
    """Databases made by an older version lack the newer (always nullable) columns."""
    inspector = sa.inspect(engine)
    for table in (requests, builds, audit, processes, subscriptions):
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            assert column.nullable, f"{table.name}.{column.name} must be nullable to add"
            kind = column.type.compile(dialect=engine.dialect)
            with engine.begin() as c:
                c.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
            log.info("added column %s.%s", table.name, column.name)

    for table in (requests, builds, audit):
        for index in table.indexes:
            index.create(engine, checkfirst=True)
