"""Security: who may do what, what a refusal says, and that no secret leaks anywhere.

Every test captures the logs at DEBUG for every logger (the bot's and httpx, httpcore,
slack_sdk, slack_bolt, urllib3, waitress) and, at the end, searches them, the
database (audit log included), everything posted to the fake Slack and every answer
the endpoint gave for each secret in play: the signing secret, the bot token, the
CodeArts token, the IAM password and every token IAM issued, the AK/SK secret.
Several cases overlap test_slack_flow.py; here the point is the search and the
text the user sees.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bot import messages as msg
from bot.rules import RESERVED_NAMES
from bot.runtime import client_from_settings
from bot.settings import load_settings
from tests.fakes.codearts import FakeCodeArts
from tests.harness import (
    AUTH_METHODS,
    BACKEND_ID,
    BOT_TOKEN,
    DOCS_ID,
    SECRET,
    Bot,
    auth_settings,
    running_bot,
)
from tests.slack_requests import action_body, command_body

RUN_PATH = "/v3/jobs/build"
LOGGERS = ("bot", "httpx", "httpcore", "slack_sdk", "slack_bolt", "urllib3", "waitress")
STATIC_SECRETS = (SECRET, BOT_TOKEN, FakeCodeArts.token, FakeCodeArts.password,
                  FakeCodeArts.sk)


class Watch:
    """The bot plus everything it said: the answers it gave and the captured logs."""

    def __init__(self, bot: Bot, caplog: pytest.LogCaptureFixture, auth: str) -> None:
        self.bot = bot
        self.caplog = caplog
        self.auth = auth
        self.answers: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bot, name)

    def command(self, text: str, **kw: Any) -> tuple[httpx.Response, str]:
        resp, url = self.bot.command(text, **kw)
        self.answers.append(resp.text)
        return resp, url

    def click(self, *args: Any, **kw: Any) -> httpx.Response:
        resp = self.bot.click(*args, **kw)
        self.answers.append(resp.text)
        return resp

    def post(self, body: bytes, **kw: Any) -> httpx.Response:
        resp = self.bot.sender.post(body, **kw)
        self.answers.append(resp.text)
        return resp

    def said(self, resp: httpx.Response, url: str) -> str:
        """What the user saw first: the ack's text, or the first post to the response_url."""
        return str(self.bot.reply(resp, url)["text"])

    # --- the search ------------------------------------------------------------------

    def issued_tokens(self) -> set[str]:
        """Tokens IAM issued at run time (the fake's static token aside)."""
        seen = {r.headers.get("x-auth-token") for r in self.bot.codearts.requests}
        return {t for t in seen if t and t != FakeCodeArts.token}

    def secrets(self) -> list[str]:
        return [*STATIC_SECRETS, *self.issued_tokens()]

    def database_dump(self) -> str:
        with self.bot.store.engine.connect() as c:
            rows = [dict(r) for t in ("buildbot_requests", "buildbot_builds", "buildbot_audit")
                    for r in c.execute(sa.text(f"SELECT * FROM {t}")).mappings()]
        return json.dumps(rows, default=str)

    def log_dump(self) -> str:
        records = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}"
                            for r in self.caplog.records)
        return self.caplog.text + "\n" + records

    def assert_no_secret_anywhere(self) -> None:
        assert self.bot.runtime.flow.wait_idle(10)
        places = {
            "logs": self.log_dump(),
            "database": self.database_dump(),
            "Slack": repr([c.params for c in self.bot.slack.all_calls()]),
            "answers": "\n".join(self.answers),
            "repr": repr(self.bot.runtime.api) + repr(self.bot.runtime.settings),
        }
        for secret in self.secrets():
            for place, text in places.items():
                assert secret not in text, f"a secret ({secret[:4]}...) is in the {place}"
        # The bot token goes to the Web API only; the signing secret and the bot token
        # never go to CodeArts or IAM.
        for call in self.bot.slack.all_calls():
            if call.method == "response_url":
                assert BOT_TOKEN not in repr(call.headers)
        for req in self.bot.codearts.requests:
            sent = repr(req.headers) + req.raw.decode("utf-8", "replace")
            assert SECRET not in sent and BOT_TOKEN not in sent


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


@pytest.fixture
def watch(db_url: str, tmp_path: Path, logs: pytest.LogCaptureFixture) -> Iterator[Watch]:
    """A bot with a fixed CodeArts token; the search runs after the test."""
    with running_bot(db_url, tmp_path) as bot:
        w = Watch(bot, logs, "token")
        yield w
        w.assert_no_secret_anywhere()


def runs(w: Watch | Bot) -> list[Any]:
    return w.codearts.requests_to(RUN_PATH, "POST")


