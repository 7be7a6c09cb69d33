"""The CodeArts Build API client: run a build task, follow it, stop it.

The only code in the bot that talks to CodeArts. Network I/O goes through one
``httpx.Client`` (the transport seam); authentication is any ``httpx.Auth``
(``bot.codearts.auth`` has the three kinds: fixed token, IAM password login, AK/SK
signing; ``bot.runtime`` picks one from the settings). This module imports
nothing from ``bot.codearts.auth``, which uses its errors.

Calls (docs/codearts-api.md has their fields, error shapes and authentication):

* ``POST /v3/jobs/build``                       run a build task
* ``GET  /v4/jobs/{job_id}/{build_no}/record-info``  the record of one build
* ``POST /v3/jobs/{job_id}/{build_no}/stop``    stop a build
* ``GET  /v3/jobs/{job_id}/{build_no}/history-details``  a build's steps (best effort)
* ``GET  /v3/jobs/{job_id}/{build_no}/real-time-log``    a build's log, in pages
* ``GET  /v3/jobs/{job_id}/{build_no}/output-info``      what a build produced (best effort)
* ``GET  /v1/record/{job_id}/{build_no}/build-info-record``  who and what started a build

Errors are the exception tree of ``bot.codearts.errors``; answers are read into the models
of ``bot.codearts.answers``.

Retry rules, so that a build is never started twice:

* Reads (record-info) retry with exponential backoff on any transport error,
  429 (honouring a small ``Retry-After``) and 5xx.
* Run and stop are re-sent only when the request certainly never left: the
  connection could not be set up (``ConnectError``, ``ConnectTimeout``,
  ``PoolTimeout``). Once a connection is up and writing has begun, any failure
  (read timeout, ``ReadError``, ``WriteError``, ``RemoteProtocolError``, ...)
  raises ``OutcomeUnknownError``: httpx cannot tell how much of the request the
  server got, and httpcore even swallows early write errors to read a reply.
  5xx and 429 on a run are not retried (the build may exist). A 401 is retried
  once after a fresh IAM login, inside ``IamPasswordAuth`` (the gateway
  rejected it, so nothing ran).
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Self
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from bot.codearts.answers import (
    MAX_STEPS,
    BuildRecord,
    BuildState,
    HistoryRecord,
    LogTail,
    Outputs,
    RunResult,
    Step,
    as_shown,
    build_record_from,
    build_state_from,
    error_fields,
    error_in_success,
    history_record_from,
    int_or_none,
    outputs_from,
    step_from,
)
from bot.codearts.errors import (
    ApiError,
    BadResponseError,
    CodeArtsError,
    NotSentError,
    OutcomeUnknownError,
)
from bot.logtail import TailBuffer

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
RUN_PATH = "/v3/jobs/build"
RETRIES = 3  # a request is tried at most 1 + RETRIES times
MAX_RETRY_AFTER = 10.0  # a longer Retry-After is reported instead of waited for

# The request certainly never reached the server: safe to send again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
             httpx.UnsupportedProtocol, httpx.LocalProtocolError)


def load_json(response: httpx.Response) -> Any:
    """The body as JSON, with every non-integer number kept as a ``Decimal``, never a float.

    Identifiers such as ``20261123.10`` may arrive as bare numbers; a float would make
    that ``20261123.1``. ``NaN``/``Infinity`` become Decimals too. Raises ValueError when
    the body is not JSON (including nesting too deep to read).
    """
    try:
        return json.loads(response.content, parse_float=Decimal, parse_constant=Decimal)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _request_id(response: httpx.Response) -> str | None:
    """The ``X-Request-Id`` header (any case), as the SDK reads it; the body is not read."""
    return response.headers.get("X-Request-Id") or None


def decode(response: httpx.Response) -> Any:
    """The JSON body of a successful answer, or the typed error the answer amounts to.

    A 4xx is a refusal (``ApiError``) whatever its body: something in front of CodeArts
    or CodeArts itself said no, so nothing was done. A body that is not JSON on any
    other status (a 2xx we cannot read, a gateway's 5xx page after the back end may
    have acted) is a ``BadResponseError``: the outcome is unknown.
    """
    status = response.status_code
    try:
        data = load_json(response)
    except ValueError:  # includes JSONDecodeError and bad UTF-8
        if 400 <= status < 500:
            raise ApiError(status, str(status), response.text, _request_id(response)) from None
        raise BadResponseError(status, _request_id(response),
                               response.text if response.content else "(empty)") from None
    rid = _request_id(response)
    if not response.is_success:
        code, msg = error_fields(status, response.text, data)
        raise ApiError(status, code, msg, rid)
    problem = error_in_success(data)
    if problem:
        raise ApiError(response.status_code, problem[0], problem[1], rid)
    return data


SKIPPED_LOG_EVERY = 60.0  # history lines skipped are logged once, then once a minute
_skipped = {"count": 0, "logged_at": float("-inf")}
_skipped_lock = threading.Lock()


def _note_skipped(job_id: str, n: int) -> None:
    """History lines without a usable build number are skipped, never shown or followed:
    logged once, then once a minute with a count (an odd answer on every poll must not
    flood the log)."""
    with _skipped_lock:
        _skipped["count"] += n
        now = time.monotonic()
        if now - _skipped["logged_at"] < SKIPPED_LOG_EVERY:
            return
        count, _skipped["count"], _skipped["logged_at"] = _skipped["count"], 0, now
    log.warning("CodeArts history of job=%s: %d line(s) without a usable build number "
                "skipped (counted since the last such line in the log)", job_id, count)


STEPS_TIMEOUT = 5.0  # seconds for the steps call: progress is best effort
LOG_PAGE = 64 * 1024  # characters asked for per real-time-log call
LOG_MAX_CHARS = 2 * 1024 * 1024  # stop reading a log after this much
LOG_BUDGET = 8.0  # seconds for the whole tail: the result is never held up longer
LOG_MAX_PAGES = 200
OUTPUTS_BUDGET = 5.0  # seconds for the outputs call, retries included: a success reply
# is never held up longer


def _build_no(build_no: int | str) -> str:
    """Build numbers go into the path: a positive integer, nothing else."""
    text = str(build_no).strip()
    if isinstance(build_no, bool) or not text.isdigit() or int(text) < 1:
        raise ValueError(f"{build_no!r} is not a build number (a positive integer)")
    return str(int(text))


def _job(job_id: str) -> str:
    if not isinstance(job_id, str) or not job_id.strip():
        raise ValueError("job_id is empty")
    return quote(job_id.strip(), safe="")


def _out_of_time(deadline: float | None, delay: float) -> bool:
    """Whether waiting ``delay`` seconds more would reach ``deadline`` (monotonic; None:
    no deadline)."""
    return deadline is not None and time.monotonic() + delay >= deadline


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- client


class CodeArtsClient:
    """Thread-safe client for the few CodeArts Build calls the bot needs."""

    def __init__(self, endpoint: str, *, auth: httpx.Auth, http: httpx.Client | None = None,
                 timeout: httpx.Timeout | float | None = None, backoff: float = 0.5) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._auth = auth
        self._timeout = DEFAULT_TIMEOUT if timeout is None else httpx.Timeout(timeout)
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=self._timeout)
        self._backoff = backoff
        self._seen_lock = threading.Lock()
        self._seen_statuses: set[str] = set()
        # told of every attempt: (method, path, outcome, seconds); metrics use it
        self.observer: Callable[[str, str, str, float], None] | None = None

    def __repr__(self) -> str:
        return f"CodeArtsClient(endpoint={self.endpoint!r}, auth={self._auth!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close our HTTP client (not one we were given) and the auth's own client, if any."""
        if self._owns_http:
            self._http.close()
        closer = getattr(self._auth, "close", None)
        if callable(closer):
            closer()

    @property
    def closed(self) -> bool:
        return self._http.is_closed

    # ---- public calls

    def run_build(self, body: dict[str, Any]) -> RunResult:
        """Start a build; never re-sent unless it certainly did not arrive."""
        response = self._call("POST", RUN_PATH, body=body, read=False)
        data = self._decode(response)
        try:
            return RunResult.model_validate(data)
        except ValidationError:
            raise self._shapeless(response, data,
                                  "a run answer without a usable build number") from None

    def _shapeless(self, response: httpx.Response, data: Any, what: str) -> BadResponseError:
        """A 2xx answer without the fields a call needs: its outcome is unknown."""
        return BadResponseError(response.status_code, _request_id(response),
                                self.scrub(str(data)), what)

    def build_state(self, job_id: str, build_no: int | str) -> BuildState:
        """Where a build stands, from its record (retried: reading changes nothing)."""
        path = f"/v4/jobs/{_job(job_id)}/{_build_no(build_no)}/record-info"
        response = self._call("GET", path, read=True)
        data = self._decode(response)
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, dict):
            raise self._shapeless(response, data, "a build record without a result")
        state = build_state_from(result)
        if not state.finished:
            self._note_status(state.status)
        return state

    def stop_build(self, job_id: str, build_no: int | str) -> None:
        """Ask CodeArts to stop a build; ``success: false`` raises ApiError."""
        path = f"/v3/jobs/{_job(job_id)}/{_build_no(build_no)}/stop"
        response = self._call("POST", path, read=False)
        data = self._decode(response)
        if not isinstance(data, dict) or data.get("success") is not True:
            raise self._shapeless(response, data, "a stop answer without success: true")

    def history(self, job_id: str, *, offset: int = 0,
                limit: int = 20) -> tuple[list[HistoryRecord], int | None]:
        """One page of a job's builds, newest first, and how many there are in all
        (``GET /v3/jobs/{job_id}/history``; retried: reading changes nothing)."""
        path = f"/v3/jobs/{_job(job_id)}/history?offset={int(offset)}&limit={int(limit)}"
        response = self._call("GET", path, read=True)
        data = self._decode(response)
        records = data.get("history_records") if isinstance(data, dict) else None
        if not isinstance(records, list):
            raise self._shapeless(response, data, "a history without history_records")
        read = [r for r in (history_record_from(item) for item in records) if r is not None]
        if len(read) < len(records):
            _note_skipped(job_id, len(records) - len(read))
        return read, int_or_none(data.get("total"))

    def job_running(self, job_id: str) -> tuple[bool, str]:
        """Whether any build of the job runs now, and its last build's number
        (``GET /v1/job/{job_id}/running-status``; retried: reading changes nothing)."""
        path = f"/v1/job/{_job(job_id)}/running-status"
        response = self._call("GET", path, read=True)
        data = self._decode(response)
        result = data.get("result") if isinstance(data, dict) else None
        running = result.get("is_running") if isinstance(result, dict) else None
        if not isinstance(result, dict) or not isinstance(running, bool):
            raise BadResponseError(response.status_code, _request_id(response),
                                   self.scrub(str(data)[:200]),
                                   "a running status without is_running")
        return running, as_shown(result.get("last_build_no"))

    def build_parameters(self, job_id: str, build_no: int | str) -> dict[str, str]:
        """The parameters a build ran with, by name
        (``GET /v1/job/{job_id}/{build_no}/history-parameters``)."""
        path = f"/v1/job/{_job(job_id)}/{_build_no(build_no)}/history-parameters"
        response = self._call("GET", path, read=True)
        data = self._decode(response)
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, list):
            raise self._shapeless(response, data, "build parameters without a result")
        return {str(p["name"]): as_shown(p.get("value")) for p in result
                if isinstance(p, dict) and isinstance(p.get("name"), str)}

    def build_record(self, job_id: str, build_no: int | str) -> BuildRecord:
        """Who and what started a build, its branch and daily number
        (``GET /v1/record/{job_id}/{build_no}/build-info-record``, enveloped; retried:
        reading changes nothing). An answer without a ``result`` object raises
        BadResponseError; unreadable fields inside it are None."""
        path = f"/v1/record/{_job(job_id)}/{_build_no(build_no)}/build-info-record"
        response = self._call("GET", path, read=True)
        data = self._decode(response)
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, dict):
            raise self._shapeless(response, data, "a build record without a result")
        return build_record_from(result)

    def build_steps(self, job_id: str, build_no: int | str, *,
                    timeout: float = STEPS_TIMEOUT) -> list[Step]:
        """A build's steps in order (``GET /v3/jobs/{job_id}/{build_number}/history-details``,
        a bare JSON answer). Best effort: one short try, no retry waits; an answer
        without ``build_steps`` is no steps; records without a name are skipped."""
        path = f"/v3/jobs/{_job(job_id)}/{_build_no(build_no)}/history-details"
        response = self._call("GET", path, read=True, retries=0, timeout=timeout)
        data = self._decode(response)
        if not isinstance(data, dict):
            raise BadResponseError(response.status_code, _request_id(response),
                                   self.scrub(str(data)[:200]),
                                   "build details that are not an object")
        items = data.get("build_steps")
        if not isinstance(items, list):
            return []
        steps = (step_from(item) for item in items[:MAX_STEPS])
        return [step for step in steps if step is not None]

    def log_tail(self, job_id: str, build_no: int | str, *, lines: int = 30,
                 max_chars: int = LOG_MAX_CHARS, budget: float = LOG_BUDGET,
                 page: int = LOG_PAGE) -> LogTail:
        """The last ``lines`` lines of a build's log
        (``GET /v3/jobs/{job_id}/{build_no}/real-time-log?offset=&length=``, enveloped),
        read page by page from ``current_offset`` while ``has_more_data``. Memory stays
        bounded (only the last lines are kept); reading stops after ``max_chars`` or
        ``budget`` seconds and says so (``truncated``). Raises CodeArtsError when not
        even the first page could be read."""
        job, number = _job(job_id), _build_no(build_no)
        tail = TailBuffer(lines, known=getattr(self._auth, "secret_values", list)())
        deadline = time.monotonic() + budget
        offset, truncated = 0, False
        for pages in range(LOG_MAX_PAGES):
            remaining = deadline - time.monotonic()
            if remaining <= 0.05 or tail.fed >= max_chars:
                truncated = True
                break
            length = max(1, min(page, max_chars - tail.fed))
            path = f"/v3/jobs/{job}/{number}/real-time-log?offset={offset}&length={length}"
            try:
                response = self._call("GET", path, read=True, retries=1,
                                      timeout=min(remaining, 5.0), deadline=deadline)
                data = self._decode(response)
            except CodeArtsError:
                if pages == 0:
                    raise
                truncated = True  # what was read so far is still worth showing
                break
            result = data.get("result") if isinstance(data, dict) else None
            content = result.get("content") if isinstance(result, dict) else None
            if not isinstance(result, dict) or not isinstance(content, str | None):
                if pages == 0:
                    raise BadResponseError(response.status_code, _request_id(response),
                                           self.scrub(str(data)[:200]), "a log without a result")
                truncated = True
                break
            tail.feed(content or "")
            following = int_or_none(result.get("current_offset"))
            if result.get("has_more_data") is not True:
                break
            if following is None or following <= offset:  # no way forward: stop here
                truncated = True
                break
            offset = following
        else:
            truncated = True
        return LogTail(lines=tuple(tail.lines()), truncated=truncated, read_chars=tail.fed)

    def build_outputs(self, job_id: str, build_no: int | str, *,
                      budget: float = OUTPUTS_BUDGET) -> Outputs:
        """What a build produced: its packages and images
        (``GET /v3/jobs/{job_id}/{build_no}/output-info``, enveloped; the SDK's
        ``OutPutInfoResult``). Best effort within ``budget`` seconds in all: each try's
        timeout is what is left of it, and no retry waits past it. Raises CodeArtsError
        when it cannot be read (an error, no answer in time, a result that is not an
        object)."""
        path = f"/v3/jobs/{_job(job_id)}/{_build_no(build_no)}/output-info"
        deadline = time.monotonic() + budget
        response = self._call("GET", path, read=True, retries=1, timeout=budget,
                              deadline=deadline)
        data = self._decode(response)
        outputs = outputs_from(data.get("result")) if isinstance(data, dict) else None
        if outputs is None:
            raise BadResponseError(response.status_code, _request_id(response),
                                   self.scrub(str(data)[:200]),
                                   "build outputs without a readable result")
        return outputs.model_copy(update={"items": tuple(
            o.model_copy(update={"name": self.scrub(o.name), "version": self.scrub(o.version),
                                 "address": self.scrub(o.address)})
            for o in outputs.items)})

    # ---- plumbing

    def _decode(self, response: httpx.Response) -> Any:
        """``decode``, with any secret an error quotes back blanked out."""
        try:
            return decode(response)
        except ApiError as exc:
            raise ApiError(exc.status, self.scrub(exc.error_code), self.scrub(exc.error_msg),
                           exc.request_id, hint=exc.hint) from None
        except BadResponseError as exc:
            exc.snippet = self.scrub(exc.snippet)
            raise

    def scrub(self, text: str) -> str:
        """Replace every credential this client holds (configured or obtained) in ``text``."""
        values: list[str] = getattr(self._auth, "secret_values", list)()
        for value in values:
            if value and len(value) >= 4:
                text = text.replace(value, "**********")
        return text

    def _note_status(self, status: str) -> None:
        """Log each not-final status once, so an undocumented spelling shows up in the logs."""
        with self._seen_lock:
            if status in self._seen_statuses:
                return
            self._seen_statuses.add(status)
        log.info("CodeArts build status %r is not a final state: treating it as still running",
                 status)

    def _call(self, method: str, path: str, *, read: bool,
              body: dict[str, Any] | None = None, retries: int = RETRIES,
              timeout: float | None = None, deadline: float | None = None) -> httpx.Response:
        """Send with the retry rules of the module docstring; return the final response.

        Best-effort reads (steps, the log, the outputs) pass fewer ``retries``, a shorter
        ``timeout`` and a ``deadline`` (monotonic): no retry waits past it, and no try's
        timeout reaches past it."""
        attempt = 0
        while True:
            delay: float | None
            limit = timeout
            if deadline is not None and timeout is not None:
                limit = max(0.05, min(timeout, deadline - time.monotonic()))
            try:
                response = self._attempt(method, path, body, limit)
            except httpx.TransportError as exc:
                delay = self._after_failure(exc, method, path, attempt, retries, read=read)
            else:
                delay = self._retry_wait(response, attempt, retries) if read else None
                if delay is None or _out_of_time(deadline, delay):
                    return response  # final, or no time left to ask again: this answer is it
            if _out_of_time(deadline, delay):
                raise NotSentError(method, path, attempt + 1, "out of time")
            time.sleep(delay)
            attempt += 1

    def _after_failure(self, exc: httpx.TransportError, method: str, path: str, attempt: int,
                       retries: int, *, read: bool) -> float:
        """Seconds to wait before sending again after an attempt got no answer. Raises
        instead when it is not sent again: OutcomeUnknownError for a write that may have
        reached CodeArts, NotSentError when no retry is left."""
        if not read and not isinstance(exc, _NOT_SENT):
            raise OutcomeUnknownError(method, path, type(exc).__name__) from exc
        if attempt >= retries:
            raise NotSentError(method, path, attempt + 1, type(exc).__name__) from exc
        return self._delay(attempt)

    def _attempt(self, method: str, path: str, body: dict[str, Any] | None,
                 timeout: float | None = None) -> httpx.Response:
        started = time.monotonic()
        limit = self._timeout if timeout is None else httpx.Timeout(
            timeout, connect=min(timeout, self._timeout.connect or timeout))
        try:
            response = self._http.request(method, self.endpoint + path, json=body,
                                          auth=self._auth, timeout=limit)
        except httpx.TransportError as exc:
            log.warning("CodeArts %s %s failed after %.0f ms: %s", method, path,
                        (time.monotonic() - started) * 1000, type(exc).__name__)
            self._observe(method, path, type(exc).__name__, started)
            raise
        self._observe(method, path, f"{response.status_code // 100}xx", started)
        log.info("CodeArts %s %s -> %d in %.0f ms (request id %s)", method, path,
                 response.status_code, (time.monotonic() - started) * 1000,
                 response.headers.get("X-Request-Id", "-"))
        return response

    def _observe(self, method: str, path: str, outcome: str, started: float) -> None:
        if self.observer is not None:
            try:
                self.observer(method, path, outcome, time.monotonic() - started)
            except Exception:  # metrics never break a call
                log.debug("call observer failed", exc_info=True)

    def _retry_wait(self, response: httpx.Response, attempt: int,
                    retries: int = RETRIES) -> float | None:
        """Seconds to wait before retrying a read, or None to stop and use this response."""
        status = response.status_code
        if attempt >= retries or not (status == 429 or status >= 500):
            return None
        after = _retry_after(response)
        if after is None:
            return self._delay(attempt)
        return after if after <= MAX_RETRY_AFTER else None

    def _delay(self, attempt: int) -> float:
        base = self._backoff * (2 ** attempt)
        return float(min(base + random.uniform(0, self._backoff / 2), 30.0))
