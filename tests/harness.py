"""A whole bot on loopback: the real HTTP endpoint, the Slack and CodeArts stand-ins,
and a real database. Tests talk to it the way Slack does, with signed requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bot import messages as msg
from bot.config import load_config
from bot.runtime import Runtime
from bot.settings import load_settings
from bot.slack_budget import DEFAULT_LIMITS
from tests.fakes.codearts import FakeCodeArts
from tests.fakes.slack import FakeSlack
from tests.slack_requests import SlackSender

SECRET = "test-signing-secret-0123456789"
BOT_TOKEN = "xoxb-test-bot-token-secret"
BACKEND_ID = "f9d6c8466d614a9788e9a0acf6c15f46"
DOCS_ID = "0123456789abcdef0123456789abcdef"
OTHER_ID = "aaaabbbbccccddddeeeeffff00001111"

CONFIG = f"""
admins = ["UADMIN"]

[jobs.backend]
id = "{BACKEND_ID}"
description = "Backend CI"
users = ["UALICE"]
usergroups = ["SDEVS"]
channels = ["CBUILDS"]

[jobs.backend.params.codeBranch]
default = "master"
pattern = '^[A-Za-z0-9._/-]+$'

[jobs.backend.params.target]
choices = ["staging", "prod"]
default = "staging"

