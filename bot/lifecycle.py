"""The life of a request and of a build: states, the moves allowed between them,
and the pure decisions that pick the next move.

A request (one ``/build`` command, or one Rebuild click)::

    (new) --> pending --Run--> sending --answer--> started
                 |                 |------refused--> failed
                 |                 `--no answer----> unknown
                 |--Cancel--> cancelled
                 |--time----> expired
                 `--Run, on a job that needs approval--> awaiting
    awaiting --N approvals--> sending      (the click that made it N)
       |------Reject------> rejected
       |------Withdraw----> withdrawn
       |------time--------> expired
       |------not asked---> failed       (the approval request could not be posted)
       `------enough approvals, the job at its max_running--> queued
    pending --Queue (the job at its max_running)--> queued
    queued --a slot frees (oldest of its job first)--> sending
       |------Leave-------> withdrawn
       `------queue_ttl---> expired
    sending --the checks of a run, made again, now say no--> refused
    (new) --> sending        (a job with ``confirm = false``)
    (new) --> awaiting       (a job with ``confirm = false`` that needs approval)

A build (a request CodeArts accepted) has two independent parts::

    announce:  posting --> posted      (the channel message and its ts)
                      `--> fallback    (posted through the response_url; no thread)
    watch:     watching --> reporting --> done

Nothing here does I/O. The store makes each move with one conditional
``UPDATE ... WHERE state = <from>`` and acts only when it won; the engine
performs what a decision asks for. A new feature is a new state or event
here, a branch in a decision, and a message in ``messages``.
"""

from __future__ import annotations

import fnmatch
import json
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot import messages as msg
from bot.codearts.answers import BuildState, Step
from bot.codearts.errors import AuthError, CodeArtsError, Kind, NotSentError, describe

