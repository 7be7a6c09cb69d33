"""Subscriptions (issue 16, section 1): a channel subscribed to a job gets the builds started
outside Slack ("from the console") once, with their result; the ``failures`` filter; two
channels; two replicas on PostgreSQL; a restart; unsubscribing; a Slack-started build not
announced twice. Signed requests into the real endpoint, the Slack and CodeArts stand-ins on
loopback, a real database; time moves through the harness clock."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bot import messages as msg
from bot.command import (
    ParseError,
    SubscribeCommand,
    SubscriptionsCommand,
    UnsubscribeCommand,
    parse,
)
from bot.notifier import BUILD_EVENT, RESULT_EVENT
from tests.fakes.codearts import FakeCodeArts
from tests.harness import BACKEND_ID, DOCS_ID, Bot, run_value, running_bot

POLL = 15.0
CONFIG = f"""
admins = ["UADMIN"]

[jobs.backend]
id = "{BACKEND_ID}"
description = "Backend CI"
users = ["UALICE"]
channels = ["CBUILDS", "CRELEASE"]

[jobs.docs]
id = "{DOCS_ID}"
description = "Docs site"
users = ["*"]
confirm = false
"""


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path, poll=POLL, config=CONFIG) as b:
        b.codearts.add_job(BACKEND_ID, duration=3600, log="[INFO] compiling\n[ERROR] boom\n")
        b.codearts.add_job(DOCS_ID, duration=3600)
        yield b


def say(bot: Bot, text: str, *, user: str = "UALICE", channel: str = "CBUILDS") -> dict:
    """What the typist (or the channel) saw: the ack's body or the first response."""
    resp, url = bot.command(text, user=user, channel=channel)
    shown = bot.reply(resp, url)
    bot.wait_idle()
    return shown


def from_console(bot: Bot, job_id: str = BACKEND_ID) -> str:
    """A build started outside Slack: the run call made directly, as the console does."""
    answer = httpx.post(bot.codearts.url + "/v3/jobs/build", json={"job_id": job_id},
                        headers={"X-Auth-Token": FakeCodeArts.token})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["actual_build_number"])


def end(bot: Bot, build_no: str, status: str = "SUCCESS", job_id: str = BACKEND_ID) -> None:
    bot.codearts.set_status(job_id, int(build_no), status)


def next_pass(bot: Bot, seconds: float = POLL + 1) -> int:
    bot.clock.advance(seconds)
    return bot.runtime.watcher.run_once()


def tagged_posts(bot: Bot, event: str, channel: str | None = None) -> list[dict[str, Any]]:
    return [c for c in bot.slack.calls("chat.postMessage")
            if (c.get("metadata") or {}).get("event_type") == event
            and (channel is None or c.get("channel") == channel)]


def announcements(bot: Bot, channel: str | None = None) -> list[dict[str, Any]]:
    return tagged_posts(bot, BUILD_EVENT, channel)


def results(bot: Bot, channel: str | None = None) -> list[dict[str, Any]]:
    return tagged_posts(bot, RESULT_EVENT, channel)


def followed(bot: Bot, channel: str | None = None) -> list[str]:
    """The ids of the builds subscriptions found (in this channel), oldest first."""
    from bot.store import builds

    q = sa.select(builds.c.id).where(builds.c.origin == "subscription") \
        .order_by(builds.c.created_at)
    if channel is not None:
        q = q.where(builds.c.channel_id == channel)
    with bot.store.engine.connect() as c:
        return [str(i) for i in c.execute(q).scalars()]


def history_calls(bot: Bot, job_id: str = BACKEND_ID) -> list:
    return bot.codearts.requests_to(f"/v3/jobs/{job_id}/history", "GET")


