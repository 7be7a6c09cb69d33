"""User-group membership from Slack (``usergroups.users.list``), cached.

The checks in ``policy`` ask ``members(group_id)``; ``None`` means membership
could not be found out, and the checks say so instead of guessing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.slack_budget import Priority, SlackBudget

BUDGET_WAIT = 10.0  # the longest a lookup waits for its token (it answers a person)

log = logging.getLogger(__name__)


class SlackUserGroups:
    """Members of each user group, kept ``ttl`` seconds; one lookup per group at a time."""

    def __init__(self, client: WebClient, *, ttl: float = 300.0,
                 clock: Callable[[], float] = time.monotonic,
                 budget: SlackBudget | None = None) -> None:
        """``budget``: the Slack budget a lookup takes its token from (Tier 2)."""
        self._client = client
        self.budget = budget
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()
        self._group_locks: dict[str, threading.Lock] = {}

    def cached(self, group_id: str) -> frozenset[str] | None:
        hit = self._cache.get(group_id)
        if hit and self._clock() - hit[0] < self._ttl:
            return hit[1]
        return None

    def members(self, group_id: str) -> frozenset[str] | None:
        hit = self.cached(group_id)
        if hit is not None:
            return hit
        with self._lock:
            group_lock = self._group_locks.setdefault(group_id, threading.Lock())
        with group_lock:
            hit = self.cached(group_id)
            return hit if hit is not None else self._fetch(group_id)

    def _fetch(self, group_id: str) -> frozenset[str] | None:
        if self.budget is not None and not self.budget.acquire(
                "usergroups.users.list", priority=Priority.ANSWER, max_wait=BUDGET_WAIT):
            log.warning("usergroup lookup not made group=%s: Slack's budget is spent",
                        group_id)
            return None
        try:
            resp = self._client.usergroups_users_list(usergroup=group_id)
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("usergroup lookup failed group=%s error=%s", group_id, _why(exc))
            return None
        users = resp.get("users")
        if not isinstance(users, list):
            log.warning("usergroup lookup gave no user list group=%s", group_id)
            return None
        members = frozenset(u for u in users if isinstance(u, str))
        self._cache[group_id] = (self._clock(), members)
        return members


class CachedOnly:
    """A view that answers from the cache alone and notes a miss.

    The slash-command listener uses it so the ack never waits on Slack; on a
    miss the decision is made again after the ack with real lookups.
    """

    def __init__(self, groups: SlackUserGroups) -> None:
        self._groups = groups
        self.missed = False

    def members(self, group_id: str) -> frozenset[str] | None:
        hit = self._groups.cached(group_id)
        if hit is None:
            self.missed = True
        return hit


def _why(exc: Exception) -> str:
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error", "unknown"))
    return type(exc).__name__
