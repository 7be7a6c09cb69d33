"""The HTTP server's limits, through the running bot on loopback.

- A connection must deliver a whole request within ``HTTP_REQUEST_TIMEOUT``, however
  it dribbles; at ``HTTP_MAX_CONNECTIONS`` the slowest make room, so Slack is answered.
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
        time.sleep(0.2)  # all 250 are connected (100 accepted, the rest queued) and sending
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
