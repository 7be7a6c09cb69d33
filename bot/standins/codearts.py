"""A stand-in for Huawei Cloud CodeArts Build and IAM on a loopback port.

Written from the API reference pages (docs/codearts-api.md), not from the
bot's client, so the two can disagree and tests catch it. One real HTTP
server (``ThreadingHTTPServer``, port 0, daemon threads, HTTP/1.1 keep-alive)
serves both services::

    with FakeCodeArts() as fake:
        fake.add_job("f9d6c8466d614a9788e9a0acf6c15f46")
        client = CodeArtsClient(fake.url, auth=TokenAuth(fake.token))
        ...
        assert len(fake.requests_to("/v3/jobs/build")) == 1

Served paths:

* ``POST /v3/auth/tokens``                       IAM password login (201, ``X-Subject-Token``)
* ``POST /v3/jobs/build``                        run (validates the body like the docs say)
* ``GET  /v4/jobs/{job_id}/{build_no}/record-info``  enveloped build record
* ``GET  /v1/record/{job_id}/{build_no}/build-info-record``  who and what started a build
* ``POST /v3/jobs/{job_id}/{build_no}/stop``     stop (``{"success": true, "result": ""}``)
* ``GET  /v3/jobs/{job_id}/{build_no}/history-details``  bare ``build_steps`` (scripted with
  ``set_steps``, or the job's step names advancing with the build's clock)
* ``GET  /v1/job/{job_id}/running-status``     enveloped ``is_running``, ``last_build_no``,
  ``last_build_status`` (any build of the job still running)
* ``GET  /v3/jobs/{job_id}/{build_no}/real-time-log``    enveloped log pages (``offset``,
  ``length``, ``current_offset``, ``has_more_data``); the text is set with ``set_log``
  or ``add_job(log=...)``
* ``GET  /v3/jobs/{job_id}/{build_no}/output-info``      enveloped ``OutPutInfoResult``
  (``package_info``, ``package_infos``, ``image_infos``), set with ``set_outputs`` or
  ``add_job(outputs=...)``; by default nothing produced

CodeArts paths need ``X-Auth-Token`` (a configured token or one IAM issued and
not expired) or an AK/SK signature, which the fake re-computes with its own
implementation of the signing algorithm. Failures answer 401
``APIGW.0301`` as the API gateway does.

Choices where the docs are silent: an unknown but well-formed job ID answers
404 ``DEVCB.00031006`` ("build task not found"); a malformed one 400
``CB.00060201``; a bad parameter 400 ``CB.00060200``. The 403 code ``FAKE.0403``
is made up (the docs give none). Stopping a finished build answers
``{"success": false, ...}``.

Switches to misbehave, each consumed by the next matching request(s) on a
CodeArts path (IAM only when ``path_prefix`` starts with ``/v3/auth``):
``fail_next``, ``unauthorized_once``, ``hang``, ``html_next``, ``drop_next``;
persistent: ``latency`` (every answer slowed), ``iam_down``.

Time: builds run on ``clock`` (``time.monotonic`` unless one is injected), so a test
can end them by moving its clock instead of sleeping. Every build time the fake
shows (start and finish times, durations, the daily build number's day, history
records) is read from that clock, turned into wall-clock time at the offset measured
when the fake was made; a test clock that moves forward moves them with it, as it
moves the bot's. The gateway (IAM tokens' lifetime, AK/SK's ``X-Sdk-Date`` window)
keeps the wall clock (``time.time``): it checks the bot's credentials, and the bot's
auth reads the wall clock. A ``hang`` or ``latency`` is real time: it delays the HTTP
answer the bot's client waits for.

Layout: this module holds the state, the switches and the HTTP plumbing; the build
endpoints and the Build model are in ``codearts_builds`` (``BuildService``), IAM login and
the gateway's auth checks in ``codearts_gateway`` (``Gateway``), both mixed into
FakeCodeArts.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from bot.standins.codearts_builds import RESERVED_NAMES, Build, BuildService
from bot.standins.codearts_gateway import Gateway, RecordedRequest

__all__ = ["DEFAULT_ERRORS", "HTML_PAGE", "IAM_PATH", "RESERVED_NAMES", "RUN_PATH", "Build",
           "FakeCodeArts", "RecordedRequest"]

IAM_PATH = "/v3/auth/tokens"
RUN_PATH = "/v3/jobs/build"
_RUN = re.compile(re.escape(RUN_PATH) + r"\Z")  # the path exactly
_RECORD = re.compile(r"^/v4/jobs/([^/]+)/([^/]+)/record-info$")
_STOP = re.compile(r"^/v3/jobs/([^/]+)/([^/]+)/stop$")
_HISTORY = re.compile(r"^/v3/jobs/([^/]+)/history$")
_PARAMS = re.compile(r"^/v1/job/([^/]+)/([^/]+)/history-parameters$")
_DETAILS = re.compile(r"^/v3/jobs/([^/]+)/([^/]+)/history-details$")
_LOG = re.compile(r"^/v3/jobs/([^/]+)/([^/]+)/real-time-log$")
_RUNNING = re.compile(r"^/v1/job/([^/]+)/running-status$")
_OUTPUTS = re.compile(r"^/v3/jobs/([^/]+)/([^/]+)/output-info$")
_BUILD_INFO = re.compile(r"^/v1/record/([^/]+)/([^/]+)/build-info-record$")

DEFAULT_ERRORS: dict[int, tuple[str, str]] = {
    400: ("CB.00060200", "Invalid parameter."),
    401: ("APIGW.0301", "Incorrect IAM authentication information: verify token fail"),
    403: ("FAKE.0403", "Forbidden: no permission on this build task."),
    404: ("CB.00060214", "URL not found."),
    429: ("APIGW.0308", "The throttling threshold has been reached."),
    500: ("CB.00060101", "Internal error."),
    502: ("CB.00060100", "Network busy, try again later."),
    503: ("CB.00060100", "Network busy, try again later."),
}
HTML_PAGE = (b"<html><head><title>502 Bad Gateway</title></head>"
             b"<body><h1>502 Bad Gateway</h1></body></html>")


@dataclass
class _Rule:
    kind: str  # "fail" | "hang" | "html" | "drop"
    count: int
    path_prefix: str | None
    status: int = 500
    body: Any = None
    headers: dict[str, str | None] = field(default_factory=dict)
    seconds: float = 0.0

    def matches(self, path: str) -> bool:
        if self.path_prefix is None:
            return path != IAM_PATH
        return path.startswith(self.path_prefix)


class FakeCodeArts(Gateway, BuildService):
    """CodeArts Build + IAM on ``127.0.0.1:<random port>``; see the module docstring."""

    token = "fake-static-token"
    user, password, domain = "buildbot", "fake-iam-password", "fake-account"
    project_name, project_id = "cn-north-4", "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    ak, sk = "FAKEACCESSKEY", "fake-secret-key"

    def __init__(self, *, token_lifetime: float = 86400.0, build_duration: float = 0.3,
                 latency: float = 0.0, clock_skew: float = 900.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``clock``: the seconds builds run on (any origin; monotonic by default). A test
        passes its own clock and moves it forward to end builds without sleeping."""
        self.clock = clock
        self._wall_offset = time.time() - clock()  # clock reading -> epoch seconds
        self.token_lifetime = token_lifetime
        self.build_duration = build_duration
        self.latency = latency
        self.clock_skew = clock_skew
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._requests: list[RecordedRequest] = []
        self._rules: list[_Rule] = []
        self._tokens: dict[str, float] = {self.token: float("inf")}  # token -> expires (epoch)
        self._users: dict[tuple[str, str], str] = {(self.domain, self.user): self.password}
        self._aksk: dict[str, str] = {self.ak: self.sk}
        self._jobs: dict[str, dict[str, Any]] = {}
        self._builds: dict[str, list[Build]] = {}
        self._daily: dict[tuple[str, str], int] = {}
        self._iam_down = False
        self.logins = 0
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread: threading.Thread | None = None

    # ---- lifecycle

    @property
    def url(self) -> str:
        """Base URL for both CodeArts and IAM, e.g. ``http://127.0.0.1:54321``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop at once: wake hanging handlers, close every open connection."""
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=2)
        self._server.close_connections()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- state set-up

    def add_job(self, job_id: str, *, outcome: str = "SUCCESS", duration: float | None = None,
                steps: list[str] | tuple[str, ...] = (), log: str | None = None,
                outputs: Any = None) -> str:
        """Register a build task; its builds end with ``outcome`` after ``duration`` seconds,
        going through ``steps`` (names), writing ``log`` (None: a short made-up log) and
        producing ``outputs`` (output-info's ``result``; None: nothing)."""
        with self._lock:
            self._jobs[job_id] = {"outcome": outcome, "duration": duration,
                                  "steps": tuple(steps), "log": log, "outputs": outputs}
            self._builds.setdefault(job_id, [])
        return job_id

    def add_token(self, token: str, *, lifetime: float | None = None) -> None:
        with self._lock:
            self._tokens[token] = time.time() + lifetime if lifetime else float("inf")

    def revoke_tokens(self) -> None:
        """Every token (configured and issued) stops working: the 'token expires' case."""
        with self._lock:
            self._tokens.clear()

    def add_user(self, name: str, password: str, domain: str | None = None) -> None:
        with self._lock:
            self._users[(domain or self.domain, name)] = password

    def add_aksk(self, ak: str, sk: str) -> None:
        with self._lock:
            self._aksk[ak] = sk

    def set_status(self, job_id: str, build_no: int, status: str | None) -> None:
        """Force the raw status a build reports (e.g. ``"queued"``); None to let it run."""
        with self._lock:
            self._find(job_id, build_no).forced_status = status  # type: ignore[union-attr]

    def set_steps(self, job_id: str, build_no: int, steps: list[dict[str, Any]] | None) -> None:
        """Script what history-details lists for a build (records served as given, odd ones
        included); None to go back to the job's steps."""
        with self._lock:
            self._find(job_id, build_no).steps = steps  # type: ignore[union-attr]

    def set_outputs(self, job_id: str, build_no: int, result: Any) -> None:
        """Script what output-info answers for a build: its ``result`` (an
        ``OutPutInfoResult`` object, or anything odd), served as given; None for nothing."""
        with self._lock:
            self._find(job_id, build_no).outputs = result  # type: ignore[union-attr]

    def set_log(self, job_id: str, build_no: int, text: str | None) -> None:
        """Script a build's log text (served in pages by real-time-log)."""
        with self._lock:
            self._find(job_id, build_no).log = text  # type: ignore[union-attr]

    # ---- switches

    def fail_next(self, status: int, body: Any = None, count: int = 1,
                  path_prefix: str | None = None,
                  headers: dict[str, str | None] | None = None) -> None:
        """Answer the next ``count`` matching requests with ``status`` and ``body``.

        ``body`` None means the documented error body for the status; a dict is
        sent as JSON; str/bytes as they are. A header value None removes it
        (e.g. ``{"X-Request-Id": None}``).
        """
        self._add(_Rule("fail", count, path_prefix, status=status, body=body,
                        headers=dict(headers or {})))

    def unauthorized_once(self, path_prefix: str | None = None) -> None:
        """The next CodeArts request gets the gateway's 401 'token expires' answer."""
        body = {"error_code": "APIGW.0301",
                "error_msg": "Incorrect IAM authentication information: token expires"}
        self.fail_next(401, body, 1, path_prefix)

    def hang(self, seconds: float, count: int = 1, path_prefix: str | None = None) -> None:
        """Handle the next request(s) normally but wait ``seconds`` before answering."""
        self._add(_Rule("hang", count, path_prefix, seconds=seconds))

    def html_next(self, status: int = 502, count: int = 1, path_prefix: str | None = None,
                  headers: dict[str, str | None] | None = None) -> None:
        """Answer with a proxy's HTML page instead of JSON (with ``headers`` as
        ``fail_next`` takes them, e.g. ``{"X-Request-Id": "gw-1"}``).

        A 4xx page comes from something in front of CodeArts (a WAF, a proxy) that
        refused the request: CodeArts never sees it. With any other status the request
        is handled first (a run creates its build) and the page replaces the answer.
        """
        self._add(_Rule("html", count, path_prefix, status=status,
                        headers=dict(headers or {})))

    def drop_next(self, count: int = 1, path_prefix: str | None = None) -> None:
        """Handle the request (a run creates its build), then close without answering."""
        self._add(_Rule("drop", count, path_prefix))

    def iam_down(self, down: bool = True) -> None:
        """IAM answers 503 to every login until called with False."""
        self._iam_down = down

    def reset(self) -> None:
        """Forget recorded requests and pending switches (jobs, builds and tokens stay)."""
        with self._lock:
            self._requests.clear()
            self._rules.clear()

    # ---- inspection

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests
                if r.path.startswith(path_prefix) and (method is None or r.method == method)]

    def builds(self, job_id: str) -> list[Build]:
        with self._lock:
            return list(self._builds.get(job_id, []))

    # ---- internals used by the handler

    def _add(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def _take_rules(self, path: str) -> list[_Rule]:
        """The first matching rule of each kind, each consumed once."""
        taken: dict[str, _Rule] = {}
        with self._lock:
            for rule in self._rules:
                if rule.count > 0 and rule.kind not in taken and rule.matches(path):
                    rule.count -= 1
                    taken[rule.kind] = rule
            self._rules = [r for r in self._rules if r.count > 0]
        return list(taken.values())

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(req)

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    # ---- the services

    def handle(self, req: RecordedRequest) -> tuple[int, Any, dict[str, str]]:
        """(status, body, extra headers) for a request, before any misbehaviour."""
        if req.path == IAM_PATH and req.method == "POST":
            return self._login(req)
        problem = self._check_auth(req)
        if problem:
            return 401, {"error_code": "APIGW.0301",
                         "error_msg": f"Incorrect IAM authentication information: {problem}"}, {}
        for method, pattern, serve in _ROUTES:
            if (m := pattern.match(req.path)) and req.method == method:
                return serve(self, m, req)
        return 404, {"error_code": "APIGW.0101",
                     "error_msg": "The API does not exist or has not been published"
                                  " in the environment"}, {}


_Answer = tuple[int, Any, dict[str, str]]  # status, body, extra headers

# The CodeArts paths FakeCodeArts.handle serves, tried in order: (method, path, answer).
_ROUTES: tuple[tuple[str, re.Pattern[str],
                     Callable[[FakeCodeArts, re.Match[str], RecordedRequest], _Answer]], ...] = (
    ("POST", _RUN, lambda fake, m, req: fake._run(req.body)),
    ("GET", _RECORD, lambda fake, m, req: fake._record_info(m.group(1), m.group(2))),
    ("POST", _STOP, lambda fake, m, req: fake._stop(m.group(1), m.group(2))),
    ("GET", _HISTORY, lambda fake, m, req: fake._history(m.group(1),
                                                          dict(parse_qsl(req.query)))),
    ("GET", _PARAMS, lambda fake, m, req: fake._parameters(m.group(1), m.group(2))),
    ("GET", _DETAILS, lambda fake, m, req: fake._details(m.group(1), m.group(2))),
    ("GET", _LOG, lambda fake, m, req: fake._log(m.group(1), m.group(2),
                                                  dict(parse_qsl(req.query)))),
    ("GET", _RUNNING, lambda fake, m, req: fake._running(m.group(1))),
    ("GET", _OUTPUTS, lambda fake, m, req: fake._outputs(m.group(1), m.group(2))),
    ("GET", _BUILD_INFO, lambda fake, m, req: fake._build_info_record(m.group(1), m.group(2))),
)


# --------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for a hanging handler
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's 5 resets connections in a burst
    fake: FakeCodeArts

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet about clients that went away; anything else is a bug in the fake."""
        import sys

        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall
    server: _Server
    timeout = 30  # an idle keep-alive connection's thread gives up after this

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read fake.requests instead."""

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _read(self) -> RecordedRequest:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        parts = urlsplit(self.path)
        return RecordedRequest(self.command, parts.path, parts.query,
                               {k.lower(): v for k, v in self.headers.items()}, body, raw,
                               time.monotonic())

    def _serve(self) -> None:
        fake = self.server.fake
        req = self._read()
        fake._record(req)
        rules = {r.kind: r for r in fake._take_rules(req.path)}
        status, body, headers = self._answer(fake, req, rules)
        delay = fake.latency + (rules["hang"].seconds if "hang" in rules else 0.0)
        if delay:
            fake._sleep(delay)
        if "drop" in rules or fake._stopping.is_set():
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if "html" in rules:
            self._send(rules["html"].status, HTML_PAGE,
                       {"Content-Type": "text/html", **rules["html"].headers})
            return
        self._send_json(status, body, headers)

    @staticmethod
    def _answer(fake: FakeCodeArts, req: RecordedRequest,
                rules: dict[str, _Rule]) -> tuple[int, Any, dict[str, str | None]]:
        """What to answer before any delay, drop or HTML page replaces it."""
        if "fail" in rules:  # failed before CodeArts acted: no side effect
            rule = rules["fail"]
            body = rule.body if rule.body is not None else _default_error(rule.status)
            return rule.status, body, dict(rule.headers)
        if "html" in rules and 400 <= rules["html"].status < 500:  # refused in front
            return rules["html"].status, None, {}
        # a dropped or hanging run (or one answered by a 5xx/2xx page) creates its build
        status, body, answer_headers = fake.handle(req)
        return status, body, dict(answer_headers)

    def _send_json(self, status: int, body: Any, headers: dict[str, str | None]) -> None:
        if isinstance(body, str | bytes):
            payload = body.encode() if isinstance(body, str) else body
            ctype = "text/plain"
        else:
            payload, ctype = json.dumps(body).encode(), "application/json;charset=UTF-8"
        self._send(status, payload, {"Content-Type": ctype, **headers})

    def _send(self, status: int, payload: bytes, headers: dict[str, str | None]) -> None:
        merged: dict[str, str | None] = {"X-Request-Id": uuid.uuid4().hex, **headers}
        try:
            self.send_response(status)
            for name, value in merged.items():
                if value is not None:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # the client gave up (timeout) and closed: nothing to answer
            self.close_connection = True

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:
            self.close_connection = True


def _default_error(status: int) -> dict[str, str]:
    code, msg = DEFAULT_ERRORS.get(status, (f"FAKE.{status}", "Error."))
    return {"error_code": code, "error_msg": msg}
