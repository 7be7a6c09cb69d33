"""The CodeArts Build API client: run a build task, follow it, stop it.

The only code in the bot that talks to CodeArts. Network I/O goes through one
``httpx.Client`` (the transport seam); authentication is any ``httpx.Auth``
(``bot.auth`` has the three kinds: fixed token, IAM password login, AK/SK
signing; ``bot.runtime`` picks one from the settings). This module imports
nothing from ``bot.auth``, which uses its errors.

Calls (docs/codearts-api.md has their fields, error shapes and authentication):

* ``POST /v3/jobs/build``                       run a build task
* ``GET  /v4/jobs/{job_id}/{build_no}/record-info``  the record of one build
* ``POST /v3/jobs/{job_id}/{build_no}/stop``    stop a build
* ``GET  /v3/jobs/{job_id}/{build_no}/history-details``  a build's steps (best effort)
* ``GET  /v3/jobs/{job_id}/{build_no}/real-time-log``    a build's log, in pages

Exceptions, all with a ``str()`` a user may read (never a secret)::

    CodeArtsError                 base: anything this client raises on purpose
     ├── ApiError                 CodeArts (or something in front of it) refused: any
     │                            4xx whatever its body, a JSON error on another status,
     │                            or an error inside a 2xx (status, error_code, error_msg,
     │                            request_id, hint); code and message read as the SDK does
     ├── AuthError                IAM login failed or IAM unreachable; the CodeArts
     │                            request was not sent (status may be None)
     ├── BadResponseError         a 2xx/3xx/5xx answer that is not JSON, or a 2xx without
     │                            the fields needed: the outcome is unknown
     ├── NotSentError             the request did not reach CodeArts (or was a read
     │                            that got no answer): nothing changed, safe to retry later
     └── OutcomeUnknownError      a run/stop was sent but its answer was lost: it may or
                                  may not have happened; never re-sent automatically

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
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Self
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from bot.logtail import TailBuffer

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
RUN_PATH = "/v3/jobs/build"
RETRIES = 3  # a request is tried at most 1 + RETRIES times
MAX_RETRY_AFTER = 10.0  # a longer Retry-After is reported instead of waited for

# The request certainly never reached the server: safe to send again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
             httpx.UnsupportedProtocol, httpx.LocalProtocolError)

_HINTS = {
    400: "Check the input and the job's parameters.",
    401: "The bot's CodeArts credentials are wrong or expired: tell the bot's operator.",
    403: "The bot's account has no permission on this build task.",
    404: "No such build task: check the job ID in the bot's config.",
    413: "The request was too large for CodeArts or a proxy in front of it: "
         "use shorter parameter values.",
    429: "CodeArts is throttling requests: try again in a minute.",
}
_HINT_5XX = "CodeArts is having trouble: try again later."

# "ended": the record has a finish time but a status word not listed below.
Outcome = Literal["success", "failure", "aborted", "unknown", "ended"]
_FINAL: dict[str, Outcome] = {
    "SUCCESS": "success", "FAILURE": "failure", "FAILED": "failure",
    "SCHEDULE_FAILURE": "failure", "ABORTED": "aborted", "CANCELED": "aborted",
    "CANCELLED": "aborted", "UNKNOWN": "unknown",
}
_FINISH_KEYS = ("finish_time", "finishTime", "end_time", "endTime")
STATUS_LIMIT = 24  # characters of a status word kept in BuildState.status
# A finish time before this is a placeholder (0, a small epoch), not the end of a build.
_EARLIEST_FINISH = datetime(2000, 1, 1, tzinfo=UTC)


def hint_for(status: int | None) -> str:
    """A plain sentence saying what an HTTP status means for the person who asked."""
    if status is None:
        return "CodeArts could not be reached: try again later."
    if status >= 500:
        return _HINT_5XX
    return _HINTS.get(status, "")


# --------------------------------------------------------------------------- errors


class CodeArtsError(Exception):
    """Base of every error this client raises; ``str()`` is safe to show a user."""


class ApiError(CodeArtsError):
    """CodeArts (or its gateway) answered with an error body or an error status."""

    def __init__(self, status: int, error_code: str, error_msg: str,
                 request_id: str | None = None, hint: str | None = None) -> None:
        self.status = status
        self.error_code = error_code
        self.error_msg = _clip(error_msg, 300)
        self.request_id = request_id
        self.hint = hint_for(status) if hint is None else hint
        super().__init__(self._sentence())

    def _sentence(self) -> str:
        code = f" {self.error_code}" if self.error_code not in ("", str(self.status)) else ""
        msg = f": {self.error_msg}" if self.error_msg else ""
        text = f"CodeArts answered HTTP {self.status}{code}{msg}."
        if self.hint:
            text += f" {self.hint}"
        return text + _request_id_note(self.request_id)


class AuthError(CodeArtsError):
    """IAM refused the bot's login or could not be reached; nothing was sent to CodeArts."""

    def __init__(self, status: int | None, error_code: str, error_msg: str,
                 request_id: str | None = None) -> None:
        self.status = status
        self.error_code = error_code
        self.error_msg = _clip(error_msg, 300)
        self.request_id = request_id
        self.hint = _auth_hint(status)
        where = f"HTTP {status}" if status is not None else "no answer"
        code = f" {error_code}" if error_code else ""
        msg = f": {self.error_msg}" if self.error_msg else ""
        super().__init__(f"The bot could not log in to Huawei Cloud IAM ({where}{code}{msg}). "
                         f"{self.hint}{_request_id_note(request_id)}")


