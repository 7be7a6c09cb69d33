"""State behind SQLAlchemy Core: pending confirmations, started builds, the audit log.

Exactly-once without flags in memory: every step that must happen once is a
conditional ``UPDATE ... WHERE state = ...`` and the caller acts only when it
changed a row. Watches are leased rows (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL), so several replicas share them and a dead one's come back.
Times are epoch seconds (floats): portable across SQLite and PostgreSQL.

``Store`` is one object, made of one class of queries per feature, each in its module
(its docstring says what the feature's rows mean and how each step happens once):

- ``confirmations``: requests, claimed by exactly one Run click, moved, expired
- ``approvals``: approvals by a second person; the one that makes enough starts it
- ``limits``: a job's max_running (its slot row, locked) and the hourly per-user limit
- ``queue``: requests waiting for a free slot of their job
- ``watches``: builds: recorded, announced once, leased and fenced, reported, progress
- ``following``: subscriptions, job watches, builds they find, the webhook's nudge
- ``heartbeats``: the bot's processes, and which of them died
- ``function_runs``: runs of the Workflow Builder step, recorded once, completed once
- ``notify``: "Notify me": who asked for a DM when a build ends, each sent once
- ``on_it``: "I'm on it": failure replies, who took each, the success that closed it
- ``housekeeping``: the audit log, and pruning
- ``home``: the App Home: who opened it, its publishing turn, what changed

beside ``schema`` (the tables and indexes, the engine, the migration step), ``clock``
(the database's clock) and ``base`` (the engine, one transaction, one move).
"""

from __future__ import annotations

from bot.lifecycle import Approval, Claim  # they live in lifecycle; re-exported here
from bot.store.approvals import ApprovalQueries
from bot.store.clock import DatabaseClock
from bot.store.confirmations import OpenQuestion, RequestQueries
from bot.store.following import FollowingQueries
from bot.store.function_runs import FunctionRun, FunctionRunQueries
from bot.store.heartbeats import DEAD_AFTER, HEARTBEAT_EVERY, ProcessQueries
from bot.store.home import HomeQueries
from bot.store.housekeeping import AUDIT_TEXT_LIMIT, Housekeeping
from bot.store.limits import LimitQueries, Slots
from bot.store.notify import NotifyQueries
from bot.store.on_it import OnItQueries
from bot.store.queue import QueueQueries
from bot.store.schema import (
    audit,
    builds,
    engine_url,
    home_tabs,
    job_slots,
    job_watch,
    make_engine,
    metadata,
    processes,
    requests,
    subscriptions,
)
from bot.store.watches import REPORT_GRACE, AlreadySettled, BuildQueries, Reschedule

__all__ = [
    "AUDIT_TEXT_LIMIT",
    "DEAD_AFTER",
    "HEARTBEAT_EVERY",
    "REPORT_GRACE",
    "AlreadySettled",
    "Approval",
    "Claim",
    "DatabaseClock",
    "FunctionRun",
    "OpenQuestion",
    "Reschedule",
    "Slots",
    "Store",
    "audit",
    "builds",
    "engine_url",
    "home_tabs",
    "job_slots",
    "job_watch",
    "make_engine",
    "metadata",
    "processes",
    "requests",
    "subscriptions",
]


class Store(ApprovalQueries, QueueQueries, RequestQueries, LimitQueries, BuildQueries,
            FollowingQueries, NotifyQueries, OnItQueries, ProcessQueries, Housekeeping,
            HomeQueries, FunctionRunQueries):
    """The few queries the bot needs; every method is one short transaction, and every
    state change one conditional UPDATE that the lifecycle table allows."""