# --- the words ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("subscribe backend", SubscribeCommand("backend", "all")),
    ("SUBSCRIBE backend FAILURES", SubscribeCommand("backend", "failures")),
    ("subscribe backend all", SubscribeCommand("backend", "all")),
    ("unsubscribe backend", UnsubscribeCommand("backend")),
    ("subscriptions", SubscriptionsCommand()),
])
def test_subscription_words(text: str, expected: Any) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(("text", "words"), [
    ("subscribe", "needs a job name"),
    ("subscribe backend failed", "`failed` is not a mode"),
    ("subscribe backend all more", "too many words"),
    ("unsubscribe", "needs a job name"),
    ("unsubscribe backend docs", "one job name"),
    ("subscriptions backend", "takes no words"),
    ("subscribe codeBranch=x", "looks like a parameter"),
])
def test_bad_subscription_words_say_how_to_fix_them(text: str, words: str) -> None:
    parsed = parse(text)
    assert isinstance(parsed, ParseError) and words in parsed.message, parsed


# --- subscribe, list, unsubscribe ----------------------------------------------------------

def test_subscribe_is_said_in_the_channel_and_listed(bot: Bot) -> None:
    shown = say(bot, "subscribe backend")
    assert shown["response_type"] == "in_channel"
    assert "<@UALICE> subscribed this channel to *backend*: every build" in shown["text"]
    listed = say(bot, "subscriptions")
    assert listed["response_type"] == "ephemeral"
    assert "`backend`: every build" in listed["text"] and "<@UALICE>" in listed["text"]
    changed = say(bot, "subscribe backend failures")
    assert "failed builds only (replaces: every build)" in changed["text"]
    assert "`backend`: failed builds only" in say(bot, "subscriptions")["text"]
    assert "no job" in say(bot, "subscriptions", channel="CRELEASE")["text"]
    decisions = [r["decision"] for r in bot.store.audit_rows()]
    assert decisions.count("subscribe") == 2


def test_subscribing_is_refused_like_a_run(bot: Bot) -> None:
    refused = say(bot, "subscribe backend", user="UBOB")["text"]
    assert "You may not run `backend`" in refused
    elsewhere = say(bot, "subscribe backend", channel="CRANDOM")["text"]
    assert "cannot be run in this channel" in elsewhere
    assert "There is no job `nosuch`" in say(bot, "subscribe nosuch")["text"]
    assert bot.store.subscriptions_of() == []
    say(bot, "subscribe backend")
    assert "You may not run" in say(bot, "unsubscribe backend", user="UBOB")["text"]
    assert len(bot.store.subscriptions_of()) == 1
    admin = say(bot, "subscribe backend failures", user="UADMIN", channel="CRELEASE")
    assert admin["response_type"] == "in_channel"


# --- a console build, announced once --------------------------------------------------------

def test_a_console_build_is_announced_once_with_its_result(bot: Bot) -> None:
    before = from_console(bot)  # started before the subscription: never announced
    say(bot, "subscribe backend")
    bot.runtime.watcher.run_once()
    assert announcements(bot) == []
    console = from_console(bot)
    next_pass(bot)
    (posted,) = announcements(bot, "CBUILDS")
    assert f"#{console}" in posted["text"]
    assert "started by buildbot in CodeArts (manually)" in posted["text"]  # its record
    assert f"#{before}" not in posted["text"]
    next_pass(bot)  # still running: nothing new
    assert len(announcements(bot)) == 1 and results(bot) == []
    end(bot, console)
    next_pass(bot)
    (reply,) = results(bot, "CBUILDS")
    assert reply["thread_ts"] == bot.store.get_build(followed(bot)[0]).message_ts
    assert "succeeded" in reply["text"] and f"#{console}" in reply["text"]
    assert "Rebuild" not in str(reply)  # no command to repeat
    updates = [u for u in bot.slack.calls("chat.update") if u["ts"] == reply["thread_ts"]]
    assert updates and "succeeded" in updates[-1]["text"]
    for _ in range(3):
        next_pass(bot)
    assert len(announcements(bot)) == 1 and len(results(bot)) == 1
    (audit,) = [r for r in bot.store.audit_rows() if r["decision"] == "followed"]
    assert audit["build_no"] == console and audit["channel_id"] == "CBUILDS"