def nothing_happened(w: Watch, audit_rows_before: int = 0) -> None:
    w.wait_idle()
    assert runs(w) == [] and w.slack.calls("chat.postMessage") == []
    assert len(w.store.audit_rows()) == audit_rows_before


# --- requests that are not Slack's ------------------------------------------------------

@pytest.mark.parametrize("how", ["forged", "stale", "future", "unsigned"])
def test_requests_not_signed_by_slack_are_refused_and_reach_nobody(
        watch: Watch, how: str) -> None:
    rid, url = watch.confirmation("backend")
    body = action_body(msg.RUN, rid, user="UALICE", channel="CBUILDS", response_url=url)
    if how == "forged":
        resp = watch.post(body, secret="not-the-signing-secret")
    elif how in ("stale", "future"):
        resp = watch.post(body, timestamp=int(time.time()) + (-301 if how == "stale" else 301))
    else:
        resp = watch.sender.http.post(watch.sender.url, content=body,
                                      headers={"Content-Type": "application/x-www-form-urlencoded"})
        watch.answers.append(resp.text)
    assert resp.status_code == 401
    assert len(watch.slack.responses(url)) == 1  # the question; no answer to the forgery
    nothing_happened(watch, audit_rows_before=1)
    assert watch.store.get_request(rid).state == "pending"


