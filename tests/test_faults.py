"""The fault matrix: one test per way a dependency can fail (CodeArts, IAM, Slack, the
database), each asserting what the user sees, what the audit log records, and that no
build was started twice. Everything runs against the loopback stand-ins."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bot import messages as msg
from bot.recovery import INTENT_GRACE, NOT_STARTED_AFTER
from tests.fakes.codearts import FakeCodeArts
from tests.harness import (
    BACKEND_ID,
    BOT_TOKEN,
    SECRET,
    Bot,
    closed_port_url,
    running_bot,
)

RUN_PATH = "/v3/jobs/build"
ERROR_ID = re.compile(r"error ID `([0-9a-f]{8})`")
FAST_RETRIES = {"backoff": 0.01}  # keep the client's retry rules, not its waits


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path) as b:
        yield b


def run_requests(bot: Bot) -> list[Any]:
    return bot.codearts.requests_to(RUN_PATH, "POST")


def click_run(bot: Bot, text: str = "backend") -> tuple[str, str, dict[str, Any]]:
    """Confirm a command and click Run; return (request id, response_url, what replaced it)."""
    rid, url = bot.confirmation(text)
    assert bot.click(msg.RUN, rid, response_url=url).status_code == 200
    reply = bot.wait_response(url, 2, timeout=10)[1]
    bot.wait_idle()
    return rid, url, reply


def decisions(bot: Bot, rid: str) -> list[str]:
    return [r["decision"] for r in bot.store.audit_rows(request_id=rid)]


def assert_late_click_starts_nothing(bot: Bot, rid: str, url: str, words: str) -> None:
    """After a failure, clicking the old Run button again is refused and sends nothing."""
    before = len(run_requests(bot))
    bot.click(msg.RUN, rid, response_url=url)
    late = bot.wait_response(url, 3)[2]
    assert words in late["text"] and "started nothing" in late["text"]
    bot.wait_idle()
    assert len(run_requests(bot)) == before


def no_traceback_in_slack(bot: Bot) -> None:
    assert "Traceback" not in repr(bot.slack.all_calls())


# --- CodeArts answers with an error ---------------------------------------------------

def settle(bot: Bot) -> None:
    """Let the watcher look for a run whose answer was lost in the job's history."""
    bot.clock.advance(NOT_STARTED_AFTER + 1)
    bot.runtime.watcher.housekeeping()
    bot.wait_idle()


@pytest.mark.parametrize("status,code", [(500, "CB.00060101"), (503, "CB.00060100")])
def test_codearts_5xx_on_run_is_checked_in_the_history_and_never_resent(
        bot: Bot, status: int, code: str) -> None:
    bot.codearts.fail_next(status, path_prefix=RUN_PATH)  # the back end did nothing
    rid, url, reply = click_run(bot)
    assert code in reply["text"] and "checking the task's build history" in reply["text"]
    assert f"HTTP {status}" in reply["text"] and reply["replace_original"] is True
    assert len(run_requests(bot)) == 1  # a run is never retried on 5xx
    row = bot.store.audit_rows(request_id=rid)[-1]
    assert (row["decision"], row["error_code"], row["detail"]) == \
        ("answer_lost", code, "ApiError")
    settle(bot)
    told = [r["text"] for r in bot.slack.responses(url)]
    assert any("nothing was started" in t for t in told)
    assert "Run this build?" in told[-1]  # asked again
    assert len(run_requests(bot)) == 1
    assert bot.codearts.builds(BACKEND_ID) == []
    assert bot.slack.calls("chat.postMessage") == []
    assert bot.store.get_request(rid).state == "failed"
    assert decisions(bot, rid)[-2:] == ["answer_lost", "not_started"]
    no_traceback_in_slack(bot)


def test_token_401_is_not_retried_and_the_user_is_told_it_is_the_credentials(bot: Bot) -> None:
    bot.codearts.unauthorized_once(path_prefix=RUN_PATH)
    rid, _url, reply = click_run(bot)
    assert "APIGW.0301" in reply["text"] and "token expires" in reply["text"]
    assert "credentials" in reply["text"] and "operator" in reply["text"]
    assert len(run_requests(bot)) == 1  # a fixed token cannot be renewed: no second try
    assert bot.codearts.builds(BACKEND_ID) == []
    row = bot.store.audit_rows(request_id=rid)[-1]
    assert (row["decision"], row["error_code"]) == ("api_error", "APIGW.0301")


