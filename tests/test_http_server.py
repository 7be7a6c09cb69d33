"""The HTTP server's limits and health checks, through the running bot on loopback.

- A connection must deliver a whole request within ``HTTP_REQUEST_TIMEOUT``, however
  it dribbles; at ``HTTP_MAX_CONNECTIONS`` the slowest make room, so Slack is answered.
- ``/healthz`` is liveness; ``/readyz`` is readiness: Slack accepted the token and the
  database answers, probed at most every 2 s and never hanging the request.
- The replay memory keeps a signature until its own timestamp leaves Bolt's window.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bot.web import Readiness
from tests.harness import SECRET, Bot, running_bot
from tests.slack_requests import SlackSender, command_body, signed_headers


def sqlite_url(tmp_path: Path) -> str:
    folder = tmp_path / "db"
    folder.mkdir()
    return f"sqlite:///{folder / 'buildbot.db'}"


def port_of(bot: Bot) -> int:
    return int(bot.url.rsplit(":", 1)[1])


def wait_until(check: Callable[[], Any], timeout: float, every: float = 0.05) -> Any:
    until = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > until:
            return value
        time.sleep(every)


# --------------------------------------------------------------------------- slow clients


class Dribblers:
    """``n`` connections that each send one more byte of a request's headers every
    ``every`` seconds and never finish it; notes when the server closes each one."""

    HEAD = b"POST /slack/events HTTP/1.1\r\nHost: bot\r\nX-Slow: " + b"s" * 4096

    def __init__(self, port: int, n: int, every: float) -> None:
        self.every = every
        self.opened: dict[socket.socket, float] = {}
        self.closed: dict[socket.socket, float] = {}
        self.sent: dict[socket.socket, int] = {}
        self.selector = selectors.DefaultSelector()
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.setblocking(False)
            self.opened[s] = time.monotonic()
            self.sent[s] = 0
            self.selector.register(s, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _closed_by_server(self, s: socket.socket) -> None:
        if s not in self.closed:
            self.closed[s] = time.monotonic()
            self.selector.unregister(s)

    def _run(self) -> None:
        while not self._stop.is_set():
            for s in list(self.opened):
                if s in self.closed:
                    continue
                try:
                    s.send(self.HEAD[self.sent[s] % len(self.HEAD):][:1])
                    self.sent[s] += 1
                except BlockingIOError:
                    pass
                except OSError:
                    self._closed_by_server(s)
            deadline = time.monotonic() + self.every
            while (left := deadline - time.monotonic()) > 0 and not self._stop.is_set():
                for key, _ in self.selector.select(min(left, 0.05)):
                    s = key.fileobj  # type: ignore[assignment]
                    try:
                        data = s.recv(4096)  # type: ignore[union-attr]
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        self._closed_by_server(s)  # type: ignore[arg-type]

    def open_count(self) -> int:
        return len(self.opened) - len(self.closed)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in self.opened:
            s.close()
        self.selector.close()


@pytest.fixture
def dribblers() -> Iterator[list[Dribblers]]:
    made: list[Dribblers] = []
    yield made
    for d in made:
        d.close()


def test_slow_clients_beyond_the_limit_do_not_lock_slack_out(
        tmp_path: Path, dribblers: list[Dribblers]) -> None:
    """250 clients dribbling header bytes against a limit of 100: a signed command that
    arrives after them is answered within 3 s, and every slow client is closed."""
    with running_bot(sqlite_url(tmp_path), tmp_path, http_max_connections=100,
                     http_request_timeout=2.0) as bot:
        slow = Dribblers(port_of(bot), 250, every=0.5)
        dribblers.append(slow)
        # all 250 are connected (100 accepted, the rest queued) and sending
        assert wait_until(lambda: len(bot.runtime.server.active_channels) == 100
                          and all(n >= 1 for n in slow.sent.values()), timeout=5.0)
        sender = SlackSender(bot.url + "/slack/events", SECRET)  # a fresh connection
        try:
            url = bot.slack.response_url()
            started = time.monotonic()
            resp = sender.post(command_body("help", user="UALICE", channel="CBUILDS",
                                            response_url=url))
            took = time.monotonic() - started
        finally:
            sender.close()
        assert resp.status_code == 200, resp.text
        assert took < 3.0, f"Slack's request took {took:.2f} s"
        assert wait_until(lambda: slow.open_count() == 0, timeout=10.0), \
            f"{slow.open_count()} slow connections still open"
        assert all(n >= 2 for n in slow.sent.values())  # they kept sending until closed
        assert httpx.get(bot.url + "/healthz").status_code == 200


def test_a_request_must_arrive_whole_within_the_deadline_however_it_dribbles(
        tmp_path: Path, dribblers: list[Dribblers]) -> None:
    """Below the limit: a client sending a byte every 0.2 s (so never idle) is closed when
    the 1.5 s deadline passes, not before; a slow but whole request within it is answered,
    and the kept-alive connection then gets the same deadline for its next request."""
    deadline = 1.5
    with running_bot(sqlite_url(tmp_path), tmp_path, http_request_timeout=deadline) as bot:
        slow = Dribblers(port_of(bot), 20, every=0.2)
        dribblers.append(slow)

        body = command_body("help", user="UALICE", channel="CBUILDS",
                            response_url=bot.slack.response_url())
        head = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(SECRET, body).items())
        raw = (f"POST /slack/events HTTP/1.1\r\nHost: bot\r\nContent-Length: {len(body)}\r\n"
               f"{head}\r\n").encode() + body
        honest = socket.create_connection(("127.0.0.1", port_of(bot)), timeout=5)
        try:
            pieces = [raw[i * len(raw) // 5:(i + 1) * len(raw) // 5] for i in range(5)]
            for piece in pieces:  # the whole request over 1 s: slow, but within the deadline
                honest.sendall(piece)
                time.sleep(0.25)
            answer = honest.recv(65536)
            answered = time.monotonic()
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
            while honest.recv(65536):  # kept alive until the deadline for the next request
                pass
            kept = time.monotonic() - answered
        finally:
            honest.close()
        assert deadline - 0.1 <= kept <= deadline + 2.0, kept

        assert wait_until(lambda: slow.open_count() == 0, timeout=deadline + 3.0)
        lived = [slow.closed[s] - slow.opened[s] for s in slow.opened]
        assert min(lived) >= deadline - 0.1, lived  # the deadline, not before it
        assert max(lived) <= deadline + 2.0, lived  # checked every second


# --------------------------------------------------------------------------- readiness


def get(bot: Bot, path: str) -> tuple[int, str, float]:
    started = time.monotonic()
    resp = httpx.get(bot.url + path, timeout=5)
    return resp.status_code, resp.text, time.monotonic() - started


def readyz_becomes(bot: Bot, status: int, timeout: float) -> tuple[int, str]:
    """Ask /readyz every 0.1 s until it answers ``status``; every answer must be quick,
    and /healthz must say 200 all along."""
    seen = (0, "")
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        code, text, took = get(bot, "/readyz")
        assert took < 1.0, f"/readyz took {took:.2f} s"
        assert "\n" not in text
        seen = (code, text)
        if code == status:
            break
        assert get(bot, "/healthz")[:2] == (200, "ok")
        time.sleep(0.1)
    return seen


def test_readyz_waits_for_slack_to_accept_the_token_and_healthz_does_not(tmp_path: Path) -> None:
    with running_bot(sqlite_url(tmp_path), tmp_path) as bot:
        assert get(bot, "/readyz")[:2] == (200, "ok")
        bot.runtime.ready.clear()
        assert get(bot, "/readyz")[:2] == (
            503, "starting: Slack has not accepted the bot token yet")
        assert get(bot, "/healthz")[:2] == (200, "ok")
        bot.runtime.ready.set()
        assert get(bot, "/readyz")[:2] == (200, "ok")


def test_readyz_follows_an_sqlite_file_that_goes_away_and_comes_back(tmp_path: Path) -> None:
    """The database's folder is moved away (an unmounted volume): /readyz says so within
    a few seconds, /healthz stays 200, and /readyz is 200 again once it is back."""
    with running_bot(sqlite_url(tmp_path), tmp_path) as bot:
        assert readyz_becomes(bot, 200, 3.0) == (200, "ok")
        (tmp_path / "db").rename(tmp_path / "gone")
        try:
            code, text = readyz_becomes(bot, 503, 5.0)
            assert (code, text) == (503, "the database is unreachable (OperationalError)")
        finally:
            (tmp_path / "gone").rename(tmp_path / "db")
        assert readyz_becomes(bot, 200, 5.0) == (200, "ok")


class TcpProxy:
    """A loopback TCP proxy to the database: ``cut()`` closes it and every connection
    through it, ``restore()`` listens again on the same port, ``frozen`` stops it
    forwarding anything (a hung database) while keeping the connections open."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.frozen = threading.Event()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._listening: threading.Event | None = None
        self._closed: threading.Event | None = None  # set once that listener is closed
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listening = on = threading.Event()
        self._closed = closed = threading.Event()
        on.set()
        threading.Thread(target=self._accept, args=(listener, on, closed), daemon=True).start()

    def _accept(self, listener: socket.socket, on: threading.Event,
                closed: threading.Event) -> None:
        try:
            with listener:
                while on.is_set():
                    try:
                        client, _ = listener.accept()
                    except TimeoutError:
                        continue
                    client.settimeout(None)
                    server = socket.create_connection(self.upstream)
                    with self._lock:
                        self._socks += [client, server]
                    for a, b in ((client, server), (server, client)):
                        threading.Thread(target=self._pump, args=(a, b), daemon=True).start()
        finally:
            closed.set()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        try:
            sel.register(src, selectors.EVENT_READ)
            while True:
                if self.frozen.is_set():
                    time.sleep(0.02)
                    continue
                if not sel.select(0.05):
                    continue
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            sel.close()
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        if self._listening is not None:
            self._listening.clear()
        if self._closed is not None:  # the accept loop has seen it and closed the listener
            assert self._closed.wait(5), "the proxy's listener did not close"
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.frozen.clear()
        self.cut()


