"""/build status and /build stop for any build of a job, the bot's own and those started
elsewhere ("from the console"): signed requests into the real endpoint, the Slack and
CodeArts stand-ins on loopback, and a real database (issue 16, section 2)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot import messages as msg
from bot.command import ParseError, StatusCommand, StopCommand, parse
from tests.fakes.codearts import FakeCodeArts
from tests.harness import BACKEND_ID, DOCS_ID, Bot, button_value, running_bot

POLL = 15.0


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path, poll=POLL) as b:
        b.codearts.add_job(BACKEND_ID, duration=3600)  # runs until stopped
        b.codearts.add_job(DOCS_ID, duration=0)  # ends as soon as it starts
        yield b


def from_slack(bot: Bot, text: str = "backend", user: str = "UALICE") -> str:
    """Run a build through the whole flow; return its id."""
    before = len(bot.slack.calls("chat.postMessage"))
    rid, url = bot.confirmation(text, user=user)
    bot.click(msg.RUN, rid, user=user, response_url=url)
    bot.slack.wait_for(lambda: len(bot.slack.calls("chat.postMessage")) > before)
    bot.wait_idle()
    return rid


def from_console(bot: Bot, job_id: str) -> str:
    """A build started outside Slack: CodeArts' run call made directly, as the console
    does. Returns its build number."""
    answer = httpx.post(bot.codearts.url + "/v3/jobs/build", json={"job_id": job_id},
                        headers={"X-Auth-Token": FakeCodeArts.token})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["actual_build_number"])


def answer(bot: Bot, text: str, *, user: str = "UALICE", channel: str = "CBUILDS") -> dict:
    """What the typist saw: the ack's body or the first post to its response_url."""
    resp, url = bot.command(text, user=user, channel=channel)
    shown = bot.reply(resp, url)
    bot.wait_idle()
    return shown


def ask_stop(bot: Bot, text: str, *, user: str = "UALICE") -> tuple[dict, str]:
    resp, url = bot.command(text, user=user)
    return bot.reply(resp, url), url


def history_calls(bot: Bot, job_id: str) -> list:
    return bot.codearts.requests_to(f"/v3/jobs/{job_id}/history", "GET")


def stop_calls(bot: Bot) -> list:
    return [r for r in bot.codearts.requests_to("/v3/jobs/", "POST")
            if r.path.endswith("/stop")]


def thread_replies(bot: Bot, ts: str) -> list[dict]:
    return [c for c in bot.slack.calls("chat.postMessage") if c.get("thread_ts") == ts]


# --- the words -------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("status", StatusCommand(None)),
    ("STATUS backend", StatusCommand("backend")),
    ("stop backend 42", StopCommand("backend", "42")),
    ("Stop backend #42", StopCommand("backend", "42")),
    ("stop backend 0042", StopCommand("backend", "42")),
])
def test_status_and_stop_are_command_words(text: str, expected: Any) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(("text", "words"), [
    ("stop", "needs a job and a build number"),
    ("stop backend", "needs the build number"),
    ("stop backend abc", "`abc` is not a build number"),
    ("stop backend 20261123.7", "daily number"),
    ("stop backend -3", "is not a build number"),
    ("stop backend 0", "is not a build number"),
    ("stop backend " + "9" * 30, "is not a build number"),
    ("stop backend 4 5", "too many words"),
    ("stop codeBranch=x 4", "job name"),
    ("status backend docs", "one job name at most"),
    ("status a=b", "job name"),
    ('status "backend', "not closed"),
])
def test_bad_status_and_stop_words_are_parse_errors(text: str, words: str) -> None:
    parsed = parse(text)
    assert isinstance(parsed, ParseError) and words in parsed.message, parsed