def test_iam_401_logs_in_again_once_and_the_build_starts_once(
        db_url: str, tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path, auth="iam") as bot:
        bot.codearts.unauthorized_once(path_prefix=RUN_PATH)
        rid, _url, reply = click_run(bot)
        assert "Started backend" in reply["text"]
        first, second = run_requests(bot)  # the 401 did nothing; the re-send ran it
        assert first.headers["x-auth-token"] != second.headers["x-auth-token"]
        assert len(bot.codearts.builds(BACKEND_ID)) == 1
        assert bot.codearts.logins == 2
        assert len(bot.slack.calls("chat.postMessage")) == 1
        assert decisions(bot, rid) == ["confirm", "started"]


# --- CodeArts does not answer properly ----------------------------------------------------

def test_run_that_hangs_past_the_timeout_is_reported_as_unknown_and_never_resent(
        db_url: str, tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path, api_options={"timeout": 0.5, **FAST_RETRIES}) as bot:
        bot.codearts.hang(3.0, path_prefix=RUN_PATH)
        rid, url, reply = click_run(bot)
        assert "*may* have started" in reply["text"]
        assert "will not send it again" in reply["text"]
        assert len(run_requests(bot)) == 1
        row = bot.store.audit_rows(request_id=rid)[-1]
        assert (row["decision"], row["detail"]) == ("answer_lost", "OutcomeUnknownError")
        bot.click(msg.RUN, rid, response_url=url)  # a late click sends nothing
        bot.wait_idle()
        assert len(run_requests(bot)) == 1
        settle(bot)  # CodeArts did start it: found in the history, followed
        assert "CodeArts did start it" in bot.slack.responses(url)[-1]["text"]
        assert bot.store.get_request(rid).state == "started"
        assert len(bot.slack.calls("chat.postMessage")) == 1
        bot.clock.advance(3600)  # and nothing is ever sent again
        bot.runtime.watcher.run_once()
        assert len(run_requests(bot)) == 1


def test_non_json_answer_to_run_is_shown_without_the_page_and_not_resent(bot: Bot) -> None:
    bot.codearts.html_next(502, path_prefix=RUN_PATH)
    rid, _url, reply = click_run(bot)
    assert "<html" not in reply["text"].lower() and "Bad Gateway</" not in reply["text"]
    assert len(run_requests(bot)) == 1
    assert bot.store.audit_rows(request_id=rid)[-1]["detail"] == "BadResponseError"
    assert bot.slack.calls("chat.postMessage") == []
    settle(bot)
    assert len(run_requests(bot)) == 1
    no_traceback_in_slack(bot)


@pytest.mark.parametrize("status", [200, 502])
def test_unreadable_answer_to_run_is_not_reported_as_nothing_started(
        bot: Bot, status: int) -> None:
    bot.codearts.html_next(status, path_prefix=RUN_PATH)
    rid, _url, reply = click_run(bot)
    assert len(bot.codearts.builds(BACKEND_ID)) == 1  # the fake did start it
    assert "nothing was started" not in reply["text"].lower()
    assert "*may* have started" in reply["text"]
    assert bot.store.audit_rows(request_id=rid)[-1]["decision"] == "answer_lost"
    settle(bot)  # the history shows the build: adopted, never resent
    assert bot.store.get_request(rid).state == "started"
    assert len(run_requests(bot)) == 1


def test_connection_refused_is_reported_as_not_sent(db_url: str, tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path, api_options=FAST_RETRIES,
                          codearts_endpoint=closed_port_url()) as bot:
        rid, url, reply = click_run(bot)
        assert "Could not reach CodeArts" in reply["text"]
        assert "nothing was started" in reply["text"] and "ConnectError" in reply["text"]
        assert bot.codearts.requests == []  # it never got there
        assert bot.store.get_request(rid).state == "failed"
        row = bot.store.audit_rows(request_id=rid)[-1]
        assert (row["decision"], row["detail"]) == ("api_error", "NotSentError")
        assert_late_click_starts_nothing(bot, rid, url, "already failed")


@pytest.mark.parametrize("how", ["503", "refused"])
def test_iam_down_sends_nothing_to_codearts_and_says_so(
        db_url: str, tmp_path: Path, how: str) -> None:
    extra: dict[str, Any] = {"iam_endpoint": closed_port_url()} if how == "refused" else {}
    with running_bot(db_url, tmp_path, auth="iam", **extra) as bot:
        bot.codearts.iam_down(how == "503")
        rid, _url, reply = click_run(bot)
        # the user sees the IAM hint; the full sentence (with "log in") is in the audit row
        assert "IAM is unreachable or having trouble" in reply["text"]
        assert "nothing was started" in reply["text"]
        assert ("HTTP 503" if how == "503" else "ConnectError") in reply["text"]
        assert run_requests(bot) == []
        assert len(bot.codearts.requests_to("/v3/auth/tokens")) == (1 if how == "503" else 0)
        row = bot.store.audit_rows(request_id=rid)[-1]
        assert (row["decision"], row["detail"]) == ("api_error", "AuthError")
        assert "could not be reached" in row["error_msg"] or "unavailable" in row["error_msg"]
        if how == "503":  # IAM back: the next request logs in and runs, once
            bot.codearts.iam_down(False)
            rid2, _url2, reply2 = click_run(bot)
            assert "Started backend" in reply2["text"]
            assert len(run_requests(bot)) == 1 and decisions(bot, rid2)[-1] == "started"


