"""Following a job's builds: the subscriptions that find builds started outside Slack,
and the per-job history read that decides all of a job's followed builds at once (the
builds of ours too), with each job's poll grid.

A subscribed job's watch is leased like a build; its holder reads the job's history
once (however many channels subscribe), records each new build that was not started
from Slack once per subscribed channel (a unique key on job, build number and
channel), and announces it. From then on it is a build like ours, with origin
"subscription": polled, reported in its thread once, with no requester.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.codearts.answers import BuildRecord, BuildState, HistoryRecord, state_from_times
from bot.codearts.client import CodeArtsClient
from bot.codearts.errors import CodeArtsError
from bot.lifecycle import (
    FILTER_ALL,
    MAX_ERROR_BACKOFF,
    RECONCILE_MARGIN,
    TRIGGER_SLACK,
    Build,
    Lease,
    Subscription,
    WatchState,
    branch_matches,
)
from bot.store import Store

log = logging.getLogger(__name__)

FOLLOW_PAGE = 50  # history lines of a job's first read, unless it needed more last time
HISTORY_LIMIT = 100  # the most lines one history call may ask for (the API's documented cap)
FOLLOW_LINES = 2_000  # lines read at most for one poll (20 calls of 100); older builds, or
# a job with more running builds, read their own record
HISTORIES_REMEMBERED = 10_000  # jobs whose last history read is kept in memory at most
MAX_BUILD_NO_DIGITS = 18


def _number(build_no: str) -> str:
    """A build number as one spelling (no leading zeros)."""
    return str(int(build_no)) if build_no.isdigit() else build_no


def history_state(record: HistoryRecord | None) -> BuildState | None:
    """A history line read as a build's record is read (a known final word, or any word
    with an end time, has ended); None when it cannot tell (no word and no end time)."""
    if record is None or (not record.result.strip() and record.end_time is None):
        return None
    return state_from_times(record.result, record.start_time, record.end_time)


@dataclass
class JobHistory:
    """One read of a job's history: the first page (newest first), every line read by
    build number, and whether older builds may still be listed further back."""

    read_at: float
    page: list[HistoryRecord] = field(default_factory=list)
    by_no: dict[str, HistoryRecord] = field(default_factory=dict)
    pages: int = 0
    lines: int = 0  # history lines read so far (the offset of the next page)
    complete: bool = False
    oldest: int | None = None

    def add(self, records: list[HistoryRecord], total: int | None, *, limit: int) -> None:
        """One page read (``limit``: the lines it asked for)."""
        usable = _usable(records)
        if self.pages == 0:
            self.page = usable
        for record in usable:
            self.by_no.setdefault(_number(record.build_no), record)
        self.pages += 1
        self.lines += limit
        numbers = [int(r.build_no) for r in usable]
        if numbers:
            self.oldest = min(numbers + ([self.oldest] if self.oldest is not None else []))
        self.complete = self.complete or len(records) < limit or (
            total is not None and self.lines >= total)

    def may_list(self, build_no: str) -> bool:
        """Could a page further back list this build?"""
        return (_number(build_no) not in self.by_no and not self.complete
                and self.oldest is not None and build_no.isdigit()
                and int(build_no) < self.oldest)


def _usable(records: list[HistoryRecord]) -> list[HistoryRecord]:
    """The history lines whose build number can be read (an overlong one is skipped)."""
    usable = [r for r in records if len(r.build_no) <= MAX_BUILD_NO_DIGITS]
    if len(usable) < len(records):
        log.info("history lines with an overlong build number skipped: %d",
                 len(records) - len(usable))
    return usable


class Following:
    """Subscriptions' discovery of new builds, and the per-job history read with its poll
    grid (one history call per job per poll, issue 16)."""

    def __init__(self, *, store: Store, api: CodeArtsClient, clock: Callable[[], float],
                 poll_seconds: float, history_polls: bool,
                 announce: Callable[[Build], object]) -> None:
        """``announce``: posts the channel message of a build a subscription found."""
        self.store = store
        self.api = api
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.announce = announce
        # the last history read of each job (shared by the job's builds due at the same
        # time), one lock per job so one call is made for them all, and each job's poll
        # grid (see next_check)
        self.history_polls = history_polls
        self._histories: dict[str, JobHistory] = {}
        self._history_locks: dict[str, threading.Lock] = {}
        self._anchors: dict[str, float] = {}
        self._histories_lock = threading.Lock()

    @staticmethod
    def is_followed(build: Build) -> bool:
        return build.watch is WatchState.WATCHING

    # --- subscriptions: builds started outside Slack (issue 16) ---------------------------

    def subscribe(self, *, channel_id: str, job_name: str, job_id: str, filter: str,
                  user_id: str, branch: str | None = None) -> tuple[str, str | None] | None:
        """Subscribe the channel to the job (audited); the mode and branch filter it
        replaced, if any."""
        now = self.clock()
        before = self.store.subscribe(channel_id=channel_id, job_name=job_name, job_id=job_id,
                                      filter=filter, user_id=user_id, now=now,
                                      since_no=self._newest_build_no(job_id), branch=branch)
        self.store.audit(decision="subscribe", now=now, user_id=user_id,
                         channel_id=channel_id, job=job_name,
                         detail=filter + (f" branch={branch}" if branch else ""))
        return before

    def unsubscribe(self, *, channel_id: str, job_name: str, user_id: str) -> bool:
        """End the channel's subscription to the job (audited); False when there was none."""
        existed = self.store.unsubscribe(channel_id=channel_id, job_name=job_name)
        if existed:
            self.store.audit(decision="unsubscribe", now=self.clock(), user_id=user_id,
                             channel_id=channel_id, job=job_name)
        return existed

    def subscriptions(self, channel_id: str) -> list[Subscription]:
        return self.store.subscriptions_of(channel_id=channel_id)

    def _newest_build_no(self, job_id: str) -> int | None:
        """The job's newest build number now: builds up to it started before the
        subscription and are never announced. None when CodeArts cannot say (then the
        builds' start times decide)."""
        try:
            records, _total = self.api.history(job_id, offset=0, limit=1)
        except CodeArtsError as exc:
            log.warning("newest build of job=%s not read: %s", job_id, type(exc).__name__)
            return None
        numbers = [int(r.build_no) for r in records if len(r.build_no) <= MAX_BUILD_NO_DIGITS]
        return max(numbers) if numbers else 0

    def discover(self, job_id: str, lease: Lease, *, due: float) -> None:
        """Find the new builds of a subscribed job (the holder of its watch, ``lease``)."""
        subs = self.store.subscriptions_of(job_id=job_id)
        if not subs:
            return  # unsubscribed meanwhile: the watch is not leased again
        try:
            history = self.job_history(job_id, fresh_after=due)
        except CodeArtsError as exc:
            failures = self.store.job_watch_failures(job_id) + 1
            log.warning("history of subscribed job=%s not read (%d in a row): %s", job_id,
                        failures, type(exc).__name__)
            self.store.reschedule_job_watch(
                job_id=job_id, owner=lease.owner, token=lease.token or 0, failures=failures,
                next_check_at=self.clock() + min(self.poll_seconds * 2 ** min(failures, 10),
                                                 MAX_ERROR_BACKOFF))
            return
        try:
            self._follow_new(job_id, subs, history)
        finally:
            self.store.reschedule_job_watch(
                job_id=job_id, owner=lease.owner, token=lease.token or 0,
                next_check_at=self.next_check(job_id, history.read_at + self.poll_seconds))

    def _follow_new(self, job_id: str, subs: list[Subscription], history: JobHistory) -> None:
        records = history.page
        ours = self.store.slack_numbers(job_id=job_id, build_nos=[r.build_no for r in records])
        sending = self.store.sending_since(job_id)
        top = max((int(r.build_no) for r in records), default=None)
        read: dict[str, BuildRecord | None] = {}  # each build's record, read once a pass
        for sub in subs:
            theirs = [r for r in _fresh(records, sub) if _considered(sub, ours.get(r.build_no))]
            waiting = _maybe_being_sent(theirs, sending)
            self._follow_each(job_id, sub, theirs, waiting, history.read_at, read, ours)
            self._advance(sub, top, waiting)

    def _advance(self, sub: Subscription, top: int | None,
                 waiting: list[HistoryRecord]) -> None:
        """The subscription has seen up to the newest build, or to just before the
        oldest one that may still be a run call of ours in flight."""
        seen = min((int(r.build_no) for r in waiting), default=None)
        upto = top if seen is None else seen - 1
        if upto is not None and (sub.since_no is None or upto > sub.since_no):
            self.store.advance_since(id=sub.id, to=upto)

    def build_record(self, job_id: str, build_no: str,
                     read: dict[str, BuildRecord | None]) -> BuildRecord | None:
        """A found build's build-info record (its daily number, branch, who started it),
        read once for every channel that follows it; where it names no branch, the
        build's ``codeBranch`` parameter. None when CodeArts cannot say (the build is
        followed without it)."""
        if build_no not in read:
            try:
                found = self.api.build_record(job_id, build_no)
            except CodeArtsError as exc:
                log.warning("record of build job=%s no=%s not read: %s", job_id, build_no,
                            type(exc).__name__)
                found = None
            if found is None or not found.code_branch:
                branch = self._branch_parameter(job_id, build_no)
                if branch:
                    found = (found or BuildRecord()).model_copy(update={"code_branch": branch})
            read[build_no] = found
        return read[build_no]

    def _branch_parameter(self, job_id: str, build_no: str) -> str | None:
        try:
            branch = self.api.build_parameters(job_id, build_no).get("codeBranch")
        except CodeArtsError as exc:
            log.warning("parameters of build job=%s no=%s not read: %s", job_id, build_no,
                        type(exc).__name__)
            return None
        return branch[:255] if branch else None

    def _follow_each(self, job_id: str, sub: Subscription, theirs: list[HistoryRecord],
                     waiting: list[HistoryRecord], read_at: float,
                     read: dict[str, BuildRecord | None],
                     ours: dict[str, tuple[str, str]]) -> None:
        """Record (once per channel) and announce each new build one subscription found
        on a branch its filter takes."""
        known = self.store.followed_numbers(
            job_id=job_id, channel_id=sub.channel_id, build_nos=[r.build_no for r in theirs])
        for record in sorted(theirs, key=lambda r: int(r.build_no)):
            if record in waiting or record.build_no in known:
                continue
            info = self.build_record(job_id, record.build_no, read)
            slack = ours.get(record.build_no)
            if slack is not None:  # started from Slack in another channel: who asked there
                info = (info or BuildRecord()).model_copy(
                    update={"executor": slack[1], "trigger": TRIGGER_SLACK})
            taken = branch_matches(sub.branch, info.code_branch if info else None)
            if not taken:
                if taken is None:
                    log.warning("build job=%s no=%s not followed in channel=%s: its branch "
                                "is not known and the subscription filters branches",
                                job_id, record.build_no, sub.channel_id)
                continue
            build = self.store.follow_build(
                job_id=job_id, job_name=sub.job_name, build_no=record.build_no,
                channel_id=sub.channel_id, notify=sub.filter, now=self.clock(),
                first_check_at=read_at, record=info)
            if build is None:
                continue  # another replica (or an earlier pass) has it
            log.info("following build=%s job=%s no=%s in channel=%s (%s)", build.id,
                     sub.job_name, record.build_no, sub.channel_id, sub.filter)
            if sub.filter == FILTER_ALL:
                self.announce(build)

    # --- one history call per job per poll (issue 16, section 3) ---------------------------

    def job_history(self, job_id: str, *, fresh_after: float,
                    need: str | None = None) -> JobHistory:
        """The job's history as read at or after ``fresh_after`` (one call, shared by every
        caller of this process that asks for it at the same time), paged further back
        (``HISTORY_LIMIT`` lines a call, at most ``FOLLOW_LINES`` in all) when ``need`` is
        older than what was read. The first call asks for as many lines as the job needed
        at its last read, so a job with many running builds is read in fewer calls."""
        with self._histories_lock:
            lock = self._history_locks.setdefault(job_id, threading.Lock())
        with lock:
            got = self._histories.get(job_id)
            if got is None or got.read_at < fresh_after:
                got = self._read_first(job_id, previous=got)
            while need is not None and got.may_list(need) and got.lines < FOLLOW_LINES:
                records, total = self.api.history(job_id, offset=got.lines,
                                                  limit=HISTORY_LIMIT)
                got.add(records, total, limit=HISTORY_LIMIT)
            return got

    def _read_first(self, job_id: str, previous: JobHistory | None) -> JobHistory:
        """The newest page of the job's history: ``FOLLOW_PAGE`` lines, or the whole
        page the API allows when the last read of the job had to go further back."""
        limit = HISTORY_LIMIT if previous is not None and previous.pages > 1 else FOLLOW_PAGE
        read_at = self.clock()
        records, total = self.api.history(job_id, offset=0, limit=limit)
        got = JobHistory(read_at)
        got.add(records, total, limit=limit)
        with self._histories_lock:
            if len(self._histories) >= HISTORIES_REMEMBERED:
                self._histories.clear()
                self._anchors.clear()
            self._histories[job_id] = got
        return got

    def state_of(self, build: Build) -> tuple[BuildState, float | None]:
        """Where a build stands, and the time of the history read it was decided from (None:
        from its own record). The job's history is read once for all the job's builds due
        now, ours and subscribed; the build's own record is read only when the history does
        not list it (or not readably), or for a build of ours whose daily number CodeArts
        has not told yet (only the record has it)."""
        if not self._from_history(build):
            return self.api.build_state(build.job_id, build.build_no), None
        history = self.job_history(build.job_id, fresh_after=build.next_check_at,
                                   need=build.build_no)
        state = history_state(history.by_no.get(_number(build.build_no)))
        if state is None:
            log.debug("build=%s not (readably) in the history of job=%s; reading its record",
                      build.id, build.job_name)
            return self.api.build_state(build.job_id, build.build_no), None
        return state, history.read_at

    def states_of(self, leased: list[tuple[Build, Lease]]) -> tuple[
            list[tuple[Build, Lease, BuildState, float | None]], list[tuple[Build, Lease]]]:
        """``state_of`` for builds of one job at once: one history read (as deep as the
        oldest of them needs) decides those it lists readably; the others are returned
        for their own record (as ``state_of`` would read it)."""
        listed = [(b, lease) for b, lease in leased if self._from_history(b)]
        rest = [(b, lease) for b, lease in leased if not self._from_history(b)]
        if not listed:
            return [], rest
        history = self.job_history(
            listed[0][0].job_id, fresh_after=max(b.next_check_at for b, _lease in listed),
            need=_oldest([b for b, _lease in listed]))
        decided: list[tuple[Build, Lease, BuildState, float | None]] = []
        for build, lease in listed:
            state = history_state(history.by_no.get(_number(build.build_no)))
            if state is None:
                rest.append((build, lease))
            else:
                decided.append((build, lease, state, history.read_at))
        return decided, rest

    def _from_history(self, build: Build) -> bool:
        """May the job's history decide this build (else its own record must)?"""
        return self.history_polls and not (build.origin is None
                                           and not build.daily_build_number)

    def next_check(self, job_id: str, at: float) -> float:
        """``at`` moved to the nearest point of the job's poll grid (the time of this
        process's first history read of the job, plus whole poll intervals), never into
        the past: builds of one job come due together, so one history read decides them
        all."""
        with self._histories_lock:
            anchor = self._anchors.setdefault(job_id, at)
        step = self.poll_seconds
        if step <= 0:
            return at
        snapped = anchor + round((at - anchor) / step) * step
        now = self.clock()
        if snapped <= now:  # the next point of the grid after now
            snapped += (math.floor((now - snapped) / step) + 1) * step
        return snapped