CONFIRM_TTL = 600.0  # seconds a Run/Cancel question stays answerable
CONFIRM_MINUTES = int(CONFIRM_TTL // 60)
MAX_AGE = 24 * 3600.0  # a build is followed (and its result retried) this long at most
MAX_ERROR_BACKOFF = 600.0  # longest wait between two failing status checks
REPORT_RETRY = 30.0  # first wait before posting a result again after a passing Slack error
MAX_REPORT_BACKOFF = 900.0


class RequestState(StrEnum):
    PENDING = "pending"  # waiting for Run or Cancel
    SENDING = "running"  # claimed: the run call is being made (stored as "running")
    STARTED = "started"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FAILED = "failed"  # CodeArts refused, or the call never left: nothing started
    UNKNOWN = "unknown"  # the call may have reached CodeArts: never sent again by itself
    AWAITING = "awaiting"  # Run was clicked; waiting for approval by a second person
    REJECTED = "rejected"  # an approver said no
    WITHDRAWN = "withdrawn"  # the requester took it back while it waited
    QUEUED = "queued"  # the job was at its max_running: starts when a slot frees
    REFUSED = "refused"  # decided again before sending, the configuration now says no


class AnnounceState(StrEnum):
    POSTING = "posting"
    POSTED = "posted"
    FALLBACK = "fallback"


class WatchState(StrEnum):
    WATCHING = "watching"
    REPORTING = "reporting"
    DONE = "done"


State = RequestState | AnnounceState | WatchState

# The only moves there are. Terminal states have no entry.
TRANSITIONS: dict[State, frozenset[State]] = {
    RequestState.PENDING: frozenset({RequestState.SENDING, RequestState.CANCELLED,
                                     RequestState.EXPIRED, RequestState.AWAITING,
                                     RequestState.QUEUED}),
    RequestState.AWAITING: frozenset({RequestState.SENDING, RequestState.REJECTED,
                                      RequestState.WITHDRAWN, RequestState.EXPIRED,
                                      RequestState.FAILED, RequestState.QUEUED}),
    # queued: the oldest of its job claimed when a slot frees; or left, or too old
    RequestState.QUEUED: frozenset({RequestState.SENDING, RequestState.WITHDRAWN,
                                    RequestState.EXPIRED}),
    # refused: the checks of a run, made again just before sending, now say no
    RequestState.SENDING: frozenset({RequestState.STARTED, RequestState.FAILED,
                                     RequestState.UNKNOWN, RequestState.REFUSED}),
    AnnounceState.POSTING: frozenset({AnnounceState.POSTED, AnnounceState.FALLBACK}),
    WatchState.WATCHING: frozenset({WatchState.REPORTING}),
    WatchState.REPORTING: frozenset({WatchState.DONE}),
}
INITIAL: frozenset[State] = frozenset({RequestState.PENDING, RequestState.SENDING,
                                       RequestState.AWAITING, AnnounceState.POSTING,
                                       WatchState.WATCHING})
TERMINAL_REQUEST = frozenset(s for s in RequestState if s not in TRANSITIONS)


class IllegalTransition(ValueError):
    """A move the table does not allow: a bug in the caller, never a user's doing."""


def allowed(old: State, new: State) -> bool:
    return type(old) is type(new) and new in TRANSITIONS.get(old, frozenset())


def check(old: State, new: State) -> None:
    if not allowed(old, new):
        raise IllegalTransition(f"{type(old).__name__}: {old.value} -> {new.value}")


def new_error_id() -> str:
    """The short ID a user quotes to an operator; the same ID is in the log line."""
    return uuid.uuid4().hex[:8]


class ClaimReason(StrEnum):
    """Why a claim on a pending request (a Run or Queue click, a slot) came out as it
    did; a claim that found the request in another state gives that state instead."""

    CLAIMED = "claimed"  # this claim made the move
    MISSING = "missing"
    NOT_YOURS = "not_yours"
    EXPIRES_NOW = "expires_now"  # this claim found it past its time and expired it
    FULL = "full"  # the job is at its max_running; the request stays pending
    OVER_LIMIT = "over_limit"  # the user's hourly limit; the request stays pending


class ApprovalOutcome(StrEnum):
    """What an Approve click came to; one that found the request in another state gives
    that state instead."""

    START = "start"  # the one approval that made it enough: the request is now sending
    RECORDED = "recorded"  # more approvals are needed
    QUEUED = "queued"  # enough, but the job is at its max_running: queued
    MISSING = "missing"
    APPROVED_ALREADY = "approved_already"
    EXPIRES_NOW = "expires_now"  # this click found it past its time and expired it
    ENOUGH = "enough"  # enough approvals came first; it is starting


# --- the rows, typed ----------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    id: str
    state: RequestState
    created_at: float
    expires_at: float
    updated_at: float
    user_id: str
    team_id: str | None
    channel_id: str
    job_name: str
    job_id: str
    command: str  # normalised command text, for Rebuild
    body: dict[str, Any]  # the exact JSON sent to CodeArts
    response_url: str | None
    error: str | None = None
    rebuild_of: str | None = None
    # approval by a second person (a job with approvers): how many distinct approvals it
    # needs, who gave them (in order), and the approval message's channel and ts
    approvals_needed: int | None = None
    approved_by: tuple[str, ...] = ()
    approval_channel: str | None = None
    approval_ts: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> Request:
        return cls(id=row["id"], state=RequestState(row["state"]),
                   created_at=row["created_at"], expires_at=row["expires_at"],
                   updated_at=row["updated_at"], user_id=row["user_id"],
                   team_id=row["team_id"], channel_id=row["channel_id"],
                   job_name=row["job_name"], job_id=row["job_id"], command=row["command"],
                   body=json.loads(row["body"]), response_url=row["response_url"],
                   error=row["error"], rebuild_of=row.get("rebuild_of"),
                   approvals_needed=row.get("approvals_needed"),
                   approved_by=tuple((row.get("approved_by") or "").split()),
                   approval_channel=row.get("approval_channel"),
                   approval_ts=row.get("approval_ts"))


@dataclass(frozen=True)
class Claim:
    """What a claim found: ``ok`` only for the one claim that moved the request."""

    ok: bool
    reason: ClaimReason | RequestState
    request: Request | None = None


@dataclass(frozen=True)
class Approval:
    """What an Approve click came to (``ApprovalOutcome``, or the state it found)."""

    outcome: ApprovalOutcome | RequestState
    request: Request | None = None


@dataclass(frozen=True)
class Build:
    id: str  # the request's id
    created_at: float
    user_id: str
    channel_id: str
    job_name: str
    job_id: str
    build_no: str
    daily_build_number: str
    response_url: str | None
    announce: AnnounceState
    announce_claimed_at: float | None
    message_channel: str | None
    message_ts: str | None
    watch: WatchState
    next_check_at: float
    lease_owner: str | None
    lease_until: float | None
    lease_token: int | None
    failures: int
    result: str | None
    duration_ms: int | None
    finished_at: float | None
    age: float = 0.0  # seconds since it started, by the database's clock, when leased
    # live progress in the channel message: the line last shown, and when the next
    # update may be made (a 429 pushes it further)
    progress_text: str | None = None
    progress_due_at: float | None = None
    # a build a subscription found (started outside Slack): origin "subscription", and
    # what its channel asked for (notify: all | failures); None for the bot's own builds
    origin: str | None = None
    notify: str | None = None
    # from the build-info record (a followed build): branch, CodeArts user, trigger word
    branch: str | None = None
    started_by: str | None = None
    trigger: str | None = None
    flip: str | None = None  # a ``changes`` build: its settled Flip (JSON)

    @classmethod
    def from_row(cls, row: Any) -> Build:
        return cls(id=row["id"], created_at=row["created_at"], user_id=row["user_id"],
                   channel_id=row["channel_id"], job_name=row["job_name"],
                   job_id=row["job_id"], build_no=row["build_no"],
                   daily_build_number=row["daily_build_number"],
                   response_url=row["response_url"], announce=AnnounceState(row["announce"]),
                   announce_claimed_at=row["announce_claimed_at"],
                   message_channel=row["message_channel"], message_ts=row["message_ts"],
                   watch=WatchState(row["watch"]), next_check_at=row["next_check_at"],
                   lease_owner=row["lease_owner"], lease_until=row["lease_until"],
                   lease_token=row.get("lease_token"),
                   failures=row["failures"], result=row["result"],
                   duration_ms=row["duration_ms"], finished_at=row["finished_at"],
                   age=float(row.get("age") or 0.0),
                   progress_text=row.get("progress_text"),
                   progress_due_at=row.get("progress_due_at"),
                   origin=row.get("origin"), notify=row.get("notify"),
                   branch=row.get("branch"), started_by=row.get("started_by"),
                   trigger=row.get("trigger"), flip=row.get("flip"))


@dataclass(frozen=True)
class Lease:
    """A replica's hold on a build: its writes name the token, so a holder that froze past
    its lease cannot write over the next holder's work."""

    owner: str
    token: int | None
    seconds: float


# --- decisions ------------------------------------------------------------------------

@dataclass(frozen=True)
class RunFailure:
    """What a failed run call comes to: the request's next state, what the requester
    reads, and the audit entry."""

    state: RequestState
    reply: msg.Message
    audit: str
    error_code: str | None
    error_msg: str


def decide_run_failure(job: str, exc: CodeArtsError) -> RunFailure:
    """What a run error comes to; its words are ``describe``'s. Nothing was started when
    CodeArts refused (4xx) or was never reached. When the call may have reached it (no
    answer, an unreadable answer, a 5xx where the back end may have acted) the request
    stays ``sending`` (``UNKNOWN`` here means "settle it from the job's history"), and the
    user is told that buildbot is finding out."""
    told = describe(exc)
    text = told.error_msg or told.sentence
    if told.may_have_acted:
        reply = msg.checking(job, status=told.status, error_code=told.error_code,
                             unreadable=told.kind is Kind.UNREADABLE,
                             error_msg=told.error_msg, request_id=told.request_id)
        return RunFailure(RequestState.UNKNOWN, reply, "answer_lost", told.error_code, text)
    if isinstance(exc, NotSentError):
        reply = msg.not_sent(job, told.sentence)
    elif isinstance(exc, AuthError):
        reply = msg.login_failed(job, status=told.status, error_code=told.error_code,
                                 error_msg=told.error_msg, hint=told.hint,
                                 request_id=told.request_id)
    else:
        reply = msg.api_error(job, status=told.status, error_code=told.error_code,
                              error_msg=told.error_msg, hint=told.hint,
                              request_id=told.request_id)
    return RunFailure(RequestState.FAILED, reply, "api_error", told.error_code, text)


@dataclass(frozen=True)
class PollDecision:
    """After a status check: keep watching (``delay`` seconds from now) or report."""

    watch: WatchState
    delay: float = 0.0
    failures: int = 0
    result: str | None = None
    duration_ms: int | None = None


def poll_interval(age: float, poll: float) -> float:
    """Back off for long builds: every poll for 10 minutes, then 2x, then 4x after an hour."""
    if age < 600:
        return poll
    return poll * (2 if age < 3600 else 4)


def decide_poll(build: Build, answer: BuildState | CodeArtsError, *, poll: float,
                max_age: float = MAX_AGE) -> PollDecision:
    if isinstance(answer, CodeArtsError):
        if build.age > max_age:
            return PollDecision(WatchState.REPORTING, result="timeout")
        failures = build.failures + 1
        return PollDecision(WatchState.WATCHING, failures=failures,
                            delay=min(poll * 2 ** min(failures, 10), MAX_ERROR_BACKOFF))
    if not answer.finished:
        if build.age > max_age:
            return PollDecision(WatchState.REPORTING, result="timeout")
        return PollDecision(WatchState.WATCHING, delay=poll_interval(build.age, poll))
    return PollDecision(WatchState.REPORTING, result=result_of(answer),
                        duration_ms=duration_of(answer))


def result_of(state: BuildState) -> str:
    """What is stored and shown for an ended build: success, failure, aborted, unknown,
    or ``ended:<WORD>`` for a status word the bot does not know on a build that has a
    finish time (so it has ended whatever the word means)."""
    if state.outcome == "ended":
        return f"ended:{state.status}"[:32]
    return state.outcome or "unknown"


def duration_of(state: BuildState) -> int | None:
    if state.duration_ms is not None:
        return int(state.duration_ms)
    if state.start_time is not None and state.finish_time is not None:
        return int((state.finish_time - state.start_time).total_seconds() * 1000)
    return None


@dataclass(frozen=True)
class ReportDecision:
    """After Slack would not take a result: try again later, or tell the requester
    directly and end the watch."""

    retry_in: float | None  # None: stop retrying
    direct_message: bool
    failures: int


def decide_report_refused(build: Build, *, permanent: bool,
                          max_age: float = MAX_AGE) -> ReportDecision:
    failures = build.failures + 1
    if permanent or build.age > max_age:
        return ReportDecision(None, True, failures)
    return ReportDecision(min(REPORT_RETRY * 2 ** min(failures - 1, 10), MAX_REPORT_BACKOFF),
                          False, failures)


# --- live progress and the log tail ----------------------------------------------------

PROGRESS_EVERY = 10.0  # default seconds between two progress updates of one message
PROGRESS_MAX_DELAY = 600.0  # longest a refused progress update waits before the next try
STEP_DONE, STEP_RUNNING, STEP_ERROR, STEP_WAITING = "success", "running", "error", ""


ELAPSED_MARKS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120)  # minutes; then every hour


