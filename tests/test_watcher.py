"""Following builds to their end, in their thread, exactly once (issue: thread notifications)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import messages as msg
from bot.watcher import Watcher
from tests.harness import BACKEND_ID, Bot, button_value, running_bot

POLL = 15.0


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path, poll=POLL) as b:
        b.codearts.add_job(BACKEND_ID, duration=0)  # ends as soon as it starts
        yield b


def start(bot: Bot, user: str = "UALICE", text: str = "backend") -> tuple[str, dict]:
    """Run a build through the whole flow; return its id and its channel message."""
    before = len(bot.slack.calls("chat.postMessage"))
    rid, url = bot.confirmation(text, user=user)
    bot.click(msg.RUN, rid, user=user, response_url=url)
    posts = bot.slack.wait_for(lambda: (p := bot.slack.calls("chat.postMessage"))
                               and len(p) > before and p)
    bot.wait_idle()
    return rid, posts[before]


def thread_replies(bot: Bot, ts: str) -> list[dict]:
    return [c for c in bot.slack.calls("chat.postMessage") if c.get("thread_ts") == ts]


def next_poll(bot: Bot, seconds: float = POLL + 1) -> int:
    bot.clock.advance(seconds)
    return bot.runtime.watcher.run_once()


def ts_of(bot: Bot, rid: str) -> str:
    return bot.store.get_build(rid).message_ts


def test_nothing_is_polled_before_its_time(bot: Bot) -> None:
    start(bot)
    assert bot.runtime.watcher.run_once() == 0
    assert bot.codearts.requests_to("/v4/jobs/") == []


def test_success_is_replied_in_the_thread_once_and_the_parent_updated(bot: Bot) -> None:
    rid, _parent = start(bot)
    assert next_poll(bot) == 1
    ts = ts_of(bot, rid)
    (reply,) = thread_replies(bot, ts)
    assert "succeeded" in reply["text"] and "<@UALICE>" not in reply["text"]
    assert button_value(reply, msg.REBUILD) == rid
    (update,) = bot.slack.calls("chat.update")
    assert update["ts"] == ts and "succeeded" in update["text"]
    assert [b["elements"][0]["action_id"] for b in update["blocks"]
            if b["type"] == "actions"] == [msg.REBUILD]  # Stop is gone
    assert next_poll(bot) == 0 and next_poll(bot, 10_000) == 0
    assert len(thread_replies(bot, ts)) == 1
    assert bot.store.audit_rows(request_id=rid)[-1]["detail"] == "success"


def test_failure_mentions_the_requester(bot: Bot) -> None:
    bot.codearts.add_job(BACKEND_ID, outcome="FAILURE", duration=0)
    rid, _ = start(bot)
    next_poll(bot)
    (reply,) = thread_replies(bot, ts_of(bot, rid))
    assert reply["text"].startswith("<@UALICE>") and "failed" in reply["text"]


def test_a_running_build_is_checked_again_later(bot: Bot) -> None:
    bot.codearts.add_job(BACKEND_ID, duration=3600)
    rid, _ = start(bot)
    assert next_poll(bot) == 1
    assert next_poll(bot, 1) == 0  # not due again yet
    assert thread_replies(bot, ts_of(bot, rid)) == []
    # one status read: the job's history (it lists the build), no per-build record call
    assert len(bot.codearts.requests_to(f"/v3/jobs/{BACKEND_ID}/history", "GET")) == 1
    assert bot.codearts.requests_to("/v4/jobs/") == []


def test_unknown_status_spelling_counts_as_running(bot: Bot) -> None:
    bot.codearts.add_job(BACKEND_ID, duration=3600)
    rid, _ = start(bot)
    bot.codearts.set_status(BACKEND_ID, 1, "queued_for_agent")
    next_poll(bot)
    assert thread_replies(bot, ts_of(bot, rid)) == []
    bot.codearts.set_status(BACKEND_ID, 1, "success")
    next_poll(bot)
    assert "succeeded" in thread_replies(bot, ts_of(bot, rid))[0]["text"]


def test_api_errors_while_polling_back_off_then_report(bot: Bot) -> None:
    rid, _ = start(bot)
    bot.codearts.fail_next(500, count=20, path_prefix=f"/v3/jobs/{BACKEND_ID}/history")
    next_poll(bot)
    build = bot.store.get_build(rid)
    assert build.failures == 1 and build.watch == "watching"
    assert build.next_check_at - bot.clock() > POLL + 5  # backed off: twice the poll interval
    bot.codearts.reset()
    next_poll(bot, 2 * POLL + 1)
    assert len(thread_replies(bot, ts_of(bot, rid))) == 1


def test_slack_429_on_the_reply_is_retried_and_posted_once(bot: Bot) -> None:
    rid, _ = start(bot)
    bot.slack.fail("chat.postMessage", status=429, retry_after=1)
    next_poll(bot)
    assert len(thread_replies(bot, ts_of(bot, rid))) == 1


def test_a_reply_slack_would_not_take_is_tried_again_later(bot: Bot) -> None:
    rid, _ = start(bot)
    bot.slack.fail("chat.postMessage", status=500, count=3)  # beyond the SDK's retries
    next_poll(bot)
    assert thread_replies(bot, ts_of(bot, rid)) == []
    assert bot.store.get_build(rid).watch == "reporting"
    next_poll(bot, 31)
    assert len(thread_replies(bot, ts_of(bot, rid))) == 1
    assert bot.store.get_build(rid).watch == "done"


def test_builds_that_never_end_are_let_go_after_24_hours(bot: Bot) -> None:
    bot.codearts.add_job(BACKEND_ID, duration=10**9)
    rid, _ = start(bot)
    next_poll(bot, 24 * 3600 + 1)
    (note,) = thread_replies(bot, ts_of(bot, rid))
    assert "24 hours" in note["text"]
    assert bot.store.get_build(rid).result == "timeout"


def test_stop_button_stops_the_build_and_the_thread_says_so(bot: Bot) -> None:
    bot.codearts.add_job(BACKEND_ID, duration=3600)
    rid, parent = start(bot)
    bot.click(msg.STOP, button_value(parent, msg.STOP), user="UALICE",
              message_ts=ts_of(bot, rid))
    bot.wait_idle()
    assert len(bot.codearts.requests_to(f"/v3/jobs/{BACKEND_ID}/1/stop")) == 1
    next_poll(bot)
    texts = [r["text"] for r in thread_replies(bot, ts_of(bot, rid))]
    assert "asked CodeArts to stop" in texts[0] and "was stopped" in texts[1]


def test_stop_needs_the_same_permission_as_running(bot: Bot) -> None:
    bot.codearts.add_job(BACKEND_ID, duration=3600)
    rid, _parent = start(bot)
    url = bot.slack.response_url()
    bot.click(msg.STOP, rid, user="UMALLORY", response_url=url)
    (reply,) = bot.wait_response(url)
    assert "can't stop this build" in reply["text"] and "may not run" in reply["text"]
    assert reply["replace_original"] is False
    bot.wait_idle()
    assert bot.codearts.requests_to(f"/v3/jobs/{BACKEND_ID}/1/stop") == []


def test_rebuild_asks_again_for_whoever_clicks_and_is_allowed(bot: Bot) -> None:
    rid, _ = start(bot, text="backend codeBranch=develop")
    next_poll(bot)
    bot.slack.usergroups["SDEVS"] = ["UBOB"]
    url = bot.slack.response_url()
    bot.click(msg.REBUILD, rid, user="UBOB", response_url=url)
    (question,) = bot.wait_response(url)
    assert "develop" in question["text"] and question["replace_original"] is False
    new_id = button_value(question, msg.RUN)
    assert new_id != rid
    bot.click(msg.RUN, new_id, user="UBOB", response_url=url)
    bot.slack.wait_for(lambda: len(bot.codearts.requests_to("/v3/jobs/build")) == 2)

    denied = bot.slack.response_url()
    bot.click(msg.REBUILD, rid, user="UMALLORY", response_url=denied)
    assert "may not run" in bot.wait_response(denied)[0]["text"]


def test_a_restarted_bot_resumes_watching_and_reports_once(db_url: str, tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path, poll=POLL) as first:
        first.codearts.add_job(BACKEND_ID, duration=0)
        rid, _ = start(first)
        ts = ts_of(first, rid)
        # a second bot on the same database, as after a crash: the first never polls again
        second = Watcher(first.runtime.engine, poll_seconds=POLL, owner="after-restart",
                         clock=first.clock)
        first.clock.advance(POLL + 1)
        assert second.run_once() == 1
        assert first.runtime.watcher.run_once() == 0
        assert len(thread_replies(first, ts)) == 1
        second.stop()


def test_a_dead_replicas_watches_are_taken_over_after_its_lease(bot: Bot) -> None:
    rid, _ = start(bot)
    bot.clock.advance(POLL + 1)
    dead = bot.store.lease_due(owner="dead-replica", now=bot.clock(), lease_seconds=60, limit=10)
    assert [r.id for r in dead] == [rid]
    assert bot.runtime.watcher.run_once() == 0  # leased to the dead one
    bot.clock.advance(61)
    assert bot.runtime.watcher.run_once() == 1
    assert len(thread_replies(bot, ts_of(bot, rid))) == 1


def test_two_replicas_on_postgresql_report_each_build_once(pg_url: str, tmp_path: Path) -> None:
    with running_bot(pg_url, tmp_path, poll=POLL) as bot:
        bot.codearts.add_job(BACKEND_ID, duration=0)
        ids = [start(bot)[0] for _ in range(12)]
        other = Watcher(bot.runtime.engine, poll_seconds=POLL, owner="replica-2", batch=3,
                        clock=bot.clock)
        ours = bot.runtime.watcher
        ours.batch = 3
        bot.clock.advance(POLL + 1)
        barrier = threading.Barrier(2)

        def drain(w: Watcher) -> None:
            barrier.wait()
            while w.run_once():
                pass

        threads = [threading.Thread(target=drain, args=(w,)) for w in (ours, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for rid in ids:
            assert len(thread_replies(bot, ts_of(bot, rid))) == 1, rid
        # decided from the job's history (a read per pass at most), never one call per build
        assert bot.codearts.requests_to("/v4/jobs/") == []
        assert 1 <= len(bot.codearts.requests_to(f"/v3/jobs/{BACKEND_ID}/history")) < 12
        other.stop()


def test_a_status_word_we_do_not_know_on_an_ended_build_is_reported_at_once(bot: Bot) -> None:
    rid, _ = start(bot)
    bot.codearts.set_status(BACKEND_ID, 1, "TIMEOUT")  # the fake build has a finish time
    next_poll(bot)
    (reply,) = thread_replies(bot, ts_of(bot, rid))
    assert "ended: TIMEOUT" in reply["text"] and reply["text"].startswith("<@UALICE>")
    assert bot.store.get_build(rid).result == "ended:TIMEOUT"



def test_housekeeping_trims_audit_rows_past_their_keep_days(bot: Bot) -> None:
    start(bot)
    assert bot.store.audit_rows()
    bot.clock.advance(91 * 86400)
    bot.runtime.watcher.housekeeping()
    assert bot.store.audit_rows() == []