@pytest.mark.parametrize(("item", "result", "took"), [
    ({"build_number": 7, "start_time": "2026-11-30T10:00:00.000+00:00",
      "end_time": "2026-11-30T10:06:12.000+00:00", "result": "SUCCESS"}, "success", 372_000),
    ({"build_number": "8", "start_time": "2026-11-30T10:00:00Z", "end_time": "",
      "result": "RUNNING"}, "running", 600_000),
    ({"build_number": 9, "result": "queued"}, "running", None),  # no times, odd word
    ({"build_number": 10, "start_time": 1796032800000,
      "end_time": "2026-11-30T10:01:00Z", "result": "WHATEVER"}, "ended:WHATEVER", 60_000),
    ({"build_number": 11, "result": None, "start_time": "yesterday"}, "running", None),
])
def test_history_lines_become_rows_as_far_as_they_can_be_read(item: dict, result: str,
                                                              took: int | None) -> None:
    from bot.codearts.answers import history_record_from
    from bot.status import row_from

    record = history_record_from(item)
    assert record is not None
    row = row_from(record, now=1_796_032_800.0 + 600)  # 2026-11-30 10:10 UTC
    assert (row.build_no, row.result, row.duration_ms, row.started_by) == (
        str(item["build_number"]), result, took, None)


# --- /build status <job> -------------------------------------------------------------------

def test_status_lists_builds_from_slack_and_from_the_console(bot: Bot) -> None:
    rid = from_slack(bot)
    console = from_console(bot, BACKEND_ID)
    shown = answer(bot, "status backend")
    text = shown["text"]
    assert shown["response_type"] == "ephemeral"
    daily = bot.store.get_build(rid).daily_build_number
    lines = [line for line in text.splitlines() if line.startswith("•")]
    assert len(lines) == 2
    ours = next(line for line in lines if "(#1)" in line)
    theirs = next(line for line in lines if f"#{console}" in line)
    assert daily in ours and "<@UALICE>" in ours and "running" in ours
    assert "outside Slack" in theirs and "running" in theirs and "<@" not in theirs
    assert "2 builds running" in text
    assert len(history_calls(bot, BACKEND_ID)) == 1  # one history call, limit 5
    assert "limit=5" in history_calls(bot, BACKEND_ID)[0].query


def test_status_shows_an_ended_build_with_its_result_and_duration(bot: Bot) -> None:
    from_console(bot, DOCS_ID)
    text = answer(bot, "status docs")["text"]
    assert "nothing running" in text and "succeeded in 0 s" in text
    assert "outside Slack" in text


def test_status_of_a_job_with_no_builds_says_so(bot: Bot) -> None:
    assert "has no builds yet" in answer(bot, "status docs")["text"]


def test_status_is_refused_like_a_run_and_asks_nothing(bot: Bot) -> None:
    refused = answer(bot, "status backend", user="UBOB")["text"]
    assert "You may not run `backend`" in refused
    elsewhere = answer(bot, "status backend", channel="CRANDOM")["text"]
    assert "cannot be run in this channel" in elsewhere
    unknown = answer(bot, "status nosuch")["text"]
    assert "There is no job `nosuch`" in unknown
    assert bot.codearts.requests_to("/v3/jobs/") == []
    assert [r["decision"] for r in bot.store.audit_rows()] == ["denied"] * 3


def test_status_when_codearts_fails_says_so(bot: Bot) -> None:
    bot.codearts.fail_next(500, count=10, path_prefix=f"/v3/jobs/{BACKEND_ID}/history")
    text = answer(bot, "status backend")["text"]
    assert "could not read the builds of `backend`" in text


# --- /build status -----------------------------------------------------------------------

def test_status_alone_lists_the_jobs_with_their_last_build(bot: Bot) -> None:
    from_console(bot, DOCS_ID)
    text = answer(bot, "status")["text"]
    backend = next(line for line in text.splitlines() if "`backend`" in line)
    docs = next(line for line in text.splitlines() if "`docs`" in line)
    assert "no builds yet" in backend
    assert "succeeded" in docs
    for job in (BACKEND_ID, DOCS_ID):  # one call per job, for its last build only
        (call,) = history_calls(bot, job)
        assert "limit=1" in call.query


def test_status_alone_shows_only_jobs_runnable_here_and_unknown_for_a_failed_call(
        bot: Bot) -> None:
    bot.codearts.fail_next(500, count=10, path_prefix=f"/v3/jobs/{DOCS_ID}/history")
    text = answer(bot, "status", channel="CRANDOM")["text"]
    assert "`backend`" not in text  # backend may only run in CBUILDS
    docs = next(line for line in text.splitlines() if "`docs`" in line)
    assert "unknown" in docs
    assert history_calls(bot, BACKEND_ID) == []


# --- /build stop ----------------------------------------------------------------------------