def elapsed_words(seconds: float) -> str:
    """The last mark passed (1, 2, 5, 10, 15, 20, 30, 45 min, 1 h, 1 h 30 min, 2 h, then
    whole hours), so the text, and so the message, changes a few times in a build's life
    while nothing else happens, not every minute: at 1,000 builds that is the difference
    between a few and 16 channel updates a second."""
    minutes = max(0, int(seconds // 60))
    if minutes < 1:
        return "less than a minute"
    mark = max(m for m in ELAPSED_MARKS if m <= minutes)
    if minutes >= 180:
        mark = minutes // 60 * 60
    hours, rest = divmod(mark, 60)
    words = (f"{hours} h {rest} min" if rest else f"{hours} h") if hours else f"{rest} min"
    return f"over {words}"


# Which step the progress line names, the first rule that matches a step deciding: the
# one running, else the one that failed, else one in a state buildbot does not know (shown
# as CodeArts words it). Each rule: (the status it wants, what follows the step's name).
_STEP_RULES: tuple[tuple[Callable[[str], bool], Callable[[str], str]], ...] = (
    (lambda status: status == STEP_RUNNING, lambda status: ""),
    (lambda status: status == STEP_ERROR, lambda status: " failed"),
    (lambda status: status not in (STEP_DONE, STEP_WAITING),
     lambda status: f" ({msg.escape(msg.shorten(status, 24))})"),
)


def step_words(steps: Sequence[Step]) -> str | None:
    """``step 3 of 5: Build image`` for the step running (or failed, or in an unknown
    state, shown as it is); None when there are no steps or none has begun."""
    if not steps:
        return None
    for wanted, after in _STEP_RULES:
        i = next((i for i, step in enumerate(steps) if wanted(step.status)), None)
        if i is not None:
            return f"{_step_at(steps, i)}{after(steps[i].status)}"
    return _steps_done_words(steps)


def _step_at(steps: Sequence[Step], i: int) -> str:
    """``step 3 of 5: Build image`` for ``steps[i]``."""
    name = msg.escape(msg.shorten(" ".join(steps[i].name.split()), 80))
    return f"step {i + 1} of {len(steps)}: {name}"


def _steps_done_words(steps: Sequence[Step]) -> str | None:
    """Every step done or waiting: all done, the next after those done, or None when none
    has begun."""
    done = sum(1 for step in steps if step.status == STEP_DONE)
    if done == len(steps):
        return f"all {len(steps)} steps done"
    if done == 0:
        return None
    following = next(i for i, step in enumerate(steps) if step.status != STEP_DONE)
    return _step_at(steps, following)


def progress_line(elapsed: float, steps: Sequence[Step] | None, *,
                  busy_every: float | None = None) -> str:
    """What the channel message says while the build runs (escaped mrkdwn); with
    ``busy_every``, that it is updated only that often while Slack is busy."""
    words = step_words(steps or [])
    line = f"Running for {elapsed_words(elapsed)}"
    line = f"{line} · {words}" if words else line
    if busy_every is not None:
        line += f" · updated every {_every_words(busy_every)} while Slack is busy"
    return line


def _every_words(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, math.ceil(seconds))} s"
    return f"{math.ceil(seconds / 60)} min"


def progress_pace(*, every: float, messages: int, spare_per_second: float | None) -> float:
    """Seconds between two progress updates of one message: ``every``, or longer when
    the updates of all ``messages`` would spend more than the Slack budget spares for
    progress (``spare_per_second``; None: no budget), so each message's turn comes round
    instead of some going silent."""
    if not spare_per_second or messages <= 0:
        return every
    return max(every, min(messages / spare_per_second, PROGRESS_MAX_DELAY))


def progress_due(build: Build, *, now: float, every: float) -> bool:
    """May the channel message of this build be updated now? Only when progress is on,
    the message's ts is known, and its next update time has come."""
    if every <= 0 or not build.message_ts or build.announce is not AnnounceState.POSTED:
        return False
    return build.progress_due_at is None or now >= build.progress_due_at


def decide_progress(build: Build, line: str, *, now: float, every: float) -> bool:
    """Update the message now: it is due and the text changed (never the same twice)."""
    return progress_due(build, now=now, every=every) and line != build.progress_text


def progress_delay(*, every: float, retry_after: float | None, permanent: bool) -> float:
    """How long a message waits after Slack refused its progress update: Slack's
    Retry-After (at least ``every``) on a 429, ten intervals after a final refusal (a
    deleted message), one interval otherwise."""
    if retry_after is not None:
        return min(max(retry_after, every), PROGRESS_MAX_DELAY)
    if permanent:
        return min(every * 10, PROGRESS_MAX_DELAY)
    return every


def wants_log_tail(result: str) -> bool:
    """A build that did not succeed (failed, stopped, or ended with a word buildbot does
    not know) gets its log's last lines in the thread reply."""
    return result in ("failure", "aborted") or result.startswith(msg.ENDED)


# --- a run whose answer was lost -------------------------------------------------------

RECONCILE_MARGIN = 120.0  # builds started this long before the intent still count (clocks)


@dataclass(frozen=True)
class Candidate:
    """A build of the job that started around the moment a run was sent."""

    build_no: str
    started_at: float | None  # epoch seconds
    parameters: dict[str, str]


@dataclass(frozen=True)
class Settlement:
    """What the job's history says about a run whose answer never came: ``adopt`` the one
    build that is it; ``not_started`` when the history covers the moment and none is;
    ``ambiguous`` when several may be; ``unknown`` when the history cannot tell.
    ``request_id``: of CodeArts' answer when the history could not be read, if it had one."""

    kind: str  # adopt, not_started, ambiguous, unknown
    builds: tuple[str, ...] = ()
    request_id: str | None = None


def sent_parameters(body: dict[str, Any]) -> dict[str, str]:
    return {str(p.get("name")): str(p.get("value")) for p in body.get("parameter") or []
            if isinstance(p, dict)}


def decide_settlement(body: dict[str, Any], intent_at: float, candidates: list[Candidate],
                      covered: bool) -> Settlement:
    """Pure: match the builds that started after the intent (less a margin for clocks)
    against the parameters that were sent. Never decides to send the run again."""
    wanted = sent_parameters(body)
    matching = [c for c in candidates
                if (c.started_at is None or c.started_at >= intent_at - RECONCILE_MARGIN)
                and all(c.parameters.get(k) == v for k, v in wanted.items())]
    if len(matching) == 1:
        return Settlement("adopt", (matching[0].build_no,))
    if matching:
        return Settlement("ambiguous", tuple(c.build_no for c in matching))
    return Settlement("not_started" if covered else "unknown")


# --- guard rails: approval by a second person, the per-user limit --------------------

HOUR = 3600.0


@dataclass(frozen=True)
class ApprovalRule:
    """Who may approve a job's requests, how many distinct approvals start it, where the
    question is asked (None: the request's channel) and how long it stays open."""

    approvers: tuple[str, ...]
    groups: tuple[str, ...]
    needed: int
    channel: str | None
    ttl: float


def approval_refusal(rule: ApprovalRule, *, requester: str, user: str,
                     members: Callable[[str], frozenset[str] | None]) -> str | None:
    """Why ``user`` may not approve (or reject) this request; None when they may.

    The requester never may, even when listed. A listed user may; so may a member of a
    listed group (``members`` answers None when a group's membership is unknown). Where
    the click came from does not matter: approval is about the person."""
    if user == requester:
        return "self"
    if user in rule.approvers:
        return None
    unknown = False
    for group in rule.groups:
        found = members(group)
        if found is None:
            unknown = True
        elif user in found:
            return None
    return "unchecked" if unknown else "not_approver"


def approvals_left(needed: int | None, approved_by: tuple[str, ...]) -> int:
    """How many more distinct approvals the request needs."""
    return max(0, (needed or 1) - len(set(approved_by)))


def next_allowed(starts: list[float], *, limit: int | None, now: float,
                 window: float = HOUR) -> float | None:
    """When the user may start the next build, given when their recent builds started
    (in-flight ones count as now); None when they may start one now."""
    if limit is None:
        return None
    recent = sorted(t for t in starts if t > now - window)
    if len(recent) < limit:
        return None
    return recent[len(recent) - limit] + window


# --- subscriptions: builds started outside Slack ---------------------------------------

ORIGIN_SUBSCRIPTION = "subscription"  # a build a channel's subscription found
FILTER_ALL, FILTER_FAILURES, FILTER_CHANGES = "all", "failures", "changes"
TRIGGER_SLACK = "SLACK"  # a followed build started from Slack in another channel


@dataclass(frozen=True)
class Subscription:
    """A channel's subscription to a job's builds started outside Slack. ``since_no``: the
    builds up to this number were looked at (or older than the subscription)."""

    id: int
    channel_id: str
    job_name: str
    job_id: str
    filter: str
    created_by: str
    created_at: float
    since_no: int | None
    branch: str | None = None  # a branch glob (None: every branch)

    @classmethod
    def from_row(cls, row: Any) -> Subscription:
        return cls(id=int(row["id"]), channel_id=row["channel_id"], job_name=row["job_name"],
                   job_id=row["job_id"], filter=row["filter"], created_by=row["created_by"],
                   created_at=float(row["created_at"]),
                   since_no=None if row["since_no"] is None else int(row["since_no"]),
                   branch=row.get("branch"))


def branch_of_body(body: Any) -> str | None:
    """The branch a run body names (its ``codeBranch`` parameter), or None."""
    params = body.get("parameter") if isinstance(body, dict) else None
    for p in params if isinstance(params, list) else []:
        if isinstance(p, dict) and p.get("name") == "codeBranch" \
                and isinstance(p.get("value"), str) and p["value"]:
            return str(p["value"])[:255]
    return None


def branch_matches(glob: str | None, branch: str | None) -> bool | None:
    """Does the build's branch pass a subscription's filter? True without a filter; None
    when the branch is not known and there is a filter (it cannot tell). ``*`` and ``?``
    as fnmatch's, case sensitive (``bot.command.branch_glob_problem`` allows no ``[``)."""
    if not glob:
        return True
    if branch is None:
        return None
    return fnmatch.fnmatchcase(branch, glob)


def followed_failed(result: str) -> bool:
    """Is this the end of a build a ``failures`` subscription announces? A failure, or an
    end buildbot cannot read as a success (unknown, a word it does not know)."""
    return result in ("failure", "unknown") or result.startswith(msg.ENDED)


# --- ``changes`` subscriptions: a branch breaks, a branch is fixed (issue 28) -----------

FLIP_BROKE, FLIP_FIXED = "broke", "fixed"


@dataclass(frozen=True)
class PriorBuild:
    """A finished build of the same job on the same branch, before the one that ended."""

    no: int
    good: bool  # a success (else a failure; stopped builds are not results here)
    name: str  # its daily number, or #N
    ended_at: float | None


@dataclass(frozen=True)
class Flip:
    """What the end of a ``changes`` build meant on its branch: ``kind`` broke, fixed or
    "" (no flip: nothing is posted). ``last_good``: the success before a break;
    ``failed``: builds that failed since the last success (for a fix); ``broken_for``:
    seconds from the first of those failures' end to the fix's end."""

    kind: str = ""
    branch: str = ""
    last_good: str = ""
    failed: int = 0
    broken_for: float | None = None

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "branch": self.branch,
                           "last_good": self.last_good, "failed": self.failed,
                           "broken_for": self.broken_for})

    @classmethod
    def from_json(cls, text: str | None) -> Flip:
        try:
            data = json.loads(text or "{}")
        except ValueError:
            return cls()
        if not isinstance(data, dict):
            return cls()
        took = data.get("broken_for")
        return cls(kind=str(data.get("kind") or ""), branch=str(data.get("branch") or ""),
                   last_good=str(data.get("last_good") or ""),
                   failed=int(data.get("failed") or 0),
                   broken_for=float(took) if isinstance(took, int | float) else None)


def changes_result(result: str) -> bool | None:
    """A result as ``changes`` reads it: True a success, False a failure (or an end that
    cannot be read as a success), None neither (stopped, given up on)."""
    if result == "success":
        return True
    if followed_failed(result):
        return False
    return None


def decide_flip(*, branch: str, good: bool, ended_at: float,
                prior: Sequence[PriorBuild]) -> Flip:
    """The previous finished build on the branch (the newest in ``prior``, which holds
    only builds numbered before this one) decides: a failure after a success broke it, a
    success after a failure fixed it; anything else (or no previous build) is no flip."""
    before = sorted(prior, key=lambda p: p.no, reverse=True)
    if not before or before[0].good == good:
        return Flip()
    if not good:
        return Flip(FLIP_BROKE, branch, last_good=before[0].name)
    failures = []
    for p in before:
        if p.good:
            break
        failures.append(p)
    first = failures[-1].ended_at
    return Flip(FLIP_FIXED, branch, failed=len(failures),
                broken_for=None if first is None else max(0.0, ended_at - first))