def _auth_hint(status: int | None) -> str:
    if status is None or status >= 500:
        return "IAM is unreachable or having trouble: try again later."
    return "The bot's IAM user, password, account or project is wrong: tell the bot's operator."


class BadResponseError(CodeArtsError):
    """The answer was not JSON, or JSON of an unexpected shape (e.g. a proxy's HTML page)."""

    def __init__(self, status: int, request_id: str | None, snippet: str, what: str = "") -> None:
        self.status = status
        self.request_id = request_id
        self.snippet = _clip(snippet, 120)
        self.hint = hint_for(status) if status >= 400 else "CodeArts may have changed its API."
        what = what or "an answer that is not valid JSON"
        super().__init__(f"CodeArts sent {what} (HTTP {status}). {self.hint}"
                         f"{_request_id_note(request_id)}")


class NotSentError(CodeArtsError):
    """The request never reached CodeArts (or, for a read, got no answer): safe to retry later."""

    def __init__(self, method: str, path: str, attempts: int, reason: str) -> None:
        self.method = method
        self.path = path
        self.attempts = attempts
        self.reason = reason
        self.hint = hint_for(None)
        super().__init__(f"CodeArts could not be reached ({reason}, {attempts} attempts); "
                         "nothing was started. Try again later.")


class OutcomeUnknownError(CodeArtsError):
    """A run or stop was sent but its answer was lost: it may or may not have happened."""

    def __init__(self, method: str, path: str, reason: str) -> None:
        self.method = method
        self.path = path
        self.reason = reason
        self.hint = "Check CodeArts before trying again; the bot will not send it again by itself."
        super().__init__(f"The request to CodeArts was sent but no answer came back ({reason}): "
                         f"it may or may not have taken effect. {self.hint}")


_REQUEST_ID_NOTE = " (request ID "


def _request_id_note(request_id: str | None) -> str:
    """How an error's sentence ends when the answer had a request ID: `` (request ID x)``."""
    return f"{_REQUEST_ID_NOTE}{request_id})" if request_id else ""


def request_id_of(exc: BaseException) -> str | None:
    """The request ID of the answer an error came from (the ``X-Request-Id`` header of
    CodeArts' answer, or IAM's for an AuthError); None when there was no answer (a
    timeout, a connection reset) or the answer had none."""
    rid = getattr(exc, "request_id", None) if isinstance(exc, CodeArtsError) else None
    return rid if isinstance(rid, str) and rid else None


def request_id_in(text: str | None) -> str | None:
    """The request ID at the end of an error's ``str()`` (kept as text, e.g. the note on a
    request whose run answer was lost); None when it ends without one."""
    if not text or not text.endswith(")"):
        return None
    _head, found, rid = text.rpartition(_REQUEST_ID_NOTE)
    return (rid[:-1] or None) if found else None


# --------------------------------------------------------------------------- models


