"""CodeArts' answers: pydantic models of the replies the bot reads, and how they are read.

Every answer is untrusted: a field of an odd type becomes None (or is skipped) rather
than failing the call, and numbers keep the digits they were written with. An error
answer's code and message are found the way huaweicloudsdkcore's exception handler finds
them (``extract_error``, ``error_fields``). Nothing here does I/O or imports httpx.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from bot.codearts.errors import clip
from bot.masking import mask_text

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
            raise ValueError("not a string")
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


def number_text(value: float | Decimal) -> str:
    """A JSON number as text, keeping its digits:
    ``Decimal("20261123.10")`` -> ``"20261123.10"``."""
    if isinstance(value, float):  # only from callers that built the data themselves
        return repr(value)
    return str(value)


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


def error_in_success(data: Any) -> tuple[str, str] | None:
    """A 2xx can still carry an error: ``error_code``/``error_msg`` (or the camel-case pair)
    with a non-empty code at the top level or one level down, envelope ``status: fail``,
    ``success: false``. (The SDK raises nothing on a 2xx; this is the bot's own check.)"""
    if not isinstance(data, dict):
        return None
    return _nested_error_pair(data) or _envelope_failure(data)


def _nested_error_pair(data: dict[str, Any]) -> tuple[str, str] | None:
    """The first error pair with a non-empty code: at the top level, else in an object one
    level down."""
    for holder in (data, *(v for v in data.values() if isinstance(v, dict))):
        pair = _error_pair(holder)
        if pair is not None:
            return pair
    return None


def _error_pair(holder: dict[str, Any]) -> tuple[str, str] | None:
    """``error_code``/``error_msg`` (or ``errorCode``/``errorMsg``) as text, when the code
    is there and not empty."""
    for code_key, msg_key in _PAIRS[:2]:
        code = holder.get(code_key)
        if code not in (None, ""):
            msg = holder.get(msg_key)
            return _as_text(code), "" if msg is None else _as_text(msg)
    return None


def _envelope_failure(data: dict[str, Any]) -> tuple[str, str] | None:
    """An envelope that says it failed (``status: fail``, ``success: false``): its
    ``err_code`` and its ``message`` (or ``result``)."""
    if str(data.get("status", "")).lower() != "fail" and data.get("success") is not False:
        return None
    code = data.get("err_code") or ""
    msg = data.get("message") or data.get("result") or "CodeArts reported a failure."
    return str(code), str(msg)


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


def int_or_none(value: Any) -> int | None:
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
                         result=as_shown(item.get("result")))


RECORD_TEXT_LIMIT = 128  # characters kept of a name or branch from a build record


class BuildRecord(BaseModel):
    """What the build-info record says of one build (``GET /v1/record/{job_id}/{build_no}/
    build-info-record``): each field None when it is missing or unreadable (never an
    error). ``executor`` is the CodeArts user name that started it; ``trigger`` the
    record's ``trigger_type`` word (upper case)."""

    model_config = ConfigDict(frozen=True)

    daily_build_number: str | None = None
    code_branch: str | None = None
    executor: str | None = None
    trigger: str | None = None


def _record_text(value: Any) -> str | None:
    """A short, printable, single-line text from a record, or None."""
    text = _str_or_none(value)
    if text is None:
        return None
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat[:RECORD_TEXT_LIMIT] or None


def build_record_from(result: Any) -> BuildRecord:
    """A BuildRecord from the ``result`` of build-info-record; anything unreadable is None."""
    if not isinstance(result, dict):
        return BuildRecord()
    daily = _record_text(result.get("daily_build_number", result.get("dailyBuildNumber")))
    executor = next((t for t in (_record_text(result.get(k)) for k in
                                 ("executor", "user_name", "nickname", "user_id"))
                     if t is not None), None)
    trigger = _record_text(result.get("trigger_type", result.get("triggerType")))
    return BuildRecord(
        daily_build_number=daily if daily and len(daily) <= 64 else None,
        code_branch=_record_text(result.get("code_branch", result.get("codeBranch"))),
        executor=executor,
        trigger=trigger.upper()[:32] if trigger else None)


class Step(BaseModel):
    """One step of a build as ``history-details`` lists it: ``status`` is ``running``,
    ``success``, ``error``, ``""`` (not reached yet) or a word shown as it is."""

    model_config = ConfigDict(frozen=True)

    name: str
    status: str = ""
    build_time_ms: int | None = None


MAX_STEPS = 200  # steps kept of one build (a longer list is odd: its head is enough)


def step_from(item: Any) -> Step | None:
    """A step, or None for a record without a usable name (skipped, never an error); a
    secret in its name is masked (it is shown in the channel)."""
    if not isinstance(item, dict):
        return None
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        return None
    raw = item.get("status")
    status = raw if isinstance(raw, str) else ""
    took = int_or_none(item.get("build_time"))
    return Step(name=clip(mask_text(name), 100), status=clip(status, STATUS_LIMIT).lower(),
                build_time_ms=took if took is not None and took >= 0 else None)


class LogTail(BaseModel):
    """The last lines of a build's log, cleaned (``bot.logtail``); ``truncated`` when the
    log went on past what was read (a size cap or the time budget)."""

    model_config = ConfigDict(frozen=True)

    lines: tuple[str, ...] = ()
    truncated: bool = False
    read_chars: int = 0


