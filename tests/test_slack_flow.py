"""End to end: signed requests into the real HTTP endpoint, the Slack and CodeArts
stand-ins on loopback, and a real database (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot import messages as msg
from tests.harness import BACKEND_ID, DOCS_ID, SECRET, Bot, button_value, running_bot


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path) as b:
        yield b


def run_requests(bot: Bot) -> list:
    return bot.codearts.requests_to("/v3/jobs/build", "POST")


def started(bot: Bot, text: str = "backend codeBranch=develop commit=abc1234",
            user: str = "UALICE") -> dict:
    """Type, confirm, click Run; return the channel message that announced the build."""
    rid, url = bot.confirmation(text, user=user)
    assert bot.click(msg.RUN, rid, user=user, response_url=url).status_code == 200
    (post,) = bot.slack.wait_for(lambda: bot.slack.calls("chat.postMessage"))
    return post


# --- the happy path -------------------------------------------------------------

def test_health_check_answers_once_ready(bot: Bot) -> None:
    resp = httpx.get(bot.url + "/healthz")
    assert (resp.status_code, resp.text) == (200, "ok")


def test_command_confirm_run_posts_build_in_channel(bot: Bot) -> None:
    rid, url = bot.confirmation("backend codeBranch=develop commit=abc1234")
    assert bot.codearts.requests_to("/v3/jobs/build") == []  # nothing sent before Run
    bot.click(msg.RUN, rid, response_url=url)
    (post,) = bot.slack.wait_for(lambda: bot.slack.calls("chat.postMessage"))
    (sent,) = run_requests(bot)
    assert sent.body == {"job_id": BACKEND_ID,
                         "parameter": [{"name": "codeBranch", "value": "develop"},
                                       {"name": "target", "value": "staging"}],
                         "scm": {"build_commit_id": "abc1234"}}
    daily = bot.codearts.builds(BACKEND_ID)[0].daily
    assert post["channel"] == "CBUILDS"
    assert "<@UALICE>" in post["text"] and daily in post["text"] and "(#1)" in post["text"]
    replaced = bot.wait_response(url, 2)[1]
    assert replaced["replace_original"] is True and daily in replaced["text"]
    bot.wait_idle()
    build = bot.store.get_build(rid)
    assert build.message_ts and build.daily_build_number == daily
    decisions = [r["decision"] for r in bot.store.audit_rows(request_id=rid)]
    assert decisions == ["confirm", "started"]


def test_job_without_confirmation_starts_at_once(bot: Bot) -> None:
    resp, _url = bot.command("docs lang=en", user="UANYONE", channel="CRANDOM")
    assert resp.status_code == 200
    (post,) = bot.slack.wait_for(lambda: bot.slack.calls("chat.postMessage"))
    assert post["channel"] == "CRANDOM"
    (sent,) = run_requests(bot)
    assert sent.body == {"job_id": DOCS_ID, "parameter": [{"name": "lang", "value": "en"}]}


def test_usergroup_member_may_run(bot: Bot) -> None:
    bot.slack.usergroups["SDEVS"] = ["UBOB"]
    post = started(bot, "backend", user="UBOB")
    assert "<@UBOB>" in post["text"]


def test_slack_escaping_is_undone_before_checks(bot: Bot) -> None:
    _resp, _url = bot.command("docs note=&lt;b&gt;&amp; site=<https://x.io/a> "
                            "msg=\u201ctwo words\u201d")
    bot.slack.wait_for(lambda: run_requests(bot))
    params = {p["name"]: p["value"] for p in run_requests(bot)[0].body["parameter"]}
    assert params == {"note": "<b>&", "site": "https://x.io/a", "msg": "two words"}


# --- refusals, each said to the user alone ----------------------------------------

@pytest.mark.parametrize("text,user,channel,words", [
    ("backend", "UMALLORY", "CBUILDS", "may not run"),
    ("backend", "UALICE", "CRANDOM", "channel"),
    ("backend target=qa", "UALICE", "CBUILDS", "staging"),
    ("backend codeBranch=a;b", "UALICE", "CBUILDS", "pattern"),
    ("backend PATH=/tmp", "UALICE", "CBUILDS", "PATH"),
    ("backend Ld_Preload=x", "UALICE", "CBUILDS", "Ld_Preload"),
    ("backend master", "UALICE", "CBUILDS", "name=value"),
    ("backend msg=\"open", "UALICE", "CBUILDS", "quote"),
    ("nosuchjob", "UALICE", "CBUILDS", "/build list"),
    (BACKEND_ID, "UALICE", "CBUILDS", "admin"),
])
def test_bad_requests_are_refused_in_the_ack_and_nothing_is_sent(
        bot: Bot, text: str, user: str, channel: str, words: str) -> None:
    resp, url = bot.command(text, user=user, channel=channel)
    body = bot.reply(resp, url)
    assert body["response_type"] == "ephemeral"
    assert "Nothing was started" in body["text"] and words.lower() in body["text"].lower()
    bot.wait_idle()
    assert run_requests(bot) == [] and bot.slack.calls("chat.postMessage") == []
    assert bot.store.audit_rows()[-1]["decision"] in ("denied", "invalid")


def test_unknown_usergroup_membership_is_looked_up_after_the_ack(bot: Bot) -> None:
    bot.slack.usergroups["SDEVS"] = ["UBOB"]
    resp, url = bot.command("backend", user="UBOB")
    assert resp.status_code == 200 and resp.text == ""  # acked before the lookup
    (question,) = bot.wait_response(url)
    assert button_value(question, msg.RUN)


@pytest.mark.parametrize("text", ["help", "list", "HELP 1"])  # /build alone: tests/test_form.py
def test_help_lists_only_jobs_this_user_may_run_here(bot: Bot, text: str) -> None:
    body = bot.reply(*bot.command(text, user="UNOBODY", channel="CRANDOM"))
    assert "`docs`" in body["text"] and "`backend`" not in body["text"]
    body = bot.reply(*bot.command(text, user="UALICE", channel="CBUILDS"))
    assert "`backend`" in body["text"]


# --- clicks ---------------------------------------------------------------------

def test_double_click_starts_exactly_one_build(bot: Bot) -> None:
    rid, url = bot.confirmation("backend")
    for _ in range(5):
        bot.click(msg.RUN, rid, response_url=url)
    bot.wait_idle()
    assert len(run_requests(bot)) == 1
    assert len(bot.slack.calls("chat.postMessage")) == 1


def test_concurrent_clicks_from_two_places_start_one_build(bot: Bot) -> None:
    import concurrent.futures

    rid, url = bot.confirmation("backend")
    bot.codearts.hang(0.3, path_prefix="/v3/jobs/build")  # the first click is still working
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: bot.click(msg.RUN, rid, response_url=url), range(8)))
    bot.wait_idle()
    assert len(run_requests(bot)) == 1


def test_only_the_requester_click_counts(bot: Bot) -> None:
    rid, url = bot.confirmation("backend")
    other = bot.slack.response_url()
    bot.click(msg.RUN, rid, user="UMALLORY", response_url=other)
    (reply,) = bot.wait_response(other)
    assert "Only <@UALICE>" in reply["text"] and reply["replace_original"] is False
    bot.wait_idle()
    assert run_requests(bot) == []
    bot.click(msg.RUN, rid, response_url=url)  # the requester still can
    bot.slack.wait_for(lambda: run_requests(bot))


def test_cancel_kills_the_run_button(bot: Bot) -> None:
    rid, url = bot.confirmation("backend")
    bot.click(msg.CANCEL, rid, response_url=url)
    replaced = bot.wait_response(url, 2)[1]
    assert "Cancelled" in replaced["text"] and replaced["replace_original"] is True
    bot.click(msg.RUN, rid, response_url=url)
    late = bot.wait_response(url, 3)[2]
    assert "cancelled" in late["text"] and "started nothing" in late["text"]
    bot.wait_idle()
    assert run_requests(bot) == []


def test_confirmation_expires_after_ten_minutes(bot: Bot) -> None:
    rid, url = bot.confirmation("backend")
    bot.clock.advance(601)
    bot.click(msg.RUN, rid, response_url=url)
    expired = bot.wait_response(url, 2)[1]
    assert "expired after 10 minutes" in expired["text"] and "/build backend" in expired["text"]
    bot.wait_idle()
    assert run_requests(bot) == []
    assert bot.store.get_request(rid).state == "expired"


def test_expired_confirmation_is_replaced_without_a_click(bot: Bot) -> None:
    _rid, url = bot.confirmation("backend")
    bot.clock.advance(601)
    bot.runtime.watcher.housekeeping()
    assert "expired" in bot.wait_response(url, 2)[1]["text"]


# --- what CodeArts says ------------------------------------------------------------

@pytest.mark.parametrize("status,code,hint", [
    (400, "CB.00060200", "input"), (401, "APIGW.0301", "credentials"),
    (403, "FAKE.0403", "permission"), (404, "DEVCB.00031006", "task"),
])
def test_api_errors_reach_the_user_with_code_message_and_hint(
        bot: Bot, status: int, code: str, hint: str) -> None:
    body = {"error_code": code, "error_msg": f"message for {status}"}
    bot.codearts.fail_next(status, body, path_prefix="/v3/jobs/build",
                           count=3 if status == 401 else 1)
    rid, url = bot.confirmation("backend")
    bot.click(msg.RUN, rid, response_url=url)
    reply = bot.wait_response(url, 2)[1]
    assert code in reply["text"] and f"message for {status}" in reply["text"]
    assert hint in reply["text"].lower()
    bot.wait_idle()
    assert bot.slack.calls("chat.postMessage") == []
    row = bot.store.audit_rows(request_id=rid)[-1]
    assert (row["decision"], row["error_code"]) == ("api_error", code)


def test_a_5xx_with_codearts_words_is_shown_and_checked_in_the_history(bot: Bot) -> None:
    bot.codearts.fail_next(500, {"error_code": "CB.00060101", "error_msg": "message for 500"},
                           path_prefix="/v3/jobs/build")
    rid, url = bot.confirmation("backend")
    bot.click(msg.RUN, rid, response_url=url)
    reply = bot.wait_response(url, 2)[1]
    assert "CB.00060101" in reply["text"] and "message for 500" in reply["text"]
    assert "checking the task's build history" in reply["text"]
    bot.wait_idle()
    assert bot.slack.calls("chat.postMessage") == []


def test_unknown_outcome_is_never_sent_again(bot: Bot) -> None:
    bot.codearts.drop_next(path_prefix="/v3/jobs/build")
    rid, url = bot.confirmation("backend")
    bot.click(msg.RUN, rid, response_url=url)
    reply = bot.wait_response(url, 2)[1]
    assert "*may* have started" in reply["text"]
    bot.click(msg.RUN, rid, response_url=url)
    bot.wait_idle()
    assert len(run_requests(bot)) == 1
    assert bot.store.get_request(rid).state == "running"  # sending, until the history says


# --- the request ID of CodeArts' answer, in what the user reads -------------------

RUN_PATH = "/v3/jobs/build"


def click_run(bot: Bot, text: str = "backend") -> tuple[str, str, dict]:
    """Confirm and click Run; (request id, response_url, what replaced the question)."""
    rid, url = bot.confirmation(text)
    assert bot.click(msg.RUN, rid, response_url=url).status_code == 200
    reply = bot.wait_response(url, 2)[1]
    bot.wait_idle()
    return rid, url, reply


def settle(bot: Bot) -> None:
    """Let the watcher look for the run in the job's history, long enough to say "no"."""
    from bot.recovery import NOT_STARTED_AFTER

    bot.clock.advance(NOT_STARTED_AFTER + 1)
    bot.runtime.watcher.housekeeping()
    bot.wait_idle()


