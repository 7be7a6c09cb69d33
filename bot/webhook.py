"""``POST /codearts/events``: CodeArts' generic webhook ("build task succeeded / failed"),
taken only as a nudge to poll now.

The route exists only when ``CODEARTS_WEBHOOK_SECRET`` is set (otherwise ``/codearts/events``
is 404 like any unknown path). A call must carry the secret in the ``X-Buildbot-Secret``
header (set as a custom header of the project's generic webhook in CodeArts), compared in
constant time. Answers: 401 without it or with a wrong one, 413 for a body over 64 KiB
(never read past the cap), 400 for a body that is not JSON, 503 when the database does not
answer, 204 otherwise. A refused call changes nothing.

The body's format is not documented, so nothing in it is trusted: it is only searched for a
build task ID (``job_id``, ``jobId``, ``task_id``... anywhere in it). If it names a job with
builds the bot follows, those builds are made due now; otherwise every followed build is.
The result is then read from CodeArts by the ordinary poll, as always, and the watcher is
woken at once. Nudges are paced: builds are made due at most once per second per job, and
"every build" at most once per second, so a flood of calls cannot make the bot hammer
CodeArts (a nudge inside the second is moved to the end of it, never lost).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from bot.store import Store

log = logging.getLogger(__name__)

PATH = "/codearts/events"
HEADER = "X-Buildbot-Secret"
ENVIRON_HEADER = "HTTP_X_BUILDBOT_SECRET"
MAX_BODY = 64 * 1024
EVERY = 1.0  # seconds: at most one nudge per job, and one "every build" nudge, per this
ALL = "*"  # the pacing key of an "every build" nudge
MAX_KEYS = 4096  # pacing entries kept; the oldest are forgotten past this
MAX_NODES = 2000  # JSON values looked at when searching the body for a job ID
MAX_NAMED = 5  # job IDs taken from one body at most
REFUSED_LOG_EVERY = 60.0  # refused calls are logged once, then once a minute with a count
_JOB_ID = re.compile(r"[A-Za-z0-9]{32}")
# keys that may hold a build task ID, compared without case, "_" and "-"
_JOB_KEYS = frozenset({"jobid", "taskid", "buildtaskid", "codecijobid", "buildjobid"})


def job_ids_in(body: Any) -> list[str]:
    """Build task IDs the body names under a plausible key, anywhere in it (breadth first,
    at most ``MAX_NODES`` values looked at, ``MAX_NAMED`` IDs kept), lower case, each once."""
    found: list[str] = []
    queue: list[Any] = [body]
    seen = 0
    while queue and seen < MAX_NODES and len(found) < MAX_NAMED:
        seen += 1
        for job in _visit(queue.pop(0), queue):
            if job not in found:
                found.append(job)
    return found[:MAX_NAMED]


def _visit(node: Any, queue: list[Any]) -> list[str]:
    """The job IDs ``node`` names directly, in order; the objects and arrays in it are put
    on ``queue`` to be looked at later."""
    if isinstance(node, list):
        queue.extend(v for v in node if isinstance(v, dict | list))
        return []
    if not isinstance(node, dict):
        return []
    named: list[str] = []
    for key, value in node.items():
        job = _job_id_under(key, value)
        if job is not None:
            named.append(job)
        elif isinstance(value, dict | list):
            queue.append(value)
    return named


def _job_id_under(key: Any, value: Any) -> str | None:
    """``value`` in lower case if it is a build task ID under a key that may hold one."""
    folded = str(key).replace("_", "").replace("-", "").casefold()
    if folded in _JOB_KEYS and isinstance(value, str) and _JOB_ID.fullmatch(value):
        return value.lower()
    return None


class Pacer:
    """When a nudge under ``key`` may take effect: now, or the end of the ``every``-second
    slot the previous one took; None when a nudge is already waiting for that slot (it
    covers this one). Thread-safe; ``now`` comes from the caller's clock."""

    def __init__(self, every: float = EVERY) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def slot(self, key: str, now: float) -> float | None:
        with self._lock:
            last = self._last.get(key)
            at = now if last is None else max(now, last + self.every)
            if last is not None and at > now and last > now:
                return None  # one is already waiting for a later slot: it covers this
            if len(self._last) >= MAX_KEYS:
                for old in sorted(self._last, key=self._last.__getitem__)[:MAX_KEYS // 4]:
                    del self._last[old]
            self._last[key] = at
            return at


class CodeArtsEvents:
    """The WSGI handler of ``POST /codearts/events`` (``web.make_wsgi`` routes to it)."""

    def __init__(self, secret: str, *, store: Store, clock: Callable[[], float],
                 wake: Callable[[], None], every: float = EVERY) -> None:
        if not secret:
            raise ValueError("the webhook needs a secret")
        self._secret = secret.encode()
        self.store = store
        self.clock = clock
        self.wake = wake
        self.pacer = Pacer(every)
        self.nudges = 0  # nudges that made builds due (tests, logs)
        self._refused = 0
        self._refused_logged_at = float("-inf")
        self._log_lock = threading.Lock()

    def __repr__(self) -> str:  # never the secret
        return "CodeArtsEvents(****)"

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not self._authorised(environ):
            return _answer(start_response, "401 Unauthorized", "invalid secret")
        raw = _read_body(environ)
        if raw is None:
            return _answer(start_response, "413 Payload Too Large", "too large")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return _answer(start_response, "400 Bad Request", "the body is not JSON")
        try:
            self.nudge(job_ids_in(body))
        except SQLAlchemyError as exc:
            log.warning("CodeArts webhook call not acted on: the database did not answer (%s)",
                        type(exc).__name__)
            return _answer(start_response, "503 Service Unavailable", "try again")
        start_response("204 No Content", [("Content-Length", "0")])
        return []

    def _authorised(self, environ: dict[str, Any]) -> bool:
        """Whether the call carries the secret (compared in constant time); a refusal is
        noted."""
        given = environ.get(ENVIRON_HEADER, "")
        if isinstance(given, str) and hmac.compare_digest(
                given.encode("latin-1", "replace"), self._secret):
            return True
        self._note_refused("no" if not given else "a wrong")
        return False

    def _note_refused(self, what: str) -> None:
        """A call without the secret: logged once, then once a minute with a count, so a
        flood of them cannot flood the log (the header's value is never logged)."""
        with self._log_lock:
            self._refused += 1
            now = time.monotonic()
            if now - self._refused_logged_at < REFUSED_LOG_EVERY:
                return
            count, self._refused, self._refused_logged_at = self._refused, 0, now
        log.warning("CodeArts webhook: %d call(s) refused with 401 (the last had %s "
                    "%s header)", count, what, HEADER)

    def nudge(self, named: list[str]) -> int:
        """Make the named jobs' followed builds due (or, if none of them is followed, every
        followed build), paced; wake the watcher. Returns how many builds were made due."""
        now = self.clock()
        jobs = sorted(self.store.followed_jobs(named) | self.store.subscribed_jobs(named)) \
            if named else []
        keys: list[tuple[str, list[str] | None]] = [(j, [j]) for j in jobs] or [(ALL, None)]
        moved = 0
        for key, only in keys:
            at = self.pacer.slot(key, now)
            if at is None:
                continue
            moved += self.store.make_due(at=at, job_ids=only)
            # a subscribed job's history is read then too: a build started outside Slack is
            # found, and its result told, in the same pass
            moved += self.store.make_jobs_due(at=at, job_ids=only)
        log.info("CodeArts webhook nudge: job(s) %s, %d build(s) made due",
                 ",".join(jobs) or "all", moved)
        if moved:
            self.nudges += 1
            self.wake()
        return moved


def _read_body(environ: dict[str, Any]) -> bytes | None:
    """The request's body, or None when it is over ``MAX_BODY`` (by its declared length, or
    as read: never more than one byte past the cap is read)."""
    declared = _declared_length(environ)
    if declared > MAX_BODY:
        return None
    raw = environ["wsgi.input"].read(MAX_BODY + 1) if declared or _chunked(environ) else b""
    return None if len(raw) > MAX_BODY else raw


def _declared_length(environ: dict[str, Any]) -> int:
    try:
        return int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _chunked(environ: dict[str, Any]) -> bool:
    return "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower()


def _answer(start_response: Callable[..., Any], status: str, text: str) -> list[bytes]:
    data = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(data)))])
    return [data]