# --- Slack misbehaves -----------------------------------------------------------------------

@pytest.mark.parametrize("method,status", [
    ("chat.postMessage", 429), ("chat.postMessage", 503),
    ("response_url", 429), ("response_url", 500),
])
def test_one_slack_hiccup_is_retried_and_the_user_sees_everything_once(
        bot: Bot, method: str, status: int) -> None:
    bot.slack.fail(method, status=status, retry_after=0 if status == 429 else None)
    rid, url, reply = click_run(bot)
    assert "Started backend" in reply["text"]
    (post,) = bot.slack.wait_for(lambda: bot.slack.calls("chat.postMessage"))
    assert post["channel"] == "CBUILDS" and "<@UALICE>" in post["text"]
    confirmations = [r for r in bot.slack.responses(url) if "Run this build?" in r["text"]]
    assert len(confirmations) == 1
    assert len(run_requests(bot)) == 1
    assert bot.store.get_build(rid).announce == "posted"
    assert decisions(bot, rid) == ["confirm", "started"]


@pytest.mark.parametrize("status", [502, 504])
def test_a_gateway_error_on_the_response_url_does_not_lose_the_confirmation(
        bot: Bot, status: int) -> None:
    bot.slack.fail("response_url", status=status)
    resp, url = bot.command("backend")
    assert resp.status_code == 200
    bot.wait_idle()
    assert any("Run this build?" in r["text"] for r in bot.slack.responses(url))


def test_channel_post_refused_by_slack_for_good_falls_back_to_the_user_once(bot: Bot) -> None:
    bot.slack.error("chat.postMessage", "channel_not_found")  # a private channel, not invited
    rid, url, _reply = click_run(bot)
    posts = bot.wait_response(url, 3)
    shared = [p for p in posts if p.get("response_type") == "in_channel"]
    assert len(shared) == 1 and "<@UALICE>" in shared[0]["text"]
    assert "Started backend" in posts[-1]["text"]
    assert bot.slack.calls("chat.postMessage") == []
    assert len(run_requests(bot)) == 1
    assert bot.store.get_build(rid).announce == "fallback"
    assert decisions(bot, rid) == ["confirm", "started"]


def test_channel_post_failing_for_a_while_is_posted_later_once(bot: Bot) -> None:
    bot.slack.fail("chat.postMessage", status=502, count=3)  # more than it retries
    rid, url, reply = click_run(bot)
    assert "Started backend" in reply["text"]
    assert bot.slack.calls("chat.postMessage") == []
    assert bot.store.get_build(rid).announce == "posting"  # not given up: passing trouble
    bot.clock.advance(INTENT_GRACE + 1)
    bot.runtime.watcher.housekeeping()  # looks in the channel, finds nothing, posts
    (post,) = bot.slack.calls("chat.postMessage")
    assert post["channel"] == "CBUILDS" and post["metadata"]["event_payload"]["build_id"] == rid
    assert bot.store.get_build(rid).announce == "posted"
    assert [r for r in bot.slack.responses(url) if r.get("response_type") == "in_channel"] == []