def test_failures_only_announces_a_failed_build_with_its_log(bot: Bot) -> None:
    say(bot, "subscribe backend failures")
    good, bad = from_console(bot), from_console(bot)
    next_pass(bot)
    assert bot.slack.calls("chat.postMessage") == []  # nothing when they start
    end(bot, good, "SUCCESS")
    end(bot, bad, "FAILED")
    next_pass(bot)
    (failed,) = results(bot, "CBUILDS")
    assert "thread_ts" not in failed or not failed.get("thread_ts")
    assert f"#{bad}" in failed["text"] and "failed" in failed["text"]
    assert "[ERROR] boom" in str(failed["blocks"])
    assert announcements(bot) == []
    next_pass(bot)
    assert len(results(bot)) == 1


def test_two_channels_each_get_the_build_once(bot: Bot) -> None:
    say(bot, "subscribe backend")
    say(bot, "subscribe backend", channel="CRELEASE")
    console = from_console(bot)
    next_pass(bot)
    next_pass(bot)
    assert len(announcements(bot, "CBUILDS")) == 1
    assert len(announcements(bot, "CRELEASE")) == 1
    end(bot, console, "FAILED")
    next_pass(bot)
    assert len(results(bot, "CBUILDS")) == 1 and len(results(bot, "CRELEASE")) == 1


def test_a_followed_build_is_named_by_its_daily_number_read_once_for_all_channels(
        bot: Bot) -> None:
    say(bot, "subscribe backend")
    say(bot, "subscribe backend", channel="CRELEASE")
    console = from_console(bot)
    daily = bot.codearts.builds(BACKEND_ID)[-1].daily
    for _ in range(3):
        next_pass(bot)
    record = f"/v1/record/{BACKEND_ID}/{console}/build-info-record"
    assert len(bot.codearts.requests_to(record, "GET")) == 1  # one read for both channels
    for channel in ("CBUILDS", "CRELEASE"):
        (posted,) = announcements(bot, channel)
        assert f"{daily} (#{console})" in posted["text"]
    end(bot, console, "FAILED")
    next_pass(bot)
    for channel in ("CBUILDS", "CRELEASE"):
        (reply,) = results(bot, channel)
        assert daily in reply["text"]
    assert len(bot.codearts.requests_to(record, "GET")) == 1  # not per poll
    assert all(bot.store.get_build(i).daily_build_number == daily for i in followed(bot))


def test_a_record_that_cannot_be_read_still_follows_the_build_by_its_number(bot: Bot) -> None:
    say(bot, "subscribe backend")
    console = from_console(bot)
    bot.codearts.fail_next(500, path_prefix=f"/v1/record/{BACKEND_ID}/", count=10)
    next_pass(bot)
    (posted,) = announcements(bot, "CBUILDS")
    assert f"build #{console}, started outside Slack" in posted["text"]


def test_one_history_call_per_interval_however_many_channels(bot: Bot) -> None:
    for channel in ("CBUILDS", "CRELEASE"):
        say(bot, "subscribe backend", channel=channel)
    before = len(history_calls(bot))
    next_pass(bot)
    assert len(history_calls(bot)) == before + 1
    bot.runtime.watcher.run_once()  # the same moment: not due again
    assert len(history_calls(bot)) == before + 1


def test_unsubscribing_stops_new_announcements_but_not_a_followed_result(bot: Bot) -> None:
    say(bot, "subscribe backend")
    first = from_console(bot)
    next_pass(bot)
    gone = say(bot, "unsubscribe backend")
    assert gone["response_type"] == "in_channel" and "unsubscribed" in gone["text"]
    assert "not subscribed" in say(bot, "unsubscribe backend")["text"]
    second = from_console(bot)
    end(bot, first)
    next_pass(bot)
    next_pass(bot)
    (posted,) = announcements(bot)
    assert f"#{first}" in posted["text"]
    (reply,) = results(bot)
    assert f"#{first}" in reply["text"]
    assert not any(f"#{second}" in c["text"] for c in bot.slack.calls("chat.postMessage"))


def test_a_slack_build_in_a_subscribed_channel_is_not_announced_twice(bot: Bot) -> None:
    say(bot, "subscribe docs")
    resp, _url = bot.command("docs")  # confirm = false: starts at once
    assert resp.status_code == 200
    bot.slack.wait_for(lambda: len(announcements(bot)) == 1)
    bot.wait_idle()
    next_pass(bot)
    next_pass(bot)
    (ours,) = announcements(bot)
    assert "<@UALICE> started *docs*" in ours["text"]
    end(bot, "1", job_id=DOCS_ID)
    next_pass(bot)
    assert len(announcements(bot)) == 1 and len(results(bot)) == 1