class RunResult(BaseModel):
    """The answer to a run: which build was started.

    Only ``actual_build_number`` is required: a build that CodeArts says it started
    is never thrown away over another field. ``daily_build_number`` is ``""`` when
    it is null or missing (the record call gives it later); ``octopus_job_name`` and
    any other field are ignored, null or not.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    actual_build_number: str
    daily_build_number: str = ""

    @field_validator("actual_build_number", "daily_build_number", mode="before")
    @classmethod
    def _to_str(cls, v: Any) -> Any:
        """The docs say strings; numbers are accepted in case the API sends them bare."""
        if isinstance(v, bool):
            raise ValueError("not a string")  # noqa: TRY004 - pydantic wants ValueError
        return number_text(v) if isinstance(v, int | float | Decimal) else v

    @field_validator("daily_build_number", mode="before")
    @classmethod
    def _null_is_unknown(cls, v: Any) -> Any:
        """A null daily number is not known yet: ``""``, never a reason to refuse the answer."""
        return "" if v is None else v

    @field_validator("actual_build_number")
    @classmethod
    def _positive(cls, v: str) -> str:
        """It goes into URLs of later calls, so it must be a build number."""
        if not v.strip().isdigit():
            raise ValueError("not a build number")
        return v.strip()


class BuildState(BaseModel):
    """Where one build stands.

    ``finished`` is True for a known final status word, and for any other word when the
    record has a finish time (``outcome="ended"``, the word kept in ``status``); an
    unknown word without a finish time means the build is still running.
    """

    model_config = ConfigDict(frozen=True)

    status: str
    finished: bool
    outcome: Outcome | None = None
    start_time: datetime | None = None
    finish_time: datetime | None = None
    duration_ms: int | None = None
    daily_build_number: str | None = None


# --------------------------------------------------------------------------- parsing


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


def number_text(value: float | Decimal) -> str:
    """A JSON number as text, keeping its digits: ``Decimal("20261123.10")`` -> ``"20261123.10"``."""
    if isinstance(value, float):  # only from callers that built the data themselves
        return repr(value)
    return str(value)


def _clip(text: str, limit: int) -> str:
    """One line, printable, at most ``limit`` characters: safe to put in a message."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# The pairs huaweicloudsdkcore's DefaultExceptionHandler looks for, in its order.
_PAIRS = (("error_code", "error_msg"), ("errorCode", "errorMsg"), ("code", "message"))


def _sdk_pair(data: dict[str, Any]) -> tuple[Any, Any] | None:
    """The raw (code, message) the SDK's ``_process_sdk_error`` would settle on, or None.

    At one level the first pair whose *both* keys are present wins (values unchecked) and
    nothing below is looked at; without one, every object value is searched the same way,
    at any depth, and the last pair found wins. Done with an explicit stack in the SDK's
    (depth-first, in order) visiting order, so deep nesting cannot exhaust recursion.
    """
    found: tuple[Any, Any] | None = None
    stack: list[dict[str, Any]] = [data]
    while stack:
        node = stack.pop()
        pair = next(((node[c], node[m]) for c, m in _PAIRS if c in node and m in node), None)
        if pair is not None:
            found = pair
            continue
        stack.extend(reversed([v for v in node.values() if isinstance(v, dict)]))
    return found


def _as_text(value: Any) -> str:
    """A code or message as text; numbers keep their digits, objects become JSON text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float | Decimal):
        return number_text(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def extract_error(data: Any) -> tuple[str, str] | None:
    """(code, message) as text, found the way huaweicloudsdkcore's exception handler finds
    them (``_sdk_pair``); None when the body has no pair. An empty, null or zero value
    comes back as ``""`` (``error_fields`` then falls back as the SDK does)."""
    if not isinstance(data, dict):
        return None
    found = _sdk_pair(data)
    if found is None:
        return None
    code, msg = found
    return (_as_text(code) if code else ""), (_as_text(msg) if msg else "")


def error_fields(status: int, text: str, data: Any) -> tuple[str, str]:
    """The code and message of an error answer, as the SDK reads them: from the body's
    pair if it has one, else (and for an empty value) the HTTP status as the code and
    the body text as the message."""
    code, msg = extract_error(data) or ("", "")
    return code or str(status), msg or text


def _request_id(response: httpx.Response) -> str | None:
    """The ``X-Request-Id`` header (any case), as the SDK reads it; the body is not read."""
    return response.headers.get("X-Request-Id") or None


def _error_in_success(data: Any) -> tuple[str, str] | None:
    """A 2xx can still carry an error: ``error_code``/``error_msg`` (or the camel-case pair)
    with a non-empty code at the top level or one level down, envelope ``status: fail``,
    ``success: false``. (The SDK raises nothing on a 2xx; this is the bot's own check.)"""
    if not isinstance(data, dict):
        return None
    for holder in (data, *(v for v in data.values() if isinstance(v, dict))):
        for code_key, msg_key in _PAIRS[:2]:
            code = holder.get(code_key)
            if code not in (None, ""):
                msg = holder.get(msg_key)
                return _as_text(code), "" if msg is None else _as_text(msg)
    if str(data.get("status", "")).lower() == "fail" or data.get("success") is False:
        code = data.get("err_code") or ""
        msg = data.get("message") or data.get("result") or "CodeArts reported a failure."
        return str(code), str(msg)
    return None


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
    problem = _error_in_success(data)
    if problem:
        raise ApiError(response.status_code, problem[0], problem[1], rid,
                       hint="CodeArts refused the request.")
    return data


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 (milliseconds, offsets, ``Z``) or epoch seconds/ms; anything else is None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        if isinstance(value, int | float | Decimal):
            seconds = float(value)
            seconds = seconds / 1000 if seconds > 1e11 else seconds
            return datetime.fromtimestamp(seconds, tz=UTC)
        if isinstance(value, str) and value.strip():
            parsed = datetime.fromisoformat(value.strip())
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value) if isinstance(value, int | float | Decimal | str) else None
    except (ValueError, OverflowError, InvalidOperation):
        return None


