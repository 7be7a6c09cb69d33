"""HTTP mode: a WSGI app (``/slack/events``, ``/healthz``, ``/readyz``) served by waitress,
with a deadline on every whole request. Socket Mode, with HEALTH_PORT set: the same health
checks alone (``make_health_wsgi``), served the same way.

waitress's own ``channel_timeout`` is an *idle* timeout: every byte a client sends resets
it, so a client sending one header byte every few seconds holds its connection forever,
and a thousand of them fill the connection limit (Slack's own requests then wait in the
listen queue until Slack gives up). waitress has no setting for a deadline on a whole
request, so ``_Channel`` notes when a connection began waiting for its request and
``_Server`` closes it when the deadline passes, and, when every connection is taken,
closes the one that has waited longest to make room for a new one.
"""

from __future__ import annotations

import io
import logging
import resource
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk.signature import SignatureVerifier
from waitress.adjustments import Adjustments  # type: ignore[import-untyped]
from waitress.channel import HTTPChannel  # type: ignore[import-untyped]
from waitress.server import TcpWSGIServer  # type: ignore[import-untyped]
from waitress.task import ThreadedTaskDispatcher  # type: ignore[import-untyped]

log = logging.getLogger(__name__)
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

MAX_BODY = 1024 * 1024  # Slack's payloads are far smaller; refuse anything bigger
MAX_HEADERS = 64 * 1024  # all request headers together; Slack sends about 1 KiB
REQUEST_TIMEOUT = 10.0  # seconds to deliver a whole request (HTTP_REQUEST_TIMEOUT)
MAX_CONNECTIONS = 1000  # open client connections (HTTP_MAX_CONNECTIONS)
MAKE_ROOM_AFTER = 1.0  # when full, only a connection that has waited this long is closed
SPARE_FILES = 256  # file descriptors beyond the connections: database, clients, logs
# Socket Mode's health listener (HEALTH_PORT) serves probes and a scraper, not Slack
HEALTH_THREADS = 4
HEALTH_MAX_CONNECTIONS = 100


def make_health_wsgi(readiness: Readiness, *, metrics: Callable[[], bytes] | None = None
                     ) -> Callable[..., Iterable[bytes]]:
    """The health checks, and 404 for anything else: HTTP mode serves them beside Slack's
    requests (``make_wsgi``), Socket Mode alone on HEALTH_PORT, so they mean the same in both.

    ``/healthz`` is liveness: 200 whenever the server answers at all. ``/readyz`` is
    readiness: 503 with a one-line reason until Slack has accepted the bot token and
    while the database does not answer (see ``Readiness``), 200 ``ok`` otherwise.
    ``/metrics`` (Prometheus' text format) only with ``metrics`` (METRICS=1).
    """

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD", "") in ("GET", "HEAD"):
            if path == "/healthz":
                return _plain(start_response, "200 OK", "ok")
            if path == "/readyz":
                problem = readiness.problem()
                return _plain(start_response,
                              "503 Service Unavailable" if problem else "200 OK",
                              problem or "ok")
            if path == "/metrics" and metrics is not None:
                body = metrics()
                start_response("200 OK", [("Content-Type", METRICS_CONTENT_TYPE),
                                          ("Content-Length", str(len(body)))])
                return [body]
        return _plain(start_response, "404 Not Found", "not found")

    return wsgi