def test_a_5xx_on_run_says_may_have_started_with_its_request_id(bot: Bot) -> None:
    bot.codearts.fail_next(503, path_prefix=RUN_PATH, headers={"X-Request-Id": "rid-503-run"})
    rid, url, reply = click_run(bot)
    assert "*may* have started" in reply["text"] and "HTTP 503" in reply["text"]
    assert reply["text"].endswith("\nRequest ID `rid-503-run`")
    assert len(run_requests(bot)) == 1
    # the history shows nothing started: that word carries the 5xx's request ID too
    settle(bot)
    told = [r["text"] for r in bot.slack.responses(url)]
    (not_started,) = [t for t in told if "nothing was started" in t]
    assert not_started.endswith("\nRequest ID `rid-503-run`")
    assert "Run this build?" in told[-1] and "request ID" not in told[-1].lower()
    assert bot.store.get_request(rid).state == "failed"
    assert len(run_requests(bot)) == 1


def test_an_unreadable_5xx_page_on_run_says_may_have_started_with_its_request_id(
        bot: Bot) -> None:
    bot.codearts.html_next(502, path_prefix=RUN_PATH, headers={"X-Request-Id": "gw-502"})
    rid, url, reply = click_run(bot)
    assert "could not read" in reply["text"] and "*may* have started" in reply["text"]
    assert reply["text"].endswith("\nRequest ID `gw-502`") and "<html" not in reply["text"]
    settle(bot)  # the page hid a build that did start: found, followed, no error
    assert "CodeArts did start it" in bot.slack.responses(url)[-1]["text"]
    assert bot.store.get_request(rid).state == "started"