def test_odd_history_records_are_skipped_and_the_rest_followed(
        bot: Bot, caplog: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.codearts import client

    monkeypatch.setitem(client._skipped, "logged_at", float("-inf"))  # not logged lately
    say(bot, "subscribe backend")
    console = from_console(bot)
    odd = {"history_records": [
        {"build_number": "x1", "result": "SUCCESS"}, {"result": "FAILED"}, "garbage",
        {"build_number": int(console), "start_time": "2026-11-30T10:00:00Z",
         "end_time": "", "result": "RUNNING"}], "total": 4}
    bot.codearts.fail_next(200, odd, path_prefix=f"/v3/jobs/{BACKEND_ID}/history")
    next_pass(bot)
    (posted,) = announcements(bot)
    assert f"#{console}" in posted["text"]
    assert "#x1" not in str(bot.slack.calls("chat.postMessage"))
    assert [r for r in caplog.records if "without a usable build number" in r.getMessage()]


def test_a_history_that_cannot_be_read_announces_nothing_and_backs_off(
        bot: Bot, caplog: Any) -> None:
    say(bot, "subscribe backend")
    from_console(bot)
    bot.codearts.fail_next(500, count=20, path_prefix=f"/v3/jobs/{BACKEND_ID}/history")
    next_pass(bot)
    assert announcements(bot) == []
    calls = len(history_calls(bot))
    next_pass(bot)  # backing off: the next read 30 s after the first failure
    assert len(history_calls(bot)) == calls
    next_pass(bot)
    assert len(history_calls(bot)) > calls and announcements(bot) == []
    assert len([r for r in caplog.records if "not read" in r.getMessage()]) == 2


# --- restarts and replicas ------------------------------------------------------------------

def test_a_restart_in_the_middle_announces_and_reports_once(db_url: str,
                                                            tmp_path: Path) -> None:
    """The first process records the build it found but dies before its channel post is
    confirmed; the second (a restart: same database, fresh memory) finds it unannounced
    after the grace, posts it once, and reports it once; the first never acts again."""
    from bot.notifier import Delivery

    (tmp_path / "two").mkdir()
    with running_bot(db_url, tmp_path, poll=POLL, config=CONFIG) as one, \
            running_bot(db_url, tmp_path / "two", poll=POLL, config=CONFIG,
                        codearts_endpoint=one.codearts.url,
                        slack_api_url=one.slack.api_url) as two:
        one.codearts.add_job(BACKEND_ID, duration=3600)
        say(one, "subscribe backend")
        first, second = from_console(one), from_console(one)
        real_post = one.runtime.engine.notifier.post
        died: list[str] = []

        def dies_before_the_answer(channel: str, message: dict, **kw: Any) -> Delivery:
            if (message.get("metadata") or {}).get("event_payload", {}).get("build_id") \
                    and not died:
                died.append(channel)  # the process is gone before Slack is asked
                return Delivery(False, error="killed")
            return real_post(channel, message, **kw)

        one.runtime.engine.notifier.post = dies_before_the_answer  # type: ignore[method-assign]
        next_pass(one)
        assert died and len(announcements(one)) == 1  # one of the two made it
        # the restart: another process on the same database, past the intent grace
        two.clock.advance(one.clock.offset + 200)
        two.runtime.watcher.run_once()
        two.clock.advance(POLL + 1)
        two.runtime.watcher.run_once()
        assert len(announcements(one)) == 2
        assert {p["text"].count(f"#{first}") + p["text"].count(f"#{second}")
                for p in announcements(one)} == {1}
        end(one, first, "FAILED")
        end(one, second, "SUCCESS")
        for _ in range(3):
            next_pass(two)
        assert len(announcements(one)) == 2 and len(results(one)) == 2
        assert [r for r in results(one) if "failed" in r["text"] and f"#{first}" in r["text"]]


def test_two_replicas_on_postgresql_announce_once_per_channel(pg_url: str,
                                                              tmp_path: Path) -> None:
    (tmp_path / "two").mkdir()
    with running_bot(pg_url, tmp_path, poll=POLL, config=CONFIG) as one, \
            running_bot(pg_url, tmp_path / "two", poll=POLL, config=CONFIG,
                        codearts_endpoint=one.codearts.url,
                        slack_api_url=one.slack.api_url) as two:
        one.codearts.add_job(BACKEND_ID, duration=3600)
        say(one, "subscribe backend")
        say(one, "subscribe backend", channel="CRELEASE")
        numbers = [from_console(one) for _ in range(3)]
        for replica in (one, two):
            replica.clock.advance(POLL + 1)

        def both(_: int) -> None:
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda r: r.runtime.watcher.run_once(), (one, two)))

        both(0)
        for n in numbers:
            end(one, n, "FAILED")
        for i in range(3):
            for replica in (one, two):
                replica.clock.advance(POLL + 1)
            both(i)
        for channel in ("CBUILDS", "CRELEASE"):
            assert len(announcements(one, channel)) == 3
            assert len(results(one, channel)) == 3
        numbers_followed = [one.store.get_build(i).build_no for i in followed(one)]
        assert sorted(numbers_followed) == sorted(numbers * 2)