def make_wsgi(app: App, readiness: Readiness, signing_secret: str | None = None, *,
              metrics: Callable[[], bytes] | None = None,
              codearts_events: Callable[..., Iterable[bytes]] | None = None
              ) -> Callable[..., Iterable[bytes]]:
    """Route Slack's requests to Bolt and the rest to the health checks
    (``make_health_wsgi``: ``/healthz``, ``/readyz``, ``/metrics`` with ``metrics``); with
    ``codearts_events`` (``bot.webhook``, when CODEARTS_WEBHOOK_SECRET is set),
    ``POST /codearts/events`` goes to it, and is 404 otherwise.

    The signature is checked here, before Bolt parses the body, so a stranger's
    malformed body gets a 401 and never a traceback; a signed body Bolt still
    cannot read gets a 400.
    """
    slack = SlackRequestHandler(app, path="/slack/events")
    verifier = SignatureVerifier(signing_secret) if signing_secret else None
    health = make_health_wsgi(readiness, metrics=metrics)

    def events(environ: dict[str, Any], start_response: Callable[..., Any],
               length: int) -> Iterable[bytes]:
        body = environ["wsgi.input"].read(length) if length else b""
        if verifier is not None and not _signed(verifier, body, environ):
            return _plain(start_response, "401 Unauthorized", "invalid request")
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            return slack(environ, start_response)
        except Exception as exc:  # Bolt could not read a signed body: nothing we can act on
            log.warning("unreadable Slack request refused (%s)", type(exc).__name__)
            return _plain(start_response, "400 Bad Request", "unreadable request")

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "")
        if path == "/slack/events" and method == "POST":
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                return _plain(start_response, "413 Payload Too Large", "too large")
            return events(environ, start_response, length)
        if path == "/codearts/events" and method == "POST" and codearts_events is not None:
            return codearts_events(environ, start_response)
        return health(environ, start_response)

    return wsgi


def _signed(verifier: SignatureVerifier, body: bytes, environ: dict[str, Any]) -> bool:
    timestamp = environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", "")
    signature = environ.get("HTTP_X_SLACK_SIGNATURE", "")
    if not timestamp.isdigit() or not signature:
        return False
    try:
        return bool(verifier.is_valid(body=body, timestamp=timestamp, signature=signature))
    except UnicodeDecodeError:  # slack_sdk decodes the body first; Slack only sends UTF-8
        return False


def _plain(start_response: Callable[..., Any], status: str, text: str) -> list[bytes]:
    data = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(data)))])
    return [data]


# ---------------------------------------------------------------- readiness


def ping(engine: sa.Engine, *, timeout: float = 2.0) -> None:
    """One round trip to the database; raises if it cannot be made.

    PostgreSQL: ``SELECT 1`` on a pooled connection (the pool's pre-ping checks the
    connection first, so a dropped one is replaced; the probe is two tiny queries).
    SQLite: a pooled connection keeps working when the file is gone or its folder
    unmounted, so the file is opened afresh, read-only, and its schema read; that never
    creates it and takes microseconds.
    """
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:" \
            and not database.startswith("file:"):
        uri = Path(database).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=timeout)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
        return
    with engine.connect() as c:
        c.exec_driver_sql("SELECT 1")