def test_a_run_answer_without_a_build_number_gives_its_request_id(bot: Bot) -> None:
    bot.codearts.fail_next(200, {"octopus_job_name": "x"}, path_prefix=RUN_PATH,
                           headers={"X-Request-Id": "rid-no-number"})
    _rid, _url, reply = click_run(bot)
    assert "*may* have started" in reply["text"]
    assert reply["text"].endswith("\nRequest ID `rid-no-number`")


@pytest.mark.parametrize("how", ["drop", "hang"])
def test_no_answer_to_run_says_nothing_of_a_request_id(db_url: str, tmp_path: Path,
                                                       how: str) -> None:
    with running_bot(db_url, tmp_path, api_options={"timeout": 0.3}) as bot:
        if how == "drop":
            bot.codearts.drop_next(path_prefix=RUN_PATH)  # connection closed, no answer
        else:
            bot.codearts.hang(2.0, path_prefix=RUN_PATH)  # past the client's read timeout
        _rid, _url, reply = click_run(bot)
        assert "did not answer in time" in reply["text"]
        assert "*may* have started" in reply["text"]
        assert "request id" not in reply["text"].lower()


def test_an_unreadable_log_under_a_failed_build_gives_the_log_answer_request_id(
        bot: Bot) -> None:
    bot.codearts.add_job(BACKEND_ID, outcome="FAILURE", duration=0)
    rid, url = bot.confirmation("backend")
    bot.click(msg.RUN, rid, response_url=url)
    bot.wait_response(url, 2)
    bot.wait_idle()
    bot.codearts.fail_next(503, count=5, path_prefix=f"/v3/jobs/{BACKEND_ID}/1/real-time-log",
                           headers={"X-Request-Id": "log-rid"})
    bot.clock.advance(16)
    bot.runtime.watcher.run_once()
    ts = bot.store.get_build(rid).message_ts
    (reply,) = [c for c in bot.slack.calls("chat.postMessage") if c.get("thread_ts") == ts]
    notes = [e["text"] for b in reply["blocks"] if b["type"] == "context"
             for e in b["elements"]]
    assert any("The build log could not be read (CodeArts answered HTTP 503, request ID "
               "`log-rid`)." in n for n in notes), notes
    assert "failed" in reply["text"]