def test_stop_asks_first_then_stops_our_build_and_the_thread_says_so(bot: Bot) -> None:
    rid = from_slack(bot)
    question, url = ask_stop(bot, "stop backend 1")
    assert question["response_type"] == "ephemeral" and "<@UALICE>" in question["text"]
    assert stop_calls(bot) == []  # nothing before the confirmation
    value = button_value(question, msg.STOP_CONFIRM)
    assert button_value(question, msg.STOP_KEEP) == value
    assert bot.click(msg.STOP_CONFIRM, value, response_url=url).status_code == 200
    bot.wait_idle()
    (stopped,) = stop_calls(bot)
    assert stopped.path == f"/v3/jobs/{BACKEND_ID}/1/stop"
    ts = bot.store.get_build(rid).message_ts
    (note,) = thread_replies(bot, ts)
    assert "<@UALICE> asked CodeArts to stop" in note["text"]
    done = bot.slack.responses(url)[-1]
    assert done["replace_original"] is True and "Asked CodeArts to stop" in done["text"]
    bot.clock.advance(POLL + 1)
    bot.runtime.watcher.run_once()
    assert "was stopped" in thread_replies(bot, ts)[-1]["text"]
    assert [r["decision"] for r in bot.store.audit_rows(request_id=rid)][-2:] == [
        "stop", "finished"]


def test_stop_stops_a_build_started_from_the_console(bot: Bot) -> None:
    number = from_console(bot, BACKEND_ID)
    question, url = ask_stop(bot, f"stop backend {number}")
    assert "outside Slack" in question["text"]
    bot.click(msg.STOP_CONFIRM, button_value(question, msg.STOP_CONFIRM), response_url=url)
    bot.wait_idle()
    (stopped,) = stop_calls(bot)
    assert stopped.path == f"/v3/jobs/{BACKEND_ID}/{number}/stop"
    assert "Asked CodeArts to stop" in bot.slack.responses(url)[-1]["text"]
    assert bot.slack.calls("chat.postMessage") == []  # no thread: nothing in the channel
    assert "was stopped" in answer(bot, "status backend")["text"]
    (row,) = [r for r in bot.store.audit_rows() if r["decision"] == "stop"]
    assert (row["job"], row["build_no"], row["user_id"]) == ("backend", number, "UALICE")


def test_keep_running_stops_nothing(bot: Bot) -> None:
    number = from_console(bot, BACKEND_ID)
    question, url = ask_stop(bot, f"stop backend {number}")
    bot.click(msg.STOP_KEEP, button_value(question, msg.STOP_KEEP), response_url=url)
    bot.wait_idle()
    assert "Kept running" in bot.slack.responses(url)[-1]["text"]
    assert stop_calls(bot) == []


def test_stop_of_an_ended_build_or_no_such_build_has_a_clear_answer(bot: Bot) -> None:
    number = from_console(bot, DOCS_ID)
    ended = answer(bot, f"stop docs {number}")["text"]
    assert "has already ended (succeeded): nothing to stop" in ended
    missing = answer(bot, "stop docs 99")["text"]
    assert "has no build #99" in missing
    assert stop_calls(bot) == []


@pytest.mark.parametrize("text", ["stop", "stop backend", "stop backend abc",
                                  "stop backend 20261123.7"])
def test_bad_stop_input_gets_usage_help_and_sends_nothing(bot: Bot, text: str) -> None:
    shown = answer(bot, text)
    assert "/build help" in str(shown) and shown["response_type"] == "ephemeral"
    assert bot.codearts.requests_to("/v3/jobs/") == []


def test_stop_is_refused_to_whoever_may_not_run_the_job(bot: Bot) -> None:
    number = from_console(bot, BACKEND_ID)
    refused = answer(bot, f"stop backend {number}", user="UBOB")["text"]
    assert "stopping needs the same permission as running it" in refused
    assert "There is no job `nosuch`" in answer(bot, "stop nosuch 1")["text"]
    assert [r.path for r in bot.codearts.requests_to("/v")] == ["/v3/jobs/build"]


def test_a_stop_click_is_checked_again_for_whoever_clicks(bot: Bot) -> None:
    number = from_console(bot, BACKEND_ID)
    question, url = ask_stop(bot, f"stop backend {number}")
    value = button_value(question, msg.STOP_CONFIRM)
    bot.click(msg.STOP_CONFIRM, value, user="UBOB", response_url=url)
    bot.click(msg.STOP_CONFIRM, value, channel="CRANDOM", response_url=url)
    bot.click(msg.STOP_CONFIRM, "not a value", response_url=url)
    bot.wait_idle()
    assert stop_calls(bot) == []
    said = [r["text"] for r in bot.slack.responses(url)[1:]]
    assert len(said) == 3
    assert sum("same permission as running it" in t for t in said) == 2