def as_shown(value: Any) -> str:
    """A value as CodeArts showed it: strings as they are, numbers as their digits."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def build_state_from(result: dict[str, Any]) -> BuildState:
    """A BuildState from the ``result`` of record-info; a malformed field becomes None.

    A known final word decides the outcome; any other word with a finish time has
    ended (``"ended"``, the word kept); without one it is still running.
    """
    daily = next((result[k] for k in ("daily_build_num", "daily_build_number", "dailyBuildNum")
                  if result.get(k) is not None), None)
    return _build_state(result.get("status"),
                        parse_time(result.get("start_time", result.get("startTime"))),
                        _finish_time(result), duration_ms=int_or_none(result.get("duration")),
                        daily=_str_or_none(daily))


def state_from_times(status: str, start_time: datetime | None,
                     end_time: datetime | None) -> BuildState:
    """``build_state_from`` for a word and times already read (a history line): the same
    decision, without writing the times out and reading them again."""
    finish = end_time if end_time is not None and end_time >= _EARLIEST_FINISH else None
    return _build_state(status, start_time, finish, duration_ms=None, daily=None)


def _build_state(raw: Any, start_time: datetime | None, finish: datetime | None, *,
                 duration_ms: int | None, daily: str | None) -> BuildState:
    key = " ".join(raw.split()).upper() if isinstance(raw, str) else ""
    outcome = _FINAL.get(key) or ("ended" if finish is not None else None)
    return BuildState(status=_status_word(raw), finished=outcome is not None, outcome=outcome,
                      start_time=start_time, finish_time=finish, duration_ms=duration_ms,
                      daily_build_number=daily)


# --- what a build produced (``GET /v3/jobs/{job_id}/{build_no}/output-info``) ---------------

OUTPUT_FIELD_CHARS = 500  # characters of a name, version or address kept (more is cut)
OUTPUTS_READ = 1_000  # output records read of one answer at most (the rest are counted)
OutputKind = Literal["package", "image"]
_OUTPUT_GROUPS: tuple[tuple[str, OutputKind], ...] = (
    ("package_info", "package"), ("package_infos", "package"), ("image_infos", "image"))
_QUERY_VALUE = re.compile(r"([?&][^=&#\s]*=)[^&#\s]*")


class Output(BaseModel):
    """One thing a build produced, as the SDK's ``OutPutResult`` gives it: a package
    (``package_info``, ``package_infos``) or an image (``image_infos``). The texts are
    masked and made one printable line; nothing is escaped yet (``bot.messages`` does)."""

    model_config = ConfigDict(frozen=True)

    kind: OutputKind
    name: str
    version: str = ""
    address: str = ""


class Outputs(BaseModel):
    """A build's outputs in the answer's order (packages, then images), at most
    ``OUTPUTS_READ`` of them; ``total`` counts every usable one in the answer."""

    model_config = ConfigDict(frozen=True)

    items: tuple[Output, ...] = ()
    total: int = 0


def _output_text(value: Any) -> str:
    text = _str_or_none(value)
    return clip(mask_text(text), OUTPUT_FIELD_CHARS) if text else ""


def output_address(value: Any) -> str:
    """An output's address, safe to show: a password in a URL and every query value (a
    signed download link carries its signature and key there) are masked."""
    text = _output_text(value)
    return _QUERY_VALUE.sub(lambda m: m.group(1) + "****", text) if "?" in text else text


def output_from(item: Any, kind: OutputKind, key: str = "") -> Output | None:
    """One output record (``OutPutResult``), or None when it names nothing: neither a
    name (or its key in the map) nor an address."""
    if not isinstance(item, dict):
        return None
    name = _output_text(item.get("name")) or _output_text(key)
    address = output_address(item.get("uri"))
    if not name and not address:
        return None
    return Output(kind=kind, name=name or "(no name)", version=_output_text(item.get("version")),
                  address=address)


def outputs_from(result: Any) -> Outputs | None:
    """The ``result`` of an output-info answer (``OutPutInfoResult``) read; None when it
    is not an object (unreadable). A null result is nothing produced. Maps and single
    records of an odd type are skipped, as are records that name nothing; the same
    output listed twice (``package_info`` is often also in ``package_infos``) is shown
    once."""
    if result is None:
        return Outputs()
    if not isinstance(result, dict):
        return None
    seen: set[Output] = set()
    items: list[Output] = []
    total = 0
    for field, kind in _OUTPUT_GROUPS:
        group = result.get(field)
        if field == "package_info":
            records: list[tuple[str, Any]] = [("", group)] if group is not None else []
        elif isinstance(group, dict):
            records = [(str(k), v) for k, v in group.items()]
        elif isinstance(group, list):
            records = [("", v) for v in group]
        else:
            records = []
        for key, record in records:
            if total >= OUTPUTS_READ * 10:
                break  # an absurd answer: what was read is enough, the rest is not counted
            got = output_from(record, kind, key)
            if got is None or got in seen:
                continue
            seen.add(got)
            total += 1
            if len(items) < OUTPUTS_READ:
                items.append(got)
    return Outputs(items=tuple(items), total=total)
