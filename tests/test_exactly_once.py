"""Exactly-once holes the explicit lifecycle closes, each through the real endpoint,
the stand-ins and a real database: Rebuild, failures after a build started, Slack
refusing a result for good, shutdown under a running poll, and drifting clocks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import messages as msg
from bot.lifecycle import MAX_AGE, WatchState
from bot.store import DatabaseClock, Store
from bot.watcher import Watcher
from tests.harness import (
    BACKEND_ID,
    DOCS_ID,
    Bot,
    button_value,
    database_away_once,
    running_bot,
)

POLL = 15.0


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path, poll=POLL) as b:
        b.codearts.add_job(BACKEND_ID, duration=0)  # ends as soon as it starts
        b.codearts.add_job(DOCS_ID, duration=0)
        yield b


def run_requests(bot: Bot) -> list[Any]:
    return bot.codearts.requests_to("/v3/jobs/build", "POST")


def announcements(bot: Bot) -> list[dict[str, Any]]:
    return [c for c in bot.slack.calls("chat.postMessage")
            if not c.get("thread_ts") and c.get("channel", "").startswith("C")]


def start(bot: Bot, text: str = "backend") -> str:
    rid, url = bot.confirmation(text)
    bot.click(msg.RUN, rid, response_url=url)
    bot.wait_response(url, 2)
    bot.wait_idle()
    return rid


def next_poll(bot: Bot, seconds: float = POLL + 1) -> int:
    bot.clock.advance(seconds)
    return bot.runtime.watcher.run_once()


# --- 1. Rebuild ---------------------------------------------------------------------

def test_two_rebuild_clicks_on_a_job_without_confirmation_start_one_build(bot: Bot) -> None:
    resp, _url = bot.command("docs")  # confirm = false: starts at once
    assert resp.status_code == 200
    bot.slack.wait_for(lambda: len(run_requests(bot)) == 1)
    bot.wait_idle()
    (build_id,) = [b["request_id"] for b in bot.store.audit_rows() if b["decision"] == "started"]
    first, second = bot.slack.response_url(), bot.slack.response_url()
    threads = [threading.Thread(target=bot.click, args=(msg.REBUILD, build_id),
                                kwargs={"response_url": u}) for u in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    questions = [bot.wait_response(u)[0] for u in (first, second)]
    bot.wait_idle()
    assert len(run_requests(bot)) == 1  # a Rebuild click alone starts nothing
    assert all("Run this build again?" in q["text"] for q in questions)
    ids = {button_value(q, msg.RUN) for q in questions}
    assert len(ids) == 1 and build_id not in ids  # one question, asked twice
    (rid,) = ids
    for u in (first, second):  # Run clicked on both devices
        bot.click(msg.RUN, rid, response_url=u)
    bot.wait_idle()  # both clicks handled
    assert len(run_requests(bot)) == 2  # the command's build and one rebuild


def test_a_rebuild_on_two_replicas_asks_one_question(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "two").mkdir()
    with running_bot(db_url, tmp_path, poll=POLL) as one, \
            running_bot(db_url, tmp_path / "two", poll=POLL) as two:
        for b in (one, two):
            b.codearts.add_job(BACKEND_ID, duration=0)
        # both replicas see the same database; the build was started through the first
        rid = start(one)
        answers = []
        for replica in (one, two):
            url = replica.slack.response_url()
            replica.click(msg.REBUILD, rid, response_url=url)
            answers.append(replica.wait_response(url)[0])
            replica.wait_idle()
        assert button_value(answers[0], msg.RUN) == button_value(answers[1], msg.RUN)


# --- 2 and 3. After a build started ----------------------------------------------------

def test_a_failure_to_save_the_message_ts_says_started_and_announces_once(
        bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    database_away_once(monkeypatch, "set_announced")
    rid, url = bot.confirmation("backend")
    bot.click(msg.RUN, rid, response_url=url)
    replaced = bot.wait_response(url, 2)[1]
    bot.wait_idle()
    assert "Started" in replaced["text"] and "othing was started" not in replaced["text"]
    assert len(announcements(bot)) == 1
    # long past the time a dead poster's announcement is taken over: still one
    for _ in range(3):
        next_poll(bot, 400)
    assert len(announcements(bot)) == 1
    build = bot.store.get_build(rid)
    assert build is not None and build.message_ts  # saved by the watcher's next pass
    replies = [c for c in bot.slack.calls("chat.postMessage")
               if c.get("thread_ts") == build.message_ts]
    assert len(replies) == 1 and "succeeded" in replies[0]["text"]


def test_any_failure_after_the_start_is_reported_as_started_but(
        bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("the channel could not be read")

    monkeypatch.setattr(bot.runtime.engine, "announce", broken)
    rid, url = bot.confirmation("backend")
    bot.click(msg.RUN, rid, response_url=url)
    replaced = bot.wait_response(url, 2)[1]
    bot.wait_idle()
    assert "*was started*" in replaced["text"] and "error ID" in replaced["text"]
    assert "othing was started" not in replaced["text"]
    assert len(run_requests(bot)) == 1
    assert bot.store.get_request(rid).state == "started"  # type: ignore[union-attr]


# --- 4. Slack refusing a result -----------------------------------------------------------

@pytest.mark.parametrize("error", ["is_archived", "channel_not_found", "not_in_channel",
                                   "msg_too_long"])
def test_a_result_slack_refuses_for_good_goes_to_the_requester_and_ends_the_watch(
        bot: Bot, error: str) -> None:
    rid = start(bot)
    bot.slack.error("chat.postMessage", error)  # the thread reply
    next_poll(bot)
    dms = [c for c in bot.slack.calls("chat.postMessage") if c.get("channel") == "UALICE"]
    assert len(dms) == 1
    assert "succeeded" in dms[0]["text"] and error in dms[0]["text"]
    assert bot.store.get_build(rid).watch == WatchState.DONE  # type: ignore[union-attr]
    audit = bot.store.audit_rows(request_id=rid)[-1]
    assert audit["decision"] == "report_refused" and error in audit["detail"]
    before = len(bot.slack.calls("chat.postMessage"))
    next_poll(bot, 3600)
    assert len(bot.slack.calls("chat.postMessage")) == before  # never tried again


def test_a_passing_refusal_backs_off_and_a_watch_in_reporting_ages_out(bot: Bot) -> None:
    rid = start(bot)
    # every thread reply for a day is refused with a passing error; then a direct message goes
    bot.slack.error("chat.postMessage", "internal_error", count=6)
    next_poll(bot)
    waits = []
    for _ in range(4):
        build = bot.store.get_build(rid)
        assert build is not None and build.watch == WatchState.REPORTING
        waits.append(build.next_check_at - bot.clock())
        next_poll(bot, build.next_check_at - bot.clock() + 1)
    assert waits == sorted(waits) and waits[-1] > waits[0]  # backs off
    next_poll(bot, MAX_AGE)
    build = bot.store.get_build(rid)
    assert build is not None and build.watch == WatchState.DONE
    dms = [c for c in bot.slack.calls("chat.postMessage") if c.get("channel") == "UALICE"]
    assert len(dms) == 1 and "succeeded" in dms[0]["text"] and "internal_error" in dms[0]["text"]
    assert bot.store.audit_rows(request_id=rid)[-1]["decision"] == "report_refused"


# --- 5. Shutdown -------------------------------------------------------------------------

def test_shutdown_never_closes_clients_under_a_running_poll(bot: Bot) -> None:
    start(bot)
    bot.codearts.hang(0.6, path_prefix=f"/v3/jobs/{BACKEND_ID}/history")  # the poll
    bot.clock.advance(POLL + 1)
    done = threading.Event()
    errors: list[BaseException] = []

    def one_pass() -> None:
        try:
            bot.runtime.watcher.run_once()
        except BaseException as exc:
            errors.append(exc)
        done.set()

    threading.Thread(target=one_pass, daemon=True).start()
    bot.slack.wait_for(lambda: bot.codearts.requests_to(f"/v3/jobs/{BACKEND_ID}/history"))
    assert bot.runtime.close(deadline=0.2) is False  # a poll is out: nothing closed
    assert not bot.runtime.api.closed
    assert done.wait(10) and errors == []
    assert bot.runtime.close(deadline=5) is True
    assert bot.runtime.api.closed


# --- 6. Clocks --------------------------------------------------------------------------

def test_the_database_clock_ignores_a_replica_clock_that_is_off(store: Store) -> None:
    ahead = DatabaseClock(store.engine, local=lambda: time.time() + 3600)
    behind = DatabaseClock(store.engine, local=lambda: time.time() - 3600)
    assert abs(ahead() - time.time()) < 2 and abs(behind() - time.time()) < 2


def test_a_replica_with_a_fast_clock_does_not_take_a_live_lease(bot: Bot) -> None:
    bot.codearts.add_job(BACKEND_ID, duration=3600)
    start(bot)
    bot.clock.advance(POLL + 1)
    leased = bot.store.lease_due(owner="live-replica", now=bot.runtime.clock(),
                                 lease_seconds=60, limit=10)
    assert len(leased) == 1
    skewed = DatabaseClock(bot.store.engine, local=lambda: time.time() + 120,
                           offset=lambda: bot.clock() - time.time())
    other = Watcher(bot.runtime.engine, poll_seconds=POLL, owner="fast-clock", clock=skewed)
    try:
        assert other.run_once() == 0  # by its own clock the lease is over; by the database's not
    finally:
        other.stop(1)