# --- one history call per job per poll (section 3) -------------------------------------------

def from_slack(bot: Bot) -> str:
    """A backend build run through the whole flow in #builds; returns its build number."""
    before = len(announcements(bot))
    resp, url = bot.command("backend")
    assert resp.status_code == 200
    (question,) = bot.wait_response(url)
    bot.click(msg.RUN, run_value(question), response_url=url)
    bot.slack.wait_for(lambda: len(announcements(bot)) > before)
    bot.wait_idle()
    return str(len(bot.codearts.builds(BACKEND_ID)))


def status_reads(bot: Bot) -> tuple[int, int]:
    """(history pages read for following, per-build record reads) so far."""
    pages = [r for r in history_calls(bot) if "limit=1&" not in r.query + "&"]
    return len(pages), len(bot.codearts.requests_to("/v4/jobs/", "GET"))


def test_one_history_call_per_poll_covers_every_followed_build_of_the_job(bot: Bot) -> None:
    say(bot, "subscribe backend")
    ours = [from_slack(bot) for _ in range(3)]
    console = [from_console(bot) for _ in range(4)]
    for _ in range(3):
        before = status_reads(bot)
        next_pass(bot)
        after = status_reads(bot)
        assert (after[0] - before[0], after[1] - before[1]) == (1, 0)
    assert len(announcements(bot)) == 7  # ours, and the console's once
    for n in ours[:2] + console[:2]:
        end(bot, n, "FAILED")
    before = status_reads(bot)
    next_pass(bot)
    after = status_reads(bot)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 0)
    assert len(results(bot)) == 4
    assert len([r for r in results(bot) if "<@UALICE>" in r["text"]]) == 2  # ours mention


def test_a_jobs_builds_due_together_are_decided_by_one_read_and_one_write(
        db_url: str, tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path, poll=POLL, config=CONFIG,
                     progress_update_seconds=0) as bot:
        bot.codearts.add_job(BACKEND_ID, duration=3600)
        say(bot, "subscribe backend")
        ours = [from_slack(bot) for _ in range(3)]
        console = [from_console(bot) for _ in range(4)]
        next_pass(bot)  # the console's builds are found and announced
        writes: list[tuple[bool, int]] = []

        def reschedules(_conn: Any, _cursor: Any, statement: str, params: Any, _context: Any,
                        executemany: bool) -> None:
            if statement.startswith("UPDATE buildbot_builds SET next_check_at"):
                writes.append((executemany, len(params) if executemany else 1))

        sa.event.listen(bot.store.engine, "before_cursor_execute", reschedules)
        try:
            before = status_reads(bot)
            polled = next_pass(bot)
            after = status_reads(bot)
        finally:
            sa.event.remove(bot.store.engine, "before_cursor_execute", reschedules)
        assert polled == 7
        assert (after[0] - before[0], after[1] - before[1]) == (1, 0)
        assert writes == [(True, 7)]  # one statement for the seven builds
        assert {b.watch for b in builds_of(bot)} == {"watching"}
        assert min(b.next_check_at for b in builds_of(bot)) > bot.clock()
        for n in ours[:1] + console[:1]:  # builds that end are reported one by one
            end(bot, n, "FAILED")
        writes.clear()
        sa.event.listen(bot.store.engine, "before_cursor_execute", reschedules)
        try:
            next_pass(bot)
        finally:
            sa.event.remove(bot.store.engine, "before_cursor_execute", reschedules)
        assert writes == [(True, 5)]
        assert len(results(bot)) == 2