def _oldest(builds: list[Build]) -> str | None:
    """The oldest build number among these (the history must reach back to it)."""
    numbers = [b.build_no for b in builds if b.build_no.isdigit()]
    return min(numbers, key=int) if numbers else None


def _fresh(records: list[HistoryRecord], sub: Subscription) -> list[HistoryRecord]:
    """The history lines a subscription has not looked at yet: past its last build number,
    or (a new subscription) started since it was made."""
    return [r for r in records if (
        int(r.build_no) > sub.since_no if sub.since_no is not None else
        r.start_time is not None and r.start_time.timestamp() >= sub.created_at)]


def _considered(sub: Subscription, slack: tuple[str, str] | None) -> bool:
    """Does this subscription look at a build? Every build not started from Slack; for
    ``failures`` and ``changes`` also those started from Slack in another channel (the
    subscribed channel has its own in their threads)."""
    if slack is None:
        return True
    return sub.filter != FILTER_ALL and slack[0] != sub.channel_id


def _maybe_being_sent(theirs: list[HistoryRecord],
                      sending: float | None) -> list[HistoryRecord]:
    """A run of this job is being sent (since ``sending``): a build that started since may
    be that one, not recorded as ours yet; it is looked at again on a later pass."""
    if sending is None:
        return []
    return [r for r in theirs if r.start_time is None
            or r.start_time.timestamp() >= sending - RECONCILE_MARGIN]