def _str_or_none(value: Any) -> str | None:
    """Text as is; a bare JSON number as the digits it was written with."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        return number_text(value)
    if isinstance(value, str):
        return value or None
    return None


def _status_word(raw: Any) -> str:
    """The status as a word to keep: upper case, printable, at most ``STATUS_LIMIT`` characters."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | Decimal):
        return ""
    text = number_text(raw) if not isinstance(raw, str) else raw
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat.upper()[:STATUS_LIMIT]


def _finish_time(result: dict[str, Any]) -> datetime | None:
    """The first readable finish time among the spellings, ignoring placeholders (0, "")."""
    for key in _FINISH_KEYS:
        when = parse_time(result.get(key))
        if when is not None and when >= _EARLIEST_FINISH:
            return when
    return None


class HistoryRecord(BaseModel):
    """One line of a job's history: enough to find a build started at a given moment."""

    model_config = ConfigDict(frozen=True)

    build_no: str
    start_time: datetime | None = None
    end_time: datetime | None = None
    result: str = ""


def history_record_from(item: Any) -> HistoryRecord | None:
    """A history line, or None when it has no usable build number."""
    if not isinstance(item, dict):
        return None
    number = _str_or_none(item.get("build_number", item.get("buildNumber")))
    if number is None or not number.strip().isdigit():
        return None
    return HistoryRecord(build_no=number.strip(),
                         start_time=parse_time(item.get("start_time", item.get("startTime"))),
                         end_time=parse_time(item.get("end_time", item.get("endTime"))),
                         result=_text(item.get("result")))


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


class Step(BaseModel):
    """One step of a build as ``history-details`` lists it: ``status`` is ``running``,
    ``success``, ``error``, ``""`` (not reached yet) or a word shown as it is."""

    model_config = ConfigDict(frozen=True)

    name: str
    status: str = ""
    build_time_ms: int | None = None


MAX_STEPS = 200  # steps kept of one build (a longer list is odd: its head is enough)


def step_from(item: Any) -> Step | None:
    """A step, or None for a record without a usable name (skipped, never an error)."""
    if not isinstance(item, dict):
        return None
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        return None
    raw = item.get("status")
    status = raw if isinstance(raw, str) else ""
    took = _int_or_none(item.get("build_time"))
    return Step(name=_clip(name, 100), status=_clip(status, STATUS_LIMIT).lower(),
                build_time_ms=took if took is not None and took >= 0 else None)


class LogTail(BaseModel):
    """The last lines of a build's log, cleaned (``bot.logtail``); ``truncated`` when the
    log went on past what was read (a size cap or the time budget)."""

    model_config = ConfigDict(frozen=True)

    lines: tuple[str, ...] = ()
    truncated: bool = False
    read_chars: int = 0


STEPS_TIMEOUT = 5.0  # seconds for the steps call: progress is best effort
LOG_PAGE = 64 * 1024  # characters asked for per real-time-log call
LOG_MAX_CHARS = 2 * 1024 * 1024  # stop reading a log after this much
LOG_BUDGET = 8.0  # seconds for the whole tail: the result is never held up longer
LOG_MAX_PAGES = 200