class Readiness:
    """Whether this replica should get traffic: Slack has accepted the bot token
    (``ready``) and the database answered the last probe.

    ``problem()`` is cheap: it reads the last probe's result. A probe (``probe``, one
    database round trip) is started, in a thread of its own, by the first call at least
    ``every`` seconds after the previous one began, and only if none is running; the
    call that starts it waits for it up to ``wait`` seconds, so a load balancer asking
    now and then gets a fresh answer. A probe still running after ``patience`` seconds
    counts as a failure, so a hung database makes ``/readyz`` say so instead of hanging
    it, and never piles up threads. ``clock`` is a seam for tests.
    """

    def __init__(self, ready: threading.Event, probe: Callable[[], None], *,
                 every: float = 2.0, wait: float = 0.5, patience: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ready = ready
        self._probe = probe
        self._every = every
        self._wait = wait
        self._patience = patience
        self._clock = clock
        self._lock = threading.Lock()
        self._running_since: float | None = None
        self._last_start = float("-inf")
        self._problem: str | None = "the database has not been checked yet"
        self._failing = False
        self.probes = 0  # how many probes were started

    def problem(self) -> str | None:
        """None when ready, else one line saying why not (never a host name or secret)."""
        if not self._ready.is_set():
            return "starting: Slack has not accepted the bot token yet"
        done = self._start_if_due()
        if done is not None:
            done.wait(self._wait)
        with self._lock:
            running = self._running_since
            if running is not None and self._clock() - running > self._patience:
                return f"the database has not answered for {self._patience:g} s"
            return self._problem

    def _start_if_due(self) -> threading.Event | None:
        with self._lock:
            now = self._clock()
            if self._running_since is not None or now - self._last_start < self._every:
                return None
            self._running_since = self._last_start = now
            done = threading.Event()
            self.probes += 1
        threading.Thread(target=self._run, args=(done,), name="buildbot-readyz",
                         daemon=True).start()
        return done

    def _run(self, done: threading.Event) -> None:
        detail = ""
        try:
            self._probe()
            problem = None
        except Exception as exc:  # the reason is public: the type only; details go to the log
            problem = f"the database is unreachable ({type(exc).__name__})"
            detail = (str(exc).strip().splitlines() or [""])[0][:200]
        with self._lock:
            if problem and not self._failing:
                log.warning("readiness: the database did not answer (%s)", detail)
            elif not problem and self._failing:
                log.info("readiness: the database answers again")
            self._failing = problem is not None
            self._problem = problem
            self._running_since = None
        done.set()


# ---------------------------------------------------------------- the server


class _Channel(HTTPChannel):  # type: ignore[misc]
    """waitress's connection, plus since when it has been waiting for a whole request.

    ``waiting_since`` starts when the connection is accepted and again when the answer
    to its previous request has been handed over; while the app works on a request it
    is None (the app's time is not the client's). Unlike waitress's ``last_activity``,
    bytes arriving do not move it, so dribbling does not stretch the deadline.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting_since: float | None = time.monotonic()

    def service(self) -> None:  # a worker thread, one request
        self.waiting_since = None
        try:
            super().service()
        finally:
            self.waiting_since = time.monotonic()

    def waiting(self, now: float) -> float:
        """Seconds it has waited for a request; -1 if the app is working on one."""
        since = self.waiting_since
        if since is None or self.requests or self.will_close:
            return -1.0
        return now - since


class _Server(TcpWSGIServer):  # type: ignore[misc]
    """waitress's TCP server with ``_Channel`` connections, a whole-request deadline,
    and room made for new connections when the limit is reached.

    Both checks run on waitress's main loop (``readable`` is called on every turn and at
    least once a second), so no lock is needed: only that loop accepts and closes.
    """

    channel_class = _Channel
    next_channel_cleanup: float  # waitress's, set in its readable()

    def __init__(self, *args: Any, request_timeout: float, **kwargs: Any) -> None:
        self.request_timeout = request_timeout
        self.make_room_after = min(MAKE_ROOM_AFTER, request_timeout)
        self.closed_late = 0  # connections closed at the deadline
        self.closed_for_room = 0  # connections closed to make room for a new one
        self._next_room_check = 0.0
        self._closing: _Channel | None = None
        self._logged = (0, 0)
        self._next_log = 0.0
        super().__init__(*args, **kwargs)

    def readable(self) -> bool:
        if self.accepting and len(self._map) >= self.adj.connection_limit \
                and self._make_room(time.monotonic()):
            # A connection closes on this turn of the loop; accept on the next one. Not
            # closed here and now: its descriptor could be reused by this turn's accept
            # and then get this turn's events for the old one.
            now = time.time()
            if now >= self.next_channel_cleanup:  # as waitress's readable() does
                self.next_channel_cleanup = now + self.adj.cleanup_interval
                self.maintenance(now)
            return False
        return bool(super().readable())

    def maintenance(self, now: float) -> None:  # every ``cleanup_interval`` (1 s)
        super().maintenance(now)  # waitress's idle timeout
        mono = time.monotonic()
        for channel in list(self.active_channels.values()):
            if channel.waiting(mono) > self.request_timeout:
                channel.will_close = True  # closed on this turn of the loop, like waitress does
                self.closed_late += 1
        self._log_closures(mono)

    def _make_room(self, now: float) -> bool:
        """At the limit: have the connection that has waited longest for its request
        closed, if it has waited at least ``make_room_after`` s (a request from Slack or a
        proxy arrives whole in milliseconds, so it is the slow ones that go, and never one
        the app is serving). True while such a closing is under way."""
        closing = self._closing
        if closing is not None and closing._fileno is not None:
            return True  # not closed yet: one at a time
        self._closing = None
        if now < self._next_room_check:
            return False
        waited, oldest = max(((ch.waiting(now), ch) for ch in self.active_channels.values()),
                             key=lambda pair: pair[0], default=(-1.0, None))
        if oldest is None or waited < 0:
            self._next_room_check = now + 0.1  # every connection is being served
            return False
        if waited < self.make_room_after:
            self._next_room_check = now + self.make_room_after - waited
            return False
        oldest.will_close = True
        self._closing = oldest
        self.closed_for_room += 1
        return True

    def _log_closures(self, now: float) -> None:
        """One warning a minute at most while slow clients are being closed."""
        counts = (self.closed_late, self.closed_for_room)
        if counts != self._logged and now >= self._next_log:
            late, room = counts[0] - self._logged[0], counts[1] - self._logged[1]
            log.warning("closed %d connection(s) that sent no whole request within %g s and "
                        "%d to make room at the limit of %d connections (slow or stalled "
                        "clients; see README, Deployment)", late, self.request_timeout, room,
                        self.adj.connection_limit - 2)
            self._logged = counts
            self._next_log = now + 60.0


def make_server(wsgi: Callable[..., Iterable[bytes]], *, host: str, port: int,
                threads: int = 16, max_connections: int = MAX_CONNECTIONS,
                request_timeout: float = REQUEST_TIMEOUT) -> Any:
    """A waitress server bound now (port 0 picks a free port: ``server.effective_port``).

    At most ``max_connections`` client connections; each must deliver a whole request
    (headers and body) within ``request_timeout`` seconds of being accepted or of its
    previous answer, or it is closed. Bodies over ``MAX_BODY`` get 413, headers over
    ``MAX_HEADERS`` 431, both from waitress before the app sees them.
    """
    _enough_files(max_connections)
    adj = Adjustments(
        host=host, port=port, threads=threads, ident="buildbot",
        clear_untrusted_proxy_headers=True,
        # waitress counts its listening socket and its wake-up pipe as connections
        connection_limit=max_connections + 2,
        channel_timeout=max(1, int(request_timeout + 0.999)),  # idle: implied by the deadline
        cleanup_interval=1,  # how often the deadline is checked
        max_request_body_size=MAX_BODY, max_request_header_size=MAX_HEADERS,
        # poll(), not select(): select() fails on descriptors above 1023, which a
        # thousand connections reach, and takes waitress's loop down with it
        asyncore_use_poll=True)
    if len(adj.listen) != 1:
        raise ValueError(f"{host!r} resolves to {len(adj.listen)} addresses: give one address")
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    return _Server(wsgi, map={}, dispatcher=dispatcher, adj=adj, sockinfo=adj.listen[0],
                   request_timeout=request_timeout)


def _enough_files(max_connections: int) -> None:
    """Raise this process's open-file limit so ``max_connections`` fit beside the database
    and client connections (often 1,024 by default); warn if the hard limit forbids it."""
    need = max_connections + SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        target = soft
    if target < need:
        log.warning("the open-file limit (%d) is too low for HTTP_MAX_CONNECTIONS=%d: "
                    "raise it (ulimit -n %d) or lower HTTP_MAX_CONNECTIONS", target,
                    max_connections, need)
