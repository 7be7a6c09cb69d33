"""Any build of a job, not only the bot's own: its recent builds read from CodeArts' history
as typed rows (``recent_builds``), the last result of several jobs at once within a small
time budget (``last_results``), and whether one build is running (``build_standing``).

Reads only: nothing here changes a build, a row or a message. The rows join what CodeArts
says (number, start, end, result) with what the bot knows of its own builds (daily number,
the Slack user who started it); CodeArts' answer is untrusted, so a record with odd fields
is shown as far as it can be read and never makes a call fail.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from concurrent.futures import Executor, wait
from dataclasses import dataclass, replace

from bot.codearts.answers import BuildState, HistoryRecord, build_state_from
from bot.codearts.client import CodeArtsClient
from bot.codearts.errors import CodeArtsError, Kind, describe, request_id_of
from bot.config import BuildbotConfig
from bot.lifecycle import ORIGIN_SUBSCRIPTION, Build, duration_of, result_of
from bot.people import started_by
from bot.store import Store

log = logging.getLogger(__name__)

STATUS_BUILDS = 5  # builds shown by /build status <job>
LAST_RESULTS_BUDGET = 6.0  # seconds /build status waits, in all, for the jobs' last results
STATUS_THREADS = 8  # /build status's history calls made side by side
RUNNING = "running"
_JOB_ID = re.compile(r"[0-9A-Za-z]{32}")
_BUILD_NO = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class BuildRow:
    """One build of a job as /build status shows it.

    ``result`` is ``running`` while CodeArts gives no end, else what the bot stores for an
    ended build (success, failure, aborted, unknown, ``ended:<WORD>``). ``started_by`` is the
    Slack user for a build the bot started; None for one started elsewhere."""

    build_no: str
    daily: str
    result: str
    started_at: float | None
    duration_ms: int | None
    started_by: str | None
    # the job entry the bot started it under; None for a build started elsewhere (it
    # belongs to every entry naming its build task)
    entry: str | None = None
    on_it: str | None = None  # who is on this failed build (I'm on it), if anyone
    # a followed build: who and what started it (its record), and the Slack user that is
    # (a requester in another channel, or the jobs file's [people])
    codearts_user: str | None = None
    trigger: str | None = None
    person: str | None = None

    @property
    def running(self) -> bool:
        return self.result == RUNNING


def row_from(record: HistoryRecord, *, daily: str = "", started_by: str | None = None,
             now: float, entry: str | None = None) -> BuildRow:
    """A history line as a row: its result read the way a build's record is read (a known
    final word, or any word with an end time, has ended; otherwise it runs)."""
    state = _state_of(record)
    started = record.start_time.timestamp() if record.start_time else None
    if state.finished:
        result, took = result_of(state), duration_of(state)
    else:
        result = RUNNING
        took = int(max(0.0, now - started) * 1000) if started is not None else None
    return BuildRow(record.build_no, daily, result, started, took, started_by, entry)


def _state_of(record: HistoryRecord) -> BuildState:
    return build_state_from({
        "status": record.result,
        "start_time": record.start_time.isoformat() if record.start_time else None,
        "end_time": record.end_time.isoformat() if record.end_time else None})


def recent_builds(api: CodeArtsClient, store: Store, job_id: str, *, limit: int = STATUS_BUILDS,
                  now: float | None = None,
                  config: BuildbotConfig | None = None) -> list[BuildRow]:
    """The job's last ``limit`` builds, newest first (one history call), each with its daily
    number and requester where the bot started it. Raises CodeArtsError when CodeArts
    cannot be asked."""
    records, _total = api.history(job_id, offset=0, limit=limit)
    numbers = [r.build_no for r in records]
    ours = store.builds_by_number(job_id=job_id, build_nos=numbers)
    on_it = store.on_it_of(job_id=job_id, build_nos=[r.build_no for r in records[:limit]])
    followed = store.followed_by_number(job_id=job_id,
                                        build_nos=[n for n in numbers if n not in ours])
    at = time.time() if now is None else now
    rows = []
    for record in records[:limit]:
        mine = ours.get(record.build_no) or followed.get(record.build_no)
        row = row_from(record, daily=mine.daily_build_number if mine else "",
                       started_by=mine.user_id if mine and mine.user_id else None, now=at,
                       entry=entry_of(mine))
        if mine is not None and mine.origin == ORIGIN_SUBSCRIPTION:
            row = replace(row, codearts_user=mine.started_by, trigger=mine.trigger,
                          person=started_by(config, mine) if config else None)
        rows.append(replace(row, on_it=on_it.get(record.build_no)) if not row.running
                    else row)
    return rows


def entry_of(build: Build | None) -> str | None:
    """The job entry a build belongs to: the one it was started under from Slack; None
    for a build started elsewhere (found by a subscription, or not known to the bot),
    which belongs to every entry naming its build task."""
    if build is None or build.origin == ORIGIN_SUBSCRIPTION:
        return None
    return build.job_name


def entries_of(config: BuildbotConfig, build: Build | None, job_id: str) -> list[str]:
    """The job entries someone must be allowed on to see or stop a build of ``job_id``:
    its own entry, or every entry naming that task (the task ID itself when none does)."""
    entry = entry_of(build)
    if entry is not None:
        return [entry]
    return [j.name for j in config.jobs.values() if j.id == job_id] or [job_id]


@dataclass(frozen=True)
class LastResult:
    """A job's newest build (None: it has none yet), or ``failed`` when CodeArts could not
    be asked in time (``request_id``: of its error answer, when it had one)."""

    job_name: str
    row: BuildRow | None
    failed: bool = False
    request_id: str | None = None


def last_results(api: CodeArtsClient, store: Store, jobs: Sequence[tuple[str, str]], *,
                 pool: Executor, budget: float = LAST_RESULTS_BUDGET,
                 now: float | None = None,
                 config: BuildbotConfig | None = None) -> list[LastResult]:
    """Each job's (name, id) newest build: one history call per job (limit 1), made in
    ``pool`` side by side; a call not answered within ``budget`` seconds in all, or
    failed, gives ``failed`` for its job. In the order given."""
    at = time.time() if now is None else now

    def one(job_id: str) -> BuildRow | None:
        rows = recent_builds(api, store, job_id, limit=1, now=at, config=config)
        return rows[0] if rows else None

    futures = [pool.submit(one, job_id) for _name, job_id in jobs]
    wait(futures, timeout=budget)
    out = []
    for (name, _job_id), future in zip(jobs, futures, strict=True):
        if not future.done():
            future.cancel()
            out.append(LastResult(name, None, failed=True))
            continue
        exc = future.exception()
        if exc is not None:
            if not isinstance(exc, CodeArtsError):
                log.error("last result of job=%s not read", name, exc_info=exc)
            out.append(LastResult(name, None, failed=True, request_id=request_id_of(exc)))
            continue
        out.append(LastResult(name, future.result()))
    return out


@dataclass(frozen=True)
class Standing:
    """Where one build stands before it is stopped: ``running``, ``ended`` (with its
    result), ``missing`` (not a build of that job) or ``unknown`` (CodeArts not asked)."""

    kind: str
    result: str = ""
    error: CodeArtsError | None = None


def build_standing(api: CodeArtsClient, job_id: str, build_no: str) -> Standing:
    """Ask CodeArts about one build (its record); an answer the error table reads as "not
    found" (a 404, or a not-found error code) means no such build of the job."""
    try:
        state = api.build_state(job_id, build_no)
    except CodeArtsError as exc:
        return Standing("missing" if describe(exc).kind is Kind.NOT_FOUND else "unknown",
                        error=exc)
    if state.finished:
        return Standing("ended", result_of(state))
    return Standing("running")


def stop_value(job_id: str, build_no: str) -> str:
    """What a Stop-confirmation button carries: the build task and the build number."""
    return f"{job_id}:{build_no}"


def read_stop_value(value: str) -> tuple[str, str] | None:
    job_id, sep, build_no = value.partition(":")
    if not sep or not _JOB_ID.fullmatch(job_id) or not _BUILD_NO.fullmatch(build_no):
        return None  # ASCII only: isdigit() takes "²", which int() then refuses
    return job_id.lower(), build_no