def _text(value: Any) -> str:
    """A value as CodeArts showed it: strings as they are, numbers as their digits."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def build_state_from(result: dict[str, Any]) -> BuildState:
    """A BuildState from the ``result`` of record-info; a malformed field becomes None.

    A known final word decides the outcome; any other word with a finish time has
    ended (``"ended"``, the word kept); without one it is still running.
    """
    raw = result.get("status")
    key = " ".join(raw.split()).upper() if isinstance(raw, str) else ""
    status = _status_word(raw)
    finish = _finish_time(result)
    outcome = _FINAL.get(key) or ("ended" if finish is not None else None)
    daily = next((result[k] for k in ("daily_build_num", "daily_build_number", "dailyBuildNum")
                  if result.get(k) is not None), None)
    return BuildState(
        status=status, finished=outcome is not None, outcome=outcome,
        start_time=parse_time(result.get("start_time", result.get("startTime"))),
        finish_time=finish,
        duration_ms=_int_or_none(result.get("duration")),
        daily_build_number=_str_or_none(daily),
    )


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
            raise BadResponseError(response.status_code, _request_id(response),
                                   self.scrub(str(data)),
                                   "a run answer without a usable build number") from None

    def build_state(self, job_id: str, build_no: int | str) -> BuildState:
        """Where a build stands, from its record (retried: reading changes nothing)."""
        path = f"/v4/jobs/{_job(job_id)}/{_build_no(build_no)}/record-info"
        response = self._call("GET", path, read=True)
        data = self._decode(response)
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, dict):
            raise BadResponseError(response.status_code, _request_id(response), self.scrub(str(data)),
                                   "a build record without a result")
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
            raise BadResponseError(response.status_code, _request_id(response), self.scrub(str(data)),
                                   "a stop answer without success: true")

    def history(self, job_id: str, *, offset: int = 0,
                limit: int = 20) -> tuple[list[HistoryRecord], int | None]:
        """One page of a job's builds, newest first, and how many there are in all
        (``GET /v3/jobs/{job_id}/history``; retried: reading changes nothing)."""
        path = f"/v3/jobs/{_job(job_id)}/history?offset={int(offset)}&limit={int(limit)}"
        response = self._call("GET", path, read=True)
        data = self._decode(response)
        records = data.get("history_records") if isinstance(data, dict) else None
        if not isinstance(records, list):
            raise BadResponseError(response.status_code, _request_id(response),
                                   self.scrub(str(data)), "a history without history_records")
        read = [r for r in (history_record_from(item) for item in records) if r is not None]
        if len(read) < len(records):
            _note_skipped(job_id, len(records) - len(read))
        return read, _int_or_none(data.get("total"))

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
        return running, _text(result.get("last_build_no"))

    def build_parameters(self, job_id: str, build_no: int | str) -> dict[str, str]:
        """The parameters a build ran with, by name
        (``GET /v1/job/{job_id}/{build_no}/history-parameters``)."""
        path = f"/v1/job/{_job(job_id)}/{_build_no(build_no)}/history-parameters"
        response = self._call("GET", path, read=True)
        data = self._decode(response)
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, list):
            raise BadResponseError(response.status_code, _request_id(response),
                                   self.scrub(str(data)), "build parameters without a result")
        return {str(p["name"]): _text(p.get("value")) for p in result
                if isinstance(p, dict) and isinstance(p.get("name"), str)}

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
            following = _int_or_none(result.get("current_offset"))
            if result.get("has_more_data") is not True:
                break
            if following is None or following <= offset:  # no way forward: stop here
                truncated = True
                break
            offset = following
        else:
            truncated = True
        return LogTail(lines=tuple(tail.lines()), truncated=truncated, read_chars=tail.fed)

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

        Best-effort reads (steps, the log) pass fewer ``retries``, a shorter ``timeout``
        and a ``deadline`` (monotonic): no retry waits past it."""
        attempt = 0
        while True:
            try:
                response = self._attempt(method, path, body, timeout)
            except _NOT_SENT as exc:
                if attempt >= retries:
                    raise NotSentError(method, path, attempt + 1, type(exc).__name__) from exc
                delay = self._delay(attempt)
            except httpx.TransportError as exc:
                if not read:
                    raise OutcomeUnknownError(method, path, type(exc).__name__) from exc
                if attempt >= retries:
                    raise NotSentError(method, path, attempt + 1, type(exc).__name__) from exc
                delay = self._delay(attempt)
            else:
                wait = self._retry_wait(response, attempt, retries) if read else None
                if wait is None:
                    return response
                delay = wait
                if deadline is not None and time.monotonic() + delay >= deadline:
                    return response  # no time left to ask again: this answer is the one
            if deadline is not None and time.monotonic() + delay >= deadline:
                raise NotSentError(method, path, attempt + 1, "out of time")
            time.sleep(delay)
            attempt += 1

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
        return min(base + random.uniform(0, self._backoff / 2), 30.0)