def builds_of(bot: Bot) -> list[Any]:
    with bot.store.engine.begin() as c:
        ids = [r[0] for r in c.execute(sa.text("SELECT id FROM buildbot_builds"))]
    return [bot.store.get_build(i) for i in ids]


def test_a_build_older_than_the_first_page_is_read_from_the_next(bot: Bot) -> None:
    (mine,) = [from_slack(bot)]
    for _ in range(55):  # newer builds nobody follows push ours to the second page
        from_console(bot)
    next_pass(bot)
    queries = [r.query for r in history_calls(bot)]
    # further pages ask for the most lines the API allows (100)
    assert queries == ["offset=0&limit=50", "offset=50&limit=100"]
    assert bot.codearts.requests_to("/v4/jobs/") == []
    end(bot, mine, "SUCCESS")
    next_pass(bot)
    # the job needed more than one page: its next read asks for 100 lines at once
    assert [r.query for r in history_calls(bot)][2:] == ["offset=0&limit=100"]
    assert bot.codearts.requests_to("/v4/jobs/") == []
    assert len([c for c in bot.slack.calls("chat.postMessage") if c.get("thread_ts")]) == 1


def test_a_build_the_history_does_not_list_readably_reads_its_own_record(bot: Bot) -> None:
    mine = from_slack(bot)
    unreadable = {"history_records": [{"build_number": int(mine)}], "total": 1}  # no word
    bot.codearts.fail_next(200, unreadable, path_prefix=f"/v3/jobs/{BACKEND_ID}/history")
    next_pass(bot)
    assert len(bot.codearts.requests_to(f"/v4/jobs/{BACKEND_ID}/{mine}/record-info")) == 1
    assert bot.store.get_build(bot.store.audit_rows()[-1]["request_id"]).watch == "watching"


def test_a_webhook_nudge_finds_and_reports_a_console_build_before_the_next_poll(
        db_url: str, tmp_path: Path) -> None:
    from bot.webhook import HEADER

    secret = "webhook-secret-0123456789abcdef"
    with running_bot(db_url, tmp_path, poll=POLL, config=CONFIG,
                     codearts_webhook_secret=secret) as bot:
        bot.codearts.add_job(BACKEND_ID, duration=3600)
        say(bot, "subscribe backend failures")
        bot.runtime.watcher.run_once()  # read now; the next read is a poll interval away
        console = from_console(bot)
        end(bot, console, "FAILED")
        assert bot.runtime.watcher.run_once() == 0 and results(bot) == []
        sent = httpx.post(bot.url + "/codearts/events", headers={HEADER: secret},
                          json={"job_id": BACKEND_ID, "result": "FAILED"})
        assert sent.status_code == 204
        bot.runtime.watcher.run_once()  # no time passed: the nudge made it due
        (failed,) = results(bot, "CBUILDS")
        assert f"#{console}" in failed["text"] and "failed" in failed["text"]


def test_when_the_newest_build_is_unknown_at_subscribing_start_times_decide(bot: Bot) -> None:
    before = from_console(bot)
    bot.codearts.fail_next(500, count=4, path_prefix=f"/v3/jobs/{BACKEND_ID}/history")
    say(bot, "subscribe backend")
    assert bot.store.subscriptions_of()[0].since_no is None
    after = from_console(bot)
    next_pass(bot)
    (posted,) = announcements(bot)
    assert f"#{after}" in posted["text"] and f"#{before}" not in posted["text"]
    assert bot.store.subscriptions_of()[0].since_no == int(after)