def test_readyz_follows_a_postgresql_connection_cut_hung_and_restored(
        tmp_path: Path, pg_url: str) -> None:
    target = sa.engine.make_url(pg_url)
    proxy = TcpProxy((target.host or "127.0.0.1", target.port or 5432))
    proxied = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        with running_bot(proxied, tmp_path) as bot:
            assert readyz_becomes(bot, 200, 3.0) == (200, "ok")

            proxy.cut()  # connections dropped, new ones refused
            cut_at = time.monotonic()
            code, text = readyz_becomes(bot, 503, 5.0)
            assert (code, text) == (503, "the database is unreachable (OperationalError)")
            assert time.monotonic() - cut_at < 5.0
            proxy.restore()
            assert readyz_becomes(bot, 200, 5.0) == (200, "ok")

            proxy.frozen.set()  # the database stops answering; connections stay open
            code, text = readyz_becomes(bot, 503, 6.0)
            assert (code, text) == (503, "the database has not answered for 2 s")
            proxy.frozen.clear()
            assert readyz_becomes(bot, 200, 6.0) == (200, "ok")
    finally:
        proxy.close()


class Steps:
    """A seam clock for Readiness (monotonic seconds that move only when told)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_readiness_probes_at_most_every_2_s_and_never_waits_on_a_hung_database() -> None:
    ready = threading.Event()
    ready.set()
    clock = Steps()
    release = threading.Event()
    calls: list[float] = []

    def probe() -> None:
        calls.append(clock.t)
        if len(calls) == 2:  # the second probe hangs until released
            release.wait(10)

    readiness = Readiness(ready, probe, every=2.0, wait=0.05, patience=2.0, clock=clock)
    for _ in range(50):
        assert readiness.problem() is None
    assert len(calls) == 1  # one probe for 50 questions

    clock.t += 2.0
    for _ in range(20):
        started = time.monotonic()
        readiness.problem()
        assert time.monotonic() - started < 0.5  # the hung probe holds no request
    clock.t += 2.5
    assert readiness.problem() == "the database has not answered for 2 s"
    clock.t += 10.0
    assert readiness.problem() == "the database has not answered for 2 s"
    assert len(calls) == 2  # no second probe piles up behind the hung one

    release.set()
    assert wait_until(lambda: readiness._running_since is None, timeout=2.0)
    clock.t += 2.0
    assert wait_until(lambda: readiness.problem() is None, timeout=2.0)


def test_readiness_names_the_error_type_only() -> None:
    ready = threading.Event()
    ready.set()

    def probe() -> None:
        raise sa.exc.OperationalError("SELECT 1", {}, Exception(
            'connection to server at "db.internal" (10.0.0.7), port 5432 failed: '
            "password authentication failed for user ci"))

    problem = Readiness(ready, probe, wait=2.0).problem()
    assert problem == "the database is unreachable (OperationalError)"


# --------------------------------------------------------------------------- replays


def use_clock(bot: Bot, clock: Callable[[], float]) -> None:
    """Move the running app's replay guard onto a clock seam."""
    bot.runtime.replay_guard.clock = clock


def test_a_future_dated_request_replayed_after_300_s_is_refused(tmp_path: Path) -> None:
    """Signed 4 minutes ahead, first seen now, replayed 301 s later (seam time): Bolt
    still accepts its timestamp, so the guard must still remember it."""
    with running_bot(sqlite_url(tmp_path), tmp_path) as bot:
        later = [0.0]
        use_clock(bot, lambda: time.time() + later[0])
        url = bot.slack.response_url()
        body = command_body("backend", user="UALICE", channel="CBUILDS", response_url=url)
        ts = int(time.time()) + 240
        assert bot.sender.post(body, timestamp=ts).status_code == 200
        bot.wait_response(url)  # the Run/Cancel question
        later[0] = 301.0
        replay = bot.sender.post(body, timestamp=ts)
        assert (replay.status_code, replay.content) == (200, b"")
        bot.wait_idle()
        assert len(bot.slack.responses(url)) == 1  # asked once
        assert len(bot.store.audit_rows()) == 1