[jobs.docs]
id = "{DOCS_ID}"
description = "Docs site"
users = ["*"]
confirm = false
allow_extra_params = true
"""


WIDE_LIMITS = ",".join(f"{m}=1000000" for m in DEFAULT_LIMITS)


class Clock:
    """Real time plus an offset the test can move forward: the bot's clock, and the
    CodeArts stand-in's (``monotonic``), so moving it on ends the stand-in's builds too."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        """The same time in ``time.monotonic()``'s units (what the stand-in's builds run on)."""
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Bot:
    runtime: Runtime
    slack: FakeSlack
    codearts: FakeCodeArts
    sender: SlackSender
    clock: Clock
    url: str

    @property
    def store(self) -> Any:
        return self.runtime.store

    def command(self, text: str, *, user: str = "UALICE", channel: str = "CBUILDS",
                **kw: Any) -> tuple[httpx.Response, str]:
        url = self.slack.response_url()
        return self.sender.command(text, user=user, channel=channel, response_url=url, **kw), url

    def click(self, action_id: str, value: str, *, user: str = "UALICE",
              channel: str = "CBUILDS", response_url: str | None = None,
              message_ts: str | None = None, **kw: Any) -> httpx.Response:
        return self.sender.click(action_id, value, user=user, channel=channel,
                                 response_url=response_url or self.slack.response_url(),
                                 message_ts=message_ts, **kw)

    def wait_response(self, url: str, n: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until ``n`` bodies arrived at this response_url; return them all."""
        return self.slack.wait_for(lambda: (r := self.slack.responses(url)) and len(r) >= n and r,
                                   timeout)

    def reply(self, resp: httpx.Response, url: str) -> dict[str, Any]:
        """What the user saw: the ack's body, or the first post to the response_url."""
        assert resp.status_code == 200, resp.text
        return resp.json() if resp.content else self.wait_response(url)[0]

    def confirmation(self, text: str, **kw: Any) -> tuple[str, str]:
        """Type a command and wait for its Run/Cancel question: (request id, response_url)."""
        resp, url = self.command(text, **kw)
        assert resp.status_code == 200, resp.text
        (question,) = self.wait_response(url)
        return run_value(question), url

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until every piece of work queued after an ack has finished."""
        assert self.runtime.flow.wait_idle(timeout), "the bot's worker did not settle"


def database_away_once(monkeypatch: Any, method: str) -> None:
    """The store's ``method`` fails once as a lost database connection would, then works:
    the one place where no seam exists (the database answering some calls, not others)."""
    import sqlalchemy as sa

    from bot.store import Store

    real = getattr(Store, method)
    calls = {"n": 0}

    def away_once(self: Store, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise sa.exc.OperationalError(method, {}, Exception("server closed the connection"))
        return real(self, **kw)

    monkeypatch.setattr(Store, method, away_once)


def run_value(message: dict[str, Any]) -> str:
    for block in message.get("blocks", []):
        if block.get("type") == "actions":
            for element in block["elements"]:
                if element["action_id"] == msg.RUN:
                    return str(element["value"])
    raise AssertionError(f"no Run button in {message}")


def button_value(message: dict[str, Any], action_id: str) -> str:
    for block in message.get("blocks", []):
        if block.get("type") == "actions":
            for element in block["elements"]:
                if element["action_id"] == action_id:
                    return str(element["value"])
    raise AssertionError(f"no {action_id} button in {message}")


AUTH_METHODS = ("token", "iam", "aksk")


def auth_settings(method: str, codearts: FakeCodeArts) -> dict[str, Any]:
    """Settings that make the bot authenticate to the fake with ``method`` (token, iam, aksk)."""
    if method == "token":
        return {"codearts_token": FakeCodeArts.token}
    if method == "iam":
        return {"codearts_token": None, "iam_user": FakeCodeArts.user,
                "iam_password": FakeCodeArts.password, "iam_domain": FakeCodeArts.domain,
                "iam_project": FakeCodeArts.project_name, "iam_endpoint": codearts.url}
    if method == "aksk":
        return {"codearts_token": None, "cloud_sdk_ak": FakeCodeArts.ak,
                "cloud_sdk_sk": FakeCodeArts.sk, "codearts_project_id": FakeCodeArts.project_id}
    raise ValueError(f"unknown auth method {method!r}")


def closed_port_url() -> str:
    """An http URL on a loopback port nothing listens on (connection refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextmanager
def running_bot(db_url: str, tmp_path: Path, *, auth: str = "token",
                     api_options: dict[str, Any] | None = None, config: str = CONFIG,
                     poll: float = 15.0, slack_timeout: int = 10,
                     **settings: Any) -> Iterator[Bot]:
    """Start the stand-ins and the bot's HTTP endpoint; tear everything down after.

    ``auth`` picks how the bot logs in to CodeArts (token, iam, aksk); the client is
    built here with ``api_options`` (e.g. ``timeout=0.5, backoff=0.01``) and handed to
    ``Runtime(api=...)``. ``settings`` override everything, so a test can point
    ``codearts_endpoint`` or ``iam_endpoint`` at ``closed_port_url()``."""
    from bot.runtime import client_from_settings

    cfg = tmp_path / "buildbot.toml"
    cfg.write_text(config)
    clock = Clock()  # one clock: the bot's and the CodeArts stand-in's
    with FakeSlack() as slack, FakeCodeArts(clock=clock.monotonic) as codearts:
        for job in (BACKEND_ID, DOCS_ID):
            codearts.add_job(job)
        slack.usergroups["SDEVS"] = []
        values: dict[str, Any] = {
            "slack_bot_token": BOT_TOKEN, "slack_signing_secret": SECRET,
            "slack_api_url": slack.api_url, "codearts_endpoint": codearts.url,
            "database_url": db_url, "buildbot_config": cfg, "build_poll_seconds": poll,
            "worker_threads": 4,
            # Slack's pacing is real time: these tests are about other things, so their
            # budget is wide; tests/test_slack_budget.py runs the real limits on a clock
            "slack_rate_limits": WIDE_LIMITS}
        values.update(auth_settings(auth, codearts))
        values.update(settings)
        loaded = load_settings(**values)
        # the clients' retry rules, without their waits (time is a seam, not a sleep)
        api = client_from_settings(loaded, **{"backoff": 0.0, **(api_options or {})})
        runtime = Runtime(loaded, load_config(cfg), api=api, clock=clock, watch=False,
                          slack_backoff=0.0, slack_timeout=slack_timeout,
                          slack_budget_wait=0.5)
        port = runtime.bind_http(host="127.0.0.1", port=0)
        closing = threading.Event()

        def serve() -> None:
            try:
                runtime.server.run()
            except OSError:  # close() pulled the socket out from under select()
                if not closing.is_set():
                    raise

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        sender = SlackSender(url + "/slack/events", SECRET)
        try:
            yield Bot(runtime, slack, codearts, sender, clock, url)
        finally:
            sender.close()
            closing.set()
            runtime.close()