def test_undeliverable_confirmation_starts_nothing_and_is_logged(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bot")
    bot.slack.fail("response_url", status=404, body={"error": "expired_url"})
    resp, url = bot.command("backend")
    assert resp.status_code == 200 and resp.text == ""
    bot.wait_idle()
    assert bot.slack.responses(url) == []
    assert "response_url post refused status=404" in caplog.text
    (row,) = bot.store.audit_rows()
    assert row["decision"] == "confirm"
    assert run_requests(bot) == []
    bot.clock.advance(601)  # it expires like any unanswered confirmation
    bot.runtime.watcher.housekeeping()
    assert bot.store.get_request(row["request_id"]).state == "expired"
    assert run_requests(bot) == []


# --- the database ----------------------------------------------------------------------------

def _bot_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    cfg = tmp_path / "buildbot.toml"
    cfg.write_text(f'[jobs.backend]\nid = "{BACKEND_ID}"\nusers = ["*"]\n')
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    return {**keep, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": closed_port_url() + "/api/",
            "PORT": closed_port_url().rsplit(":", 1)[1],
            "CODEARTS_ENDPOINT": closed_port_url(), "CODEARTS_TOKEN": FakeCodeArts.token,
            "BUILDBOT_CONFIG": str(cfg), "DATABASE_URL": database_url}


def _start(tmp_path: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot"], env=_bot_env(tmp_path, database_url),
                          cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True, timeout=60, check=False)


def _assert_one_line_reason(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    reasons = [line for line in proc.stderr.splitlines() if line.startswith("  - ")]
    assert len(reasons) == 1 and "DATABASE_URL" in reasons[0], proc.stderr
    for secret in ("S3cretPw", SECRET, BOT_TOKEN, FakeCodeArts.token):
        assert secret not in out


@pytest.mark.parametrize("url", [
    "postgresql://bob:S3cretPw@127.0.0.1:{closed}/test",  # nothing listens
    "postgresql//bob:S3cretPw@127.0.0.1/test",  # a typo: not a URL
    "sqlite:////nonexistent-dir/buildbot.db",  # a directory that is not there
    "redis://bob:S3cretPw@127.0.0.1/0",  # not a database we speak
])
def test_unreachable_database_at_start_exits_with_one_line_and_no_secret(
        tmp_path: Path, url: str) -> None:
    port = closed_port_url().rsplit(":", 1)[1]
    _assert_one_line_reason(_start(tmp_path, url.format(closed=port)))


@pytest.mark.parametrize("url", ["mysql://bob:S3cretPw@127.0.0.1/db",
                                 "postgresql+asyncpg://bob:S3cretPw@127.0.0.1/db"])
def test_database_url_without_its_driver_exits_with_one_line(tmp_path: Path, url: str) -> None:
    _assert_one_line_reason(_start(tmp_path, url))


def _drop(bot: Bot, *tables: str) -> None:
    with bot.store.engine.begin() as c:
        for table in tables:
            c.execute(sa.text(f"DROP TABLE {table}"))


def _error_id_logged(caplog: pytest.LogCaptureFixture, text: str) -> str:
    found = ERROR_ID.search(text)
    assert found, text
    assert any(found.group(1) in r.getMessage() and r.exc_info for r in caplog.records)
    return found.group(1)


def test_database_lost_before_the_click_gives_an_error_id_and_no_build(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    rid, url = bot.confirmation("backend")
    _drop(bot, "buildbot_requests")
    bot.click(msg.RUN, rid, response_url=url)
    reply = bot.wait_response(url, 2)[1]
    _error_id_logged(caplog, reply["text"])
    assert "Nothing was started" in reply["text"] and "Traceback" not in reply["text"]
    bot.wait_idle()
    assert run_requests(bot) == []
    assert [r["decision"] for r in bot.store.audit_rows()] == ["confirm"]
    assert httpx.get(bot.url + "/healthz").status_code == 200
    no_traceback_in_slack(bot)


def test_database_lost_before_a_command_gives_an_error_id_and_no_build(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    _drop(bot, "buildbot_audit", "buildbot_builds", "buildbot_requests")
    resp, url = bot.command("backend")
    assert resp.status_code == 200  # the ack never waits on the database
    (reply,) = bot.wait_response(url)
    _error_id_logged(caplog, reply["text"])
    bot.wait_idle()
    assert run_requests(bot) == []
    assert bot.click(msg.RUN, "0" * 32, response_url=url).status_code == 200
    assert httpx.get(bot.url + "/healthz").status_code == 200
    no_traceback_in_slack(bot)


def test_postgres_schema_dropped_mid_flow_gives_an_error_id_and_no_build(
        pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    schema = re.search(r"search_path%3D(\w+)", pg_url).group(1)  # type: ignore[union-attr]
    with running_bot(pg_url, tmp_path) as bot:
        rid, url = bot.confirmation("backend")
        with bot.store.engine.begin() as c:
            c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        try:
            bot.click(msg.RUN, rid, response_url=url)
            reply = bot.wait_response(url, 2)[1]
            _error_id_logged(caplog, reply["text"])
            bot.wait_idle()
            assert run_requests(bot) == []
            assert httpx.get(bot.url + "/healthz").status_code == 200
        finally:  # the fixture drops the schema again on its way out
            with bot.store.engine.begin() as c:
                c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))


def test_database_lost_after_the_api_call_does_not_claim_nothing_started(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    rid, url = bot.confirmation("backend")
    _drop(bot, "buildbot_builds")
    bot.click(msg.RUN, rid, response_url=url)
    reply = bot.wait_response(url, 2)[1]
    bot.wait_idle()
    (build,) = bot.codearts.builds(BACKEND_ID)  # CodeArts did start it, once
    assert len(run_requests(bot)) == 1
    _error_id_logged(caplog, reply["text"])
    assert "nothing was started" not in reply["text"].lower()
    assert build.daily in reply["text"] and build.daily in caplog.text