@pytest.mark.parametrize("body", [b"\xff\xfe", b"payload=%7Bnot+json", b"payload=%5B1%5D"])
def test_unsigned_garbage_is_refused_with_401_and_no_traceback_in_the_log(
        watch: Watch, body: bytes) -> None:
    resp = watch.sender.http.post(watch.sender.url, content=body,
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 401
    assert not [r for r in watch.caplog.records if r.exc_info]


def test_a_forged_body_that_is_not_utf8_is_refused_with_401(watch: Watch) -> None:
    resp = watch.post(b"\xff\xfepayload=x", secret="not-the-signing-secret")
    assert resp.status_code == 401
    assert not [r for r in watch.caplog.records if r.exc_info]


def test_replayed_requests_start_nothing_more_and_expire_with_the_window(watch: Watch) -> None:
    url = watch.slack.response_url()
    command = command_body("backend", user="UALICE", channel="CBUILDS", response_url=url)
    ts = int(time.time())
    for _ in range(3):
        assert watch.post(command, timestamp=ts).status_code == 200
    watch.wait_idle()
    (question,) = watch.slack.responses(url)  # one confirmation for three copies
    rid = next(e["value"] for b in question["blocks"] if b["type"] == "actions"
               for e in b["elements"] if e["action_id"] == msg.RUN)
    click = action_body(msg.RUN, rid, user="UALICE", channel="CBUILDS", response_url=url)
    for _ in range(3):
        assert watch.post(click, timestamp=ts).status_code == 200
    watch.wait_idle()
    assert len(runs(watch)) == 1
    assert watch.post(click, timestamp=ts - 301).status_code == 401  # outside the window
    watch.wait_idle()
    assert len(runs(watch)) == 1 and len(watch.slack.calls("chat.postMessage")) == 1


# --- who may click --------------------------------------------------------------------------

@pytest.mark.parametrize("action", [msg.RUN, msg.CANCEL])
def test_a_click_by_someone_other_than_the_requester_is_refused(
        watch: Watch, action: str) -> None:
    rid, _url = watch.confirmation("backend codeBranch=secret-branch target=prod")
    other = watch.slack.response_url()
    assert watch.click(action, rid, user="UMALLORY", response_url=other).status_code == 200
    (reply,) = watch.wait_response(other)
    assert reply["text"].startswith("Only <@UALICE> can answer this confirmation")
    assert reply["replace_original"] is False  # the requester's question stays as it was
    assert "secret-branch" not in reply["text"] and "prod" not in reply["text"]
    nothing_happened(watch, audit_rows_before=2)
    refused = watch.store.audit_rows()[-1]
    assert (refused["decision"], refused["user_id"]) == ("refused_click", "UMALLORY")
    assert watch.store.get_request(rid).state == "pending"


def test_a_stop_click_by_someone_who_may_not_run_the_job_is_refused(watch: Watch) -> None:
    rid, url = watch.confirmation("backend")
    watch.click(msg.RUN, rid, response_url=url)
    (_post,) = watch.slack.wait_for(lambda: watch.slack.calls("chat.postMessage"))
    watch.wait_idle()
    other = watch.slack.response_url()
    watch.click(msg.STOP, rid, user="UMALLORY", response_url=other, message_ts="1.1")
    (reply,) = watch.wait_response(other)
    assert "stop" in reply["text"].lower() and "may not run `backend`" in reply["text"]
    watch.wait_idle()
    assert watch.codearts.requests_to(f"/v3/jobs/{BACKEND_ID}/1/stop") == []


# --- who may run what ------------------------------------------------------------------------

def test_a_user_outside_the_usergroup_is_refused(watch: Watch) -> None:
    watch.slack.usergroups["SDEVS"] = ["UCAROL"]
    said = watch.said(*watch.command("backend", user="UBOB"))
    assert "You may not run `backend`" in said and "Nothing was started" in said
    watch.wait_idle()
    (row,) = watch.store.audit_rows()
    assert (row["decision"], row["user_id"], row["job"]) == ("denied", "UBOB", "backend")
    assert runs(watch) == []


def test_usergroup_membership_that_cannot_be_checked_is_a_refusal(watch: Watch) -> None:
    watch.slack.error("usergroups.users.list", "missing_scope", count=5)
    said = watch.said(*watch.command("backend", user="UBOB"))
    assert "could not" in said.lower() and "Nothing was started" in said
    watch.wait_idle()
    assert watch.store.audit_rows()[-1]["decision"] == "denied"
    assert runs(watch) == []


@pytest.mark.parametrize("user", ["UALICE", "UADMIN"])
def test_a_job_is_refused_in_a_channel_it_is_not_allowed_in(watch: Watch, user: str) -> None:
    said = watch.said(*watch.command("backend", user=user, channel="CRANDOM"))
    assert "channel" in said and "Nothing was started" in said
    watch.wait_idle()
    row = watch.store.audit_rows()[-1]
    assert (row["decision"], row["channel_id"]) == ("denied", "CRANDOM")
    assert runs(watch) == []


def _casings(name: str) -> set[str]:
    alternating = "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(name))
    return {name, name.lower(), name.upper(), name.title(), name.swapcase(), alternating,
            alternating.swapcase(), name[0].lower() + name[1:].upper()}


RESERVED_VARIANTS = sorted({v for n in RESERVED_NAMES for v in _casings(n)})


def test_reserved_parameter_names_are_refused_in_any_letter_case(watch: Watch) -> None:
    # docs takes any extra parameter; an admin's raw ID has no declared ones either
    for who, job in (("UANYONE", "docs"), ("UADMIN", DOCS_ID)):
        for name in RESERVED_VARIANTS:
            said = watch.said(*watch.command(f"{job} {name}=/tmp/x", user=who, channel="CRANDOM"))
            assert name in said and "Nothing was started" in said, (who, name, said)
    watch.wait_idle()
    assert runs(watch) == []
    rows = watch.store.audit_rows()
    assert len(rows) == 2 * len(RESERVED_VARIANTS)
    assert {r["decision"] for r in rows} <= {"invalid", "denied"}


def test_look_alike_reserved_names_are_refused_too(watch: Watch) -> None:
    for name in ("BA\u017fH_ENV", "PAT\u0397", "LD_PRELOAD\u200b", "\uff30\uff21\uff34\uff28"):
        said = watch.said(*watch.command(f"docs {name}=x", user="UANYONE", channel="CRANDOM"))
        assert "Nothing was started" in said, name
    watch.wait_idle()
    assert runs(watch) == []


@pytest.mark.parametrize("job_id", [BACKEND_ID, BACKEND_ID.upper(), "0" * 32])
def test_a_raw_job_id_from_a_non_admin_is_refused(watch: Watch, job_id: str) -> None:
    said = watch.said(*watch.command(job_id, user="UALICE"))
    assert "Only admins may run a build task by its raw ID" in said
    assert "Nothing was started" in said
    watch.wait_idle()
    row = watch.store.audit_rows()[-1]
    assert (row["decision"], row["user_id"]) == ("denied", "UALICE")
    assert runs(watch) == []
    # an admin may, after confirming
    rid, url = watch.confirmation(BACKEND_ID, user="UADMIN")
    watch.click(msg.RUN, rid, user="UADMIN", response_url=url)
    watch.slack.wait_for(lambda: runs(watch))
    assert runs(watch)[0].body["job_id"] == BACKEND_ID


# --- what the user sees never carries a secret --------------------------------------------------

def test_mentions_in_values_are_shown_never_sent_as_mentions(watch: Watch) -> None:
    rid, url = watch.confirmation(f"{BACKEND_ID} note=<!channel> who=<@UALICE>", user="UADMIN")
    watch.click(msg.RUN, rid, user="UADMIN", response_url=url)
    (post,) = watch.slack.wait_for(lambda: watch.slack.calls("chat.postMessage"))
    said = watch.said(*watch.command("backend codeBranch=<!here>"))  # refused, value echoed
    shown = json.dumps([*watch.slack.responses(url), post]) + said
    for mention in ("<!channel>", "<!here>", "<@UALICE>"):
        assert mention not in shown
    # Slack's markup is undone before anything is sent: the build gets the plain text
    assert runs(watch)[0].body["parameter"] == [{"name": "note", "value": "@channel"},
                                                {"name": "who", "value": "@UALICE"}]


@pytest.mark.parametrize("auth", AUTH_METHODS)
def test_a_busy_day_leaks_no_secret_with_any_auth_method(
        db_url: str, tmp_path: Path, logs: pytest.LogCaptureFixture, auth: str) -> None:
    """Builds, a result in the thread, Stop, a refused token, an API error, a lost answer,
    refusals and a forgery, with each way of authenticating to CodeArts."""
    with running_bot(db_url, tmp_path, auth=auth, poll=0.05) as bot:
        w = Watch(bot, logs, auth)
        rid, url = w.confirmation("backend codeBranch=develop commit=abc1234")
        w.click(msg.RUN, rid, response_url=url)
        bot.slack.wait_for(lambda: bot.slack.calls("chat.postMessage"))
        w.wait_idle()
        bot.clock.advance(60)  # the stand-in's build ends, and it is due for a poll
        bot.runtime.watcher.run_once()
        bot.slack.wait_for(lambda: len(bot.slack.calls("chat.postMessage")) >= 2)
        assert "succeeded" in bot.slack.calls("chat.postMessage")[-1]["text"]
        if auth != "aksk":  # a refused token (IAM logs in again; a fixed token cannot)
            bot.codearts.unauthorized_once(path_prefix=RUN_PATH)
            w.said(*w.command("docs lang=en", user="UANYONE", channel="CRANDOM"))
        bot.codearts.fail_next(400, {"error_code": "CB.00060200", "error_msg": "bad input"},
                               path_prefix=RUN_PATH)
        w.command("docs lang=de", user="UANYONE", channel="CRANDOM")
        bot.codearts.drop_next(path_prefix=RUN_PATH)
        w.command("docs lang=fr", user="UANYONE", channel="CRANDOM")
        w.command("backend PATH=/x")
        w.command(BACKEND_ID, user="UMALLORY")
        w.post(command_body("docs", user="UANYONE", channel="CRANDOM", response_url=url),
               secret="forged")
        w.wait_idle()
        if auth == "iam":  # the search must have seen IAM tokens go by, and their headers
            assert w.issued_tokens(), "IAM issued no token: the search would prove little"
            assert "x-subject-token" in w.log_dump().lower()
        w.assert_no_secret_anywhere()


def test_a_wrong_iam_password_is_reported_without_the_password(
        db_url: str, tmp_path: Path, logs: pytest.LogCaptureFixture) -> None:
    with running_bot(db_url, tmp_path, auth="iam") as bot:
        w = Watch(bot, logs, "iam")
        # IAM quoting the password back in its error must not carry it any further
        bot.codearts.fail_next(401, {"error": {"code": 401, "title": "Unauthorized",
                                               "message": f"password {FakeCodeArts.password} "
                                                          "is wrong"}},
                               path_prefix="/v3/auth/tokens")
        _resp, url = w.command("docs", user="UANYONE", channel="CRANDOM")
        said = bot.wait_response(url)[0]["text"]
        assert "IAM" in said and "operator" in said and "nothing was started" in said
        assert runs(bot) == []
        w.assert_no_secret_anywhere()


def test_a_codearts_error_that_quotes_the_token_does_not_carry_it_further(
        db_url: str, tmp_path: Path, logs: pytest.LogCaptureFixture) -> None:
    with running_bot(db_url, tmp_path) as bot:
        w = Watch(bot, logs, "token")
        bot.codearts.fail_next(401, {"error_code": "APIGW.0301",
                                     "error_msg": f"token {FakeCodeArts.token} is invalid"},
                               path_prefix=RUN_PATH)
        _resp, url = w.command("docs", user="UANYONE", channel="CRANDOM")
        bot.wait_response(url)
        w.assert_no_secret_anywhere()


@pytest.mark.parametrize("auth", AUTH_METHODS)
def test_settings_and_clients_never_show_a_secret_in_repr(tmp_path: Path, auth: str) -> None:
    with FakeCodeArts() as codearts:  # only for its URL: nothing is called
        values = {"slack_bot_token": BOT_TOKEN, "slack_signing_secret": SECRET,
                  "codearts_endpoint": codearts.url, "buildbot_config": tmp_path / "b.toml",
                  **auth_settings(auth, codearts)}
        settings = load_settings(**values)
        with client_from_settings(settings) as client:
            shown = " ".join([repr(settings), str(settings), repr(settings.model_dump()),
                              repr(client), str(client), repr(client._auth)])
    for secret in STATIC_SECRETS:
        assert secret not in shown, (auth, secret[:4])
