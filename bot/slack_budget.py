"""One budget per Slack method, shared by all the bot's threads.

Slack caps how fast one app may call each Web API method in a workspace (its rate
limit tiers), and ``chat.postMessage`` at about one message a second per channel.
Above that it answers 429 with ``Retry-After``. Instead of learning the limit from
each call's own 429, every call takes a token from its method's bucket first:

* a bucket refills at the method's rate (``limit`` calls a minute, divided by the
  replicas alive, since each takes its share) and holds at most ``burst`` tokens;
* it keeps one call of Slack's burst in hand (``IN_HAND``): a call reaches Slack a
  little after its token was taken (threads, the network), not always in the order
  taken, so a budget that ran Slack's own bucket dry would get 429s from that jitter
  alone (``python -m bench.slack_limits`` showed them);
* a call waits for a token in order of who is waiting: a person's answer first, then a
  build's result, then an announcement; progress never waits (``take``), and only
  takes a token while the bucket holds more than half its tokens, so it spends only
  what the others leave and slows down as the budget tightens;
* a 429 pauses the method (that channel, for a per-channel method) for every caller
  for its ``Retry-After``, not only for the call that got it.

Time is a seam (``clock`` and ``wait``), so tests pace calls without sleeping.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum


class Priority(IntEnum):
    """Who is waiting for a call, most urgent first."""

    ANSWER = 0  # a person's command, click or form: ephemeral replies, views, look-ups,
    # and the channel message of a build whose Run click waits for it
    RESULT = 1  # a build's result: the thread reply, the parent update, a direct message
    ANNOUNCE = 2  # a build's channel message nobody waits for (a subscription's)
    PROGRESS = 3  # a running build's progress line: never waits, spends what is left


# Slack's documented limits, calls a minute: Tier 2 ~20, Tier 3 ~50, Tier 4 ~100;
# chat.postMessage about one a second per channel (``PER_CHANNEL``).
DEFAULT_LIMITS: dict[str, int] = {
    "chat.postMessage": 60,
    "chat.update": 50,
    "chat.postEphemeral": 100,
    "views.open": 100,
    "views.update": 100,
    "views.publish": 100,
    "chat.getPermalink": 100,
    "conversations.history": 50,
    "conversations.replies": 50,
    "conversations.info": 50,
    "conversations.open": 50,
    "usergroups.users.list": 20,
    "chat.unfurl": 50,  # Tier 3: a pasted build link's preview
    "functions.completeSuccess": 50,  # Tier 3: the Workflow Builder step's end
    "functions.completeError": 50,
}
PER_CHANNEL = frozenset({"chat.postMessage"})
BURST_SECONDS = 3.0  # a bucket holds this many seconds of calls (at least 1): short bursts
PROGRESS_RESERVE = 0.5  # progress takes a token only while more than this share is left
IN_HAND = 1.0  # calls of a bucket's burst never spent: Slack's bucket keeps them for jitter
MAX_WAIT = 30.0  # the longest a call waits for its token before it is given up
EPSILON = 1e-6  # a token this close to whole is whole (float refills never quite get there)
MIN_WAIT = 0.001  # the shortest wait for a token


def parse_limits(text: str | None) -> dict[str, int]:
    """``SLACK_RATE_LIMITS``: ``method=calls a minute`` pairs, comma-separated, over the
    defaults. Raises ValueError naming the first pair it cannot read."""
    limits = dict(DEFAULT_LIMITS)
    for pair in (text or "").split(","):
        if not pair.strip():
            continue
        method, sep, value = pair.partition("=")
        method, value = method.strip(), value.strip()
        if not sep or not method or not value.isascii() or not value.isdigit() \
                or int(value) < 1:
            raise ValueError(f"`{pair.strip()}` is not method=<calls a minute, 1 or more>")
        limits[method] = int(value)
    return limits


@dataclass
class _Bucket:
    rate: float  # tokens a second
    burst: float
    tokens: float
    updated: float
    paused_until: float = 0.0
    waiting: list[tuple[int, int]] = field(default_factory=list)  # (priority, ticket) heap

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    @property
    def in_hand(self) -> float:
        """Tokens left in the bucket after any call (none when it holds only one)."""
        return min(IN_HAND, self.burst - 1.0)

    @property
    def progress_floor(self) -> float:
        """Tokens progress leaves in the bucket: the reserve, and never the call in hand."""
        return max(self.in_hand, self.burst * PROGRESS_RESERVE)

    def due_in(self, now: float, floor: float) -> float:
        """Seconds until this bucket could give a token above ``floor`` (paused or not)."""
        short = max(0.0, floor + 1.0 - self.tokens)
        return max(MIN_WAIT, self.paused_until - now, short / self.rate)


def _wait(cond: threading.Condition, seconds: float) -> None:
    cond.wait(seconds)


class SlackBudget:
    """Tokens per method (and channel, for a per-channel method), shared by every thread
    of this process; ``share()`` says how many replicas split the workspace's limits."""

    def __init__(self, limits: Mapping[str, int] | None = None, *,
                 clock: Callable[[], float], share: Callable[[], int] = lambda: 1,
                 wait: Callable[[threading.Condition, float], None] = _wait) -> None:
        self.limits = dict(DEFAULT_LIMITS if limits is None else limits)
        self.clock = clock
        self.share = share
        self._wait = wait
        self._cond = threading.Condition()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._tickets = itertools.count()
        self.waited = 0.0  # seconds calls spent waiting for tokens, in all (for metrics)
        self.skipped = 0  # progress calls that found no token to spare

    def _bucket(self, method: str, channel: str | None, now: float) -> _Bucket | None:
        limit = self.limits.get(method)
        if limit is None:
            return None  # a method with no known limit is not paced
        key = (method, (channel or "") if method in PER_CHANNEL else "")
        bucket = self._buckets.get(key)
        rate = limit / 60.0 / max(1, self.share())
        if bucket is None:
            burst = max(1.0, rate * BURST_SECONDS)
            bucket = self._buckets[key] = _Bucket(rate, burst, burst, now)
            if len(self._buckets) > 10_000:  # channels come and go: forget the full ones
                self._forget_full(now)
        else:
            bucket.refill(now)
            bucket.rate, bucket.burst = rate, max(1.0, rate * BURST_SECONDS)
        return bucket

    def _forget_full(self, now: float) -> None:
        for key, bucket in list(self._buckets.items()):
            bucket.refill(now)
            if bucket.tokens >= bucket.burst and not bucket.waiting:
                del self._buckets[key]

    def take(self, method: str, channel: str | None = None) -> bool:
        """A progress call: a token now, only from what the others leave; never waits."""
        with self._cond:
            now = self.clock()
            bucket = self._bucket(method, channel, now)
            if bucket is None:
                return True
            floor = bucket.progress_floor
            if bucket.waiting or now < bucket.paused_until \
                    or bucket.tokens - 1.0 < floor - EPSILON:
                self.skipped += 1
                return False
            bucket.tokens -= 1.0
            return True

    def acquire(self, method: str, channel: str | None = None, *,
                priority: Priority = Priority.ANSWER, max_wait: float = MAX_WAIT) -> bool:
        """Wait for a token, behind every more urgent caller of the same bucket (and the
        earlier ones of the same urgency). False when none came within ``max_wait``."""
        if priority is Priority.PROGRESS:
            return self.take(method, channel)
        with self._cond:
            start = self.clock()
            bucket = self._bucket(method, channel, start)
            if bucket is None:
                return True
            ticket = (int(priority), next(self._tickets))
            heapq.heappush(bucket.waiting, ticket)
            try:
                return self._wait_turn(bucket, ticket, start + max_wait)
            finally:
                self.waited += max(0.0, self.clock() - start)

    def _wait_turn(self, bucket: _Bucket, ticket: tuple[int, int], deadline: float) -> bool:
        while True:
            now = self.clock()
            bucket.refill(now)
            if bucket.waiting[0] == ticket and now >= bucket.paused_until \
                    and bucket.tokens - 1.0 >= bucket.in_hand - EPSILON:
                heapq.heappop(bucket.waiting)
                bucket.tokens -= 1.0
                self._cond.notify_all()
                return True
            if now >= deadline:
                bucket.waiting.remove(ticket)
                heapq.heapify(bucket.waiting)
                self._cond.notify_all()
                return False
            due = bucket.due_in(now, bucket.in_hand)
            self._wait(self._cond, max(MIN_WAIT, min(due, deadline - now)))

    def pause(self, method: str, channel: str | None, seconds: float) -> None:
        """Slack answered 429: nobody calls this method (this channel's, for a
        per-channel one) for ``seconds``, and the bucket starts empty after."""
        with self._cond:
            now = self.clock()
            bucket = self._bucket(method, channel, now)
            if bucket is None:
                return
            bucket.paused_until = max(bucket.paused_until, now + max(0.0, seconds))
            bucket.tokens = min(bucket.tokens, 0.0)
            bucket.updated = max(bucket.updated, bucket.paused_until)
            self._cond.notify_all()

    def spare_rate(self, method: str) -> float | None:
        """Calls a second progress may spend of a method (what the reserve leaves); None
        for a method with no known limit."""
        limit = self.limits.get(method)
        if limit is None:
            return None
        return limit / 60.0 / max(1, self.share()) * (1.0 - PROGRESS_RESERVE)

    def busy(self, method: str, channel: str | None = None) -> bool:
        """Whether this method's budget is tight now (paused, or short of what progress
        may spend): progress says it is updated less often while Slack is busy."""
        with self._cond:
            now = self.clock()
            bucket = self._bucket(method, channel, now)
            if bucket is None:
                return False
            return now < bucket.paused_until or bucket.tokens - 1.0 < bucket.progress_floor
