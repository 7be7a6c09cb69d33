"""Recovery: what a crash, a lost answer or a database that was away left unsettled.

Run calls whose answer never came are settled from the job's history (one matching
build adopted, none told as not started and asked again, otherwise told as unknown);
the run is never sent again. Channel messages whose post was not confirmed are looked
for in the channel before they are posted again; run answers and message ts the store
could not record are kept in memory and recorded by the watcher's next pass. Every move
is the store's conditional one (intent first, ``AlreadySettled`` when another process
got there), so each message is posted once.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

from bot import messages as msg
from bot.clicks import Desk
from bot.codearts.answers import HistoryRecord, RunResult
from bot.codearts.client import CodeArtsClient
from bot.codearts.errors import CodeArtsError, request_id_in, request_id_of
from bot.config import BuildbotConfig
from bot.lifecycle import (
    CONFIRM_TTL,
    RECONCILE_MARGIN,
    Build,
    Candidate,
    Request,
    RequestState,
    Settlement,
    decide_settlement,
)
from bot.notifier import Notifier
from bot.store import AlreadySettled, Store

log = logging.getLogger(__name__)

# A run call or channel post whose owner still beats is left alone this long: longer than
# a live call lasts with its timeouts and retries (a Slack post: 10 s a try, at most 8
# tries, 429s waited only when Retry-After is 10 s or less, about 115 s in all; the run
# call is retried only when it never left). An owner that stopped beating is settled at
# once (bot.heartbeat).
INTENT_GRACE = 120.0
ANNOUNCE_RETRY = 5.0  # seconds before a post that ended unconfirmed is looked for and retried
ANSWER_LOST = "answer lost: "  # the note on a request whose run answer never came
SETTLE_SOON = 20.0  # seconds before a lost answer is looked for in the history
NOT_STARTED_AFTER = 60.0  # "nothing started" only once the history had this long to show it
HISTORY_PAGE = 50  # history lines read per call when settling a lost run answer
HISTORY_PAGES = 10  # at most this many pages: 500 builds around the moment
PARAMS_REMEMBERED = 5_000  # builds whose parameters are kept in memory at most
SETTLE_RETRY = 30.0  # seconds between two reads of a job's history for one lost run answer
SETTLE_GIVE_UP = 1800.0  # history unreadable this long past the grace: tell "unknown"

Announce = Callable[..., "str | None"]  # (build, response_url, *, recovering) -> channel
Started = Callable[[Request, Build, "str | None"], None]
Ask = Callable[[Request, "str | None"], None]


class Recovery(Desk):
    """Lost run answers settled from the history; unconfirmed announcements looked for,
    then posted; what the store could not record yet, recorded on the next pass."""

    def __init__(self, *, config: BuildbotConfig, store: Store, notifier: Notifier,
                 clock: Callable[[], float], api: CodeArtsClient, intent_grace: float,
                 poll_seconds: float, announce: Announce, started: Started,
                 ask: Ask) -> None:
        """``announce``, ``started`` and ``ask`` are the engine's: post a build's channel
        message, tell a started build, ask Run/Cancel again."""
        super().__init__(config=config, store=store, notifier=notifier, clock=clock)
        self.api = api
        self.intent_grace = intent_grace
        self.poll_seconds = poll_seconds
        self.announce = announce
        self.started = started
        self.ask = ask
        # run answers the store could not record (its database was away): the answer is
        # known, so it is recorded by the watcher's next pass, not searched for later
        self._unrecorded: dict[str, tuple[Request, RunResult, str | None]] = {}
        # Channel messages Slack took whose ts the store could not save yet: kept here
        # and saved by the watcher's next pass, so the message is never posted twice.
        self._unsaved: dict[str, tuple[str, str]] = {}
        self._unsaved_lock = threading.Lock()
        self._settle_tried: dict[str, float] = {}  # request id -> last history read
        # (job, build no) -> the build's parameters, for settling lost run answers
        self._params_seen: dict[tuple[str, str], dict[str, str]] = {}
        self._settle_lock = threading.Lock()

    def keep_unrecorded(self, request: Request, result: RunResult,
                        response_url: str | None) -> None:
        """A run answer the store could not record: recorded by the next pass."""
        with self._unsaved_lock:
            self._unrecorded[request.id] = (request, result, response_url)

    def keep_unsaved(self, build_id: str, channel: str, ts: str) -> None:
        """A channel message whose ts the store could not save: saved by the next pass."""
        with self._unsaved_lock:
            self._unsaved[build_id] = (channel, ts)

    # --- lost run answers -------------------------------------------------------------

    def settle_stale(self) -> None:
        """Requests whose run call never got its answer (the process sending it died):
        the job's history says whether CodeArts started them. One matching build is
        adopted and followed; none, where the history covers the moment, is told as
        not started and asked again; otherwise the user is told it may have started.
        The run is never sent again by the bot itself."""
        for request in self.due_settlements():
            self.settle_one(request)

    def due_settlements(self, limit: int | None = None) -> list[Request]:
        """Lost run answers due to be looked for now; each is handed out once until it is
        settled or ``SETTLE_RETRY`` has passed (the watcher runs them beside its polls)."""
        now = self.clock()
        due: list[Request] = []
        with self._settle_lock:
            for request in self.store.stale_sending(
                    older_than=now - self.intent_grace, noted=ANSWER_LOST,
                    noted_before=now - SETTLE_SOON, now=now):
                if limit is not None and len(due) >= limit:
                    break
                if now - self._settle_tried.get(request.id, -SETTLE_RETRY) < SETTLE_RETRY:
                    continue
                self._settle_tried[request.id] = now
                due.append(request)
        return due

    def settle_one(self, request: Request) -> None:
        now = self.clock()
        try:
            settlement = self._read_history(request)
        except CodeArtsError as exc:
            log.warning("could not read the history of job=%s for request=%s: %s",
                        request.job_name, request.id, type(exc).__name__)
            if now - request.updated_at < self.intent_grace + SETTLE_GIVE_UP:
                return  # try again on a later pass
            settlement = Settlement("unknown", request_id=request_id_of(exc))
        if settlement.kind == "not_started" and now - request.updated_at < NOT_STARTED_AFTER:
            return  # CodeArts may list a new build late: look again before saying no
        self._settle(request, settlement)
        with self._settle_lock:
            self._settle_tried.pop(request.id, None)

    def _read_history(self, request: Request) -> Settlement:
        """The builds of the job that started around the intent, newest first, with the
        parameters of those that could be it; ``covered`` once the history reaches back
        past the intent (or holds no more builds)."""
        candidates: list[Candidate] = []
        covered = False
        for page in range(HISTORY_PAGES):
            records, total = self.api.history(request.job_id, offset=page * HISTORY_PAGE,
                                              limit=HISTORY_PAGE)
            found, covered = self._candidates(request, records)
            candidates += found
            if covered or len(records) < HISTORY_PAGE or (
                    total is not None and (page + 1) * HISTORY_PAGE >= total):
                covered = True
                break
        return decide_settlement(request.body, request.updated_at, candidates, covered)

    def _candidates(self, request: Request,
                    records: list[HistoryRecord]) -> tuple[list[Candidate], bool]:
        """One page's builds that could be this request's run, and whether the page
        reaches back past the intent (older lines need not be read)."""
        since = request.updated_at - RECONCILE_MARGIN
        until = request.updated_at + RECONCILE_MARGIN
        # a build already recorded for another request is that one's, not this one's
        taken = {no for no, b in self.store.builds_by_number(
            job_id=request.job_id, build_nos=[r.build_no for r in records]).items()
            if b.id != request.id}
        found: list[Candidate] = []
        for record in records:
            started = record.start_time.timestamp() if record.start_time else None
            if started is not None and started < since:
                return found, True
            # started after this run's call was over, or another request's: not it
            if not _later(started, until) and record.build_no not in taken:
                found.append(Candidate(record.build_no, started,
                                       self._parameters(request.job_id, record.build_no)))
        return found, False

    def _parameters(self, job_id: str, build_no: str) -> dict[str, str]:
        """A build's parameters, read once per process: they never change once it exists,
        and the settlements of one job's lost answers look at the same builds."""
        key = (job_id, build_no)
        with self._settle_lock:
            if key in self._params_seen:
                return self._params_seen[key]
        params = self.api.build_parameters(job_id, build_no)
        with self._settle_lock:
            self._params_seen[key] = params
            while len(self._params_seen) > PARAMS_REMEMBERED:
                self._params_seen.pop(next(iter(self._params_seen)))
        return params

    def _settle(self, request: Request, settlement: Settlement) -> None:
        now = self.clock()
        log.info("settling request=%s job=%s after a lost run answer: %s %s", request.id,
                 request.job_name, settlement.kind, ",".join(settlement.builds))
        if settlement.kind == "adopt":
            try:
                build = self.store.record_build(request=request, build_no=settlement.builds[0],
                                                daily_build_number="", now=now,
                                                first_check_at=now)
            except AlreadySettled:
                return
            self.metrics.builds_started.inc()
            where = self.announce(build, request.response_url)
            self.notifier.respond(request.response_url, msg.found_after_restart(
                request.job_name, build.daily_build_number, build.build_no, where))
            return
        state = RequestState.FAILED if settlement.kind == "not_started" else RequestState.UNKNOWN
        run_rid = request_id_in(request.error)  # of the run call's answer, if it had one
        if not self.store.move_request(id=request.id, old=RequestState.SENDING, new=state,
                                       now=now, error=f"run answer lost: {settlement.kind}"):
            return  # another process settled it
        self.store.audit(decision="not_started" if state is RequestState.FAILED else "unknown",
                         now=now, request_id=request.id, user_id=request.user_id,
                         channel_id=request.channel_id, job=request.job_name,
                         parameters=request.body,
                         detail=f"run answer lost; history: {settlement.kind} "
                                f"{' '.join(settlement.builds)}".strip())
        if settlement.kind == "not_started":
            self.notifier.respond(request.response_url,
                                  msg.not_started_after_restart(request.job_name,
                                                                request_id=run_rid))
            again = self.store.add_request(
                id=uuid.uuid4().hex, state=RequestState.PENDING, now=now, ttl=CONFIRM_TTL,
                user_id=request.user_id, team_id=request.team_id,
                channel_id=request.channel_id, job_name=request.job_name,
                job_id=request.job_id, command=request.command, body=request.body,
                response_url=request.response_url, decision="confirm")
            self.ask(again, request.response_url)
        elif settlement.kind == "ambiguous":
            self.notifier.respond(request.response_url,
                                  msg.outcome_ambiguous(request.job_name, settlement.builds,
                                                        request_id=run_rid))
        else:
            self.notifier.respond(request.response_url, msg.outcome_unknown(
                request.job_name, request_id=run_rid,
                history_request_id=settlement.request_id))

    # --- unconfirmed announcements, unrecorded answers -----------------------------

    def record_unrecorded(self) -> None:
        """Record the builds whose run answer came while the database was away, then
        announce them; one another process settled first is dropped."""
        with self._unsaved_lock:
            pending = list(self._unrecorded.values())
        for request, result, response_url in pending:
            now = self.clock()
            try:
                build = self.store.record_build(
                    request=request, build_no=result.actual_build_number,
                    daily_build_number=result.daily_build_number, now=now,
                    first_check_at=now + self.poll_seconds)
            except AlreadySettled:  # another process settled it from the history
                build = None
            except Exception:  # the database is still away: the next pass tries again
                log.info("still cannot record build=%s of request=%s",
                         result.actual_build_number, request.id)
                continue
            with self._unsaved_lock:
                self._unrecorded.pop(request.id, None)
            if build is not None:
                log.info("recorded build=%s of request=%s once the database answered",
                         build.build_no, request.id)
                self.started(request, build, response_url)

    def hand_over(self, build: Build) -> None:
        """This process's post is over without a confirmation: recovery (which looks in the
        channel first) may take it in ``ANNOUNCE_RETRY`` seconds, not after the grace."""
        try:
            self.store.announce_failed(id=build.id, now=self.clock(), retry_in=ANNOUNCE_RETRY,
                                       stale_after=self.intent_grace)
        except Exception:
            log.warning("could not hand build=%s to recovery; it waits the grace", build.id,
                        exc_info=True)

    def save_unsaved(self) -> None:
        """Save the ts of channel messages whose first save failed (the watcher calls this
        before looking for unannounced builds, so none is announced twice)."""
        with self._unsaved_lock:
            pending = list(self._unsaved.items())
        for build_id, (channel, ts) in pending:
            self.store.set_announced(id=build_id, channel=channel, ts=ts)
            with self._unsaved_lock:
                self._unsaved.pop(build_id, None)
            log.info("saved the channel message of build=%s", build_id)

    def recover_announcements(self) -> None:
        """Announce builds whose announcement is unconfirmed: its poster died, or Slack's
        answer never came. Each is looked for in the channel before it is posted. Run
        answers the database could not record are recorded first."""
        self.record_unrecorded()
        self.save_unsaved()
        for build in self.store.claim_unannounced(now=self.clock(),
                                                  stale_after=self.intent_grace):
            with self._unsaved_lock:
                if build.id in self._unsaved:
                    continue
            self.announce(build, build.response_url, recovering=True)

    def where(self, build: Build) -> tuple[str | None, str | None]:
        """The channel message of a build (channel, ts), saved or not yet saved."""
        if build.message_ts:
            return build.message_channel, build.message_ts
        with self._unsaved_lock:
            return self._unsaved.get(build.id, (None, None))


def _later(started: float | None, until: float) -> bool:
    return started is not None and started > until