# --- where the result goes ---------------------------------------------------------

def test_channel_post_falls_back_to_response_url(bot: Bot) -> None:
    bot.slack.error("chat.postMessage", "not_in_channel")
    rid, url = bot.confirmation("backend")
    bot.click(msg.RUN, rid, response_url=url)
    posts = bot.wait_response(url, 3)
    in_channel = [p for p in posts if p.get("response_type") == "in_channel"]
    assert len(in_channel) == 1 and "<@UALICE>" in in_channel[0]["text"]
    bot.wait_idle()
    assert bot.store.get_build(rid).announce == "fallback"


def test_slack_rate_limit_on_the_channel_post_is_retried(bot: Bot) -> None:
    bot.slack.fail("chat.postMessage", status=429, retry_after=1)
    post = started(bot, "backend")
    assert "<@UALICE>" in post["text"]


# --- requests that are not Slack's --------------------------------------------------

def test_forged_signature_is_rejected(bot: Bot) -> None:
    resp, _ = bot.command("docs", secret="not-the-secret")
    assert resp.status_code == 401
    bot.wait_idle()
    assert run_requests(bot) == []


def test_stale_timestamp_is_rejected(bot: Bot) -> None:
    resp, _ = bot.command("docs", timestamp=int(time.time()) - 301)
    assert resp.status_code == 401
    bot.wait_idle()
    assert run_requests(bot) == []


def test_replayed_run_click_starts_nothing_more(bot: Bot) -> None:
    from tests.slack_requests import action_body

    rid, url = bot.confirmation("backend")
    body = action_body(msg.RUN, rid, user="UALICE", channel="CBUILDS", response_url=url)
    ts = int(time.time())
    for _ in range(3):
        assert bot.sender.post(body, timestamp=ts).status_code == 200
    bot.wait_idle()
    assert len(run_requests(bot)) == 1


def test_audit_log_never_holds_a_secret(bot: Bot) -> None:
    started(bot, "backend")
    bot.wait_idle()
    dump = json.dumps([dict(r) for r in bot.store.audit_rows()])
    for secret in (SECRET, "xoxb-test-bot-token-secret", bot.codearts.token):
        assert secret not in dump


def test_replayed_command_is_refused_and_asks_nothing_twice(bot: Bot) -> None:
    from tests.slack_requests import command_body

    url = bot.slack.response_url()
    body = command_body("backend", user="UALICE", channel="CBUILDS", response_url=url)
    ts = int(time.time())
    for _ in range(3):
        assert bot.sender.post(body, timestamp=ts).status_code == 200
    bot.wait_idle()
    assert len(bot.slack.responses(url)) == 1
    assert len(bot.store.audit_rows()) == 1


def test_commands_are_turned_away_while_the_backlog_is_full(
        bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    import bot.flow as flow_module

    monkeypatch.setattr(flow_module, "MAX_BACKLOG", 0)
    resp, url = bot.command("backend")
    body = bot.reply(resp, url)
    assert "very busy" in body["text"] and "nothing was started" in body["text"]
    bot.wait_idle()
    assert bot.store.audit_rows() == [] and bot.slack.responses(url) == []