def test_a_stop_click_after_the_build_ended_stops_nothing(bot: Bot) -> None:
    number = from_console(bot, BACKEND_ID)
    question, url = ask_stop(bot, f"stop backend {number}")
    bot.codearts.set_status(BACKEND_ID, int(number), "SUCCESS")
    bot.click(msg.STOP_CONFIRM, button_value(question, msg.STOP_CONFIRM), response_url=url)
    bot.wait_idle()
    assert stop_calls(bot) == []
    assert "has already ended" in bot.slack.responses(url)[-1]["text"]


def test_the_stop_button_still_works(bot: Bot) -> None:
    rid = from_slack(bot)
    bot.click(msg.STOP, rid)
    bot.wait_idle()
    (stopped,) = stop_calls(bot)
    assert stopped.path == f"/v3/jobs/{BACKEND_ID}/1/stop"
    (note,) = thread_replies(bot, bot.store.get_build(rid).message_ts)
    assert "asked CodeArts to stop" in note["text"]


# --- the request ID of CodeArts' answer --------------------------------------------------

def test_status_when_codearts_fails_gives_the_answer_request_id(bot: Bot) -> None:
    bot.codearts.fail_next(500, count=10, path_prefix=f"/v3/jobs/{BACKEND_ID}/history",
                           headers={"X-Request-Id": "st-rid"})
    text = answer(bot, "status backend")["text"]
    assert "could not read the builds of `backend`: CodeArts answered HTTP 500" in text
    assert text.endswith("Try again in a minute.\nRequest ID `st-rid`")


def test_status_when_codearts_does_not_answer_says_nothing_of_a_request_id(
        db_url: str, tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path, api_options={"timeout": 0.3}) as bot:
        bot.codearts.hang(2.0, count=10, path_prefix=f"/v3/jobs/{BACKEND_ID}/history")
        text = answer(bot, "status backend")["text"]
        assert "could not read the builds of `backend`" in text
        assert "request id" not in text.lower()


def test_status_alone_gives_the_request_id_of_a_failed_job(bot: Bot) -> None:
    bot.codearts.fail_next(503, count=10, path_prefix=f"/v3/jobs/{DOCS_ID}/history",
                           headers={"X-Request-Id": "docs-rid"})
    text = answer(bot, "status")["text"]
    docs = next(line for line in text.splitlines() if "`docs`" in line)
    assert docs.endswith("unknown (CodeArts did not answer, request ID `docs-rid`)")
    backend = next(line for line in text.splitlines() if "`backend`" in line)
    assert "request ID" not in backend


def test_a_stop_question_codearts_cannot_answer_gives_the_request_id(bot: Bot) -> None:
    number = from_console(bot, BACKEND_ID)
    bot.codearts.fail_next(503, count=10, path_prefix=f"/v4/jobs/{BACKEND_ID}/{number}/",
                           headers={"X-Request-Id": "rec-rid"})
    text = answer(bot, f"stop backend {number}")["text"]
    assert "could not read the builds of `backend`: CodeArts answered HTTP 503" in text
    assert text.endswith("\nRequest ID `rec-rid`")
    assert stop_calls(bot) == []


def test_a_stop_codearts_refuses_gives_the_request_id(bot: Bot) -> None:
    number = from_console(bot, BACKEND_ID)
    question, url = ask_stop(bot, f"stop backend {number}")
    bot.codearts.fail_next(500, path_prefix=f"/v3/jobs/{BACKEND_ID}/{number}/stop",
                           headers={"X-Request-Id": "stop-rid"})
    bot.click(msg.STOP_CONFIRM, button_value(question, msg.STOP_CONFIRM), response_url=url)
    bot.wait_idle()
    text = bot.slack.responses(url)[-1]["text"]
    assert "CodeArts did not stop" in text and "\nHTTP 500, request ID `stop-rid`\n" in text


def test_help_names_status_and_stop(bot: Bot) -> None:
    text = answer(bot, "help")["text"]
    assert "/build status" in text and "/build stop" in text
