"""Live progress in the channel message, and the log tail in a failure's thread reply, end
to end: signed requests into the bot, FakeCodeArts reporting steps and a log, FakeSlack
recording every chat.update body, a real database. Time moves through the clock seam."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import messages as msg
from bot.lifecycle import Lease
from tests.harness import BACKEND_ID, DOCS_ID, Bot, running_bot

STEPS = ["Checkout", "Build image", "Push image"]


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path) as b:
        b.codearts.add_job(BACKEND_ID, duration=3600, steps=STEPS)
        yield b


def start_backend(bot: Bot, text: str = "backend") -> str:
    """Type, confirm, Run; wait until the channel message's ts is saved. The build id."""
    rid, url = bot.confirmation(text)
    assert bot.click(msg.RUN, rid, response_url=url).status_code == 200
    bot.wait_idle()
    bot.slack.wait_for(lambda: (b := bot.store.get_build(rid)) is not None and b.message_ts)
    return rid


def tick(bot: Bot, seconds: float = 16.0) -> None:
    bot.clock.advance(seconds)
    bot.runtime.watcher.run_once()


def updates(bot: Bot, ts: str | None = None) -> list[dict[str, Any]]:
    return [c for c in bot.slack.calls("chat.update") if ts is None or c["ts"] == ts]


def shown(message: dict[str, Any]) -> str:
    """Everything a person reads in a message: its text and its blocks' texts."""
    parts = [message.get("text", "")]
    for block in message.get("blocks") or []:
        if block.get("type") == "section":
            parts.append(block["text"]["text"])
        elif block.get("type") == "context":
            parts += [e["text"] for e in block["elements"]]
    return "\n".join(parts)


def steps(running: int, *, failed: bool = False) -> list[dict[str, Any]]:
    """The three steps with ``running`` (1-based) running (or failed), those before done."""
    return [{"name": name, "status": ("success" if i + 1 < running else
                                      ("error" if failed else "running") if i + 1 == running
                                      else ""), "build_time": 1000}
            for i, name in enumerate(STEPS)]


def thread_replies(bot: Bot) -> list[dict[str, Any]]:
    return [c for c in bot.slack.calls("chat.postMessage") if c.get("thread_ts")]


# --- progress -------------------------------------------------------------------------

def test_the_message_shows_steps_then_the_result_and_the_failure_reply_the_tail(
        bot: Bot) -> None:
    rid = start_backend(bot)
    ts = bot.store.get_build(rid).message_ts
    bot.codearts.set_steps(BACKEND_ID, 1, steps(2))
    tick(bot)
    (first,) = updates(bot, ts)
    assert "step 2 of 3: Build image" in shown(first)
    assert "Running for less than a minute" in shown(first)
    assert first["metadata"]["event_payload"]["build_id"] == rid  # still findable
    assert bot.store.get_build(rid).progress_text.endswith("step 2 of 3: Build image")

    tick(bot)  # same step, same minute: nothing to say
    assert len(updates(bot, ts)) == 1

    bot.codearts.set_steps(BACKEND_ID, 1, steps(3))
    tick(bot, 45)
    assert "Running for over 1 min · step 3 of 3: Push image" in shown(updates(bot, ts)[-1])

    bot.codearts.set_steps(BACKEND_ID, 1, steps(3, failed=True))
    bot.codearts.set_log(BACKEND_ID, 1, "".join(f"line {i}\n" for i in range(100)) + (
        "\x1b[31mERROR\x1b[0m push refused\n"
        "curl -H 'X-Auth-Token: MIIsecretsecretsecret' https://registry\n"
        "password=hunter2 ```not a fence```\n"))
    bot.codearts.set_status(BACKEND_ID, 1, "FAILED")
    tick(bot, 60)
    (reply,) = thread_replies(bot)
    assert reply["thread_ts"] == ts
    text = shown(reply)
    assert "failed" in text and "<@UALICE>" in text
    assert "line 99" in text and "line 60" not in text  # the last 30 lines only
    assert "ERROR push refused" in text and "\x1b" not in text
    assert "MIIsecret" not in text and "hunter2" not in text and "****" in text
    block = next(b["text"]["text"] for b in reply["blocks"] if b["type"] == "section"
                 and b["text"]["text"].startswith("```"))
    assert block.count("```") == 2  # the log's own backticks cannot close the block
    done = updates(bot, ts)[-1]
    assert "failed" in shown(done) and "Running for" not in shown(done)
    assert done["blocks"][-1]["block_id"] == "buildbot.done"
    tick(bot, 60)  # nothing more: the reply is posted once, the message not touched again
    assert len(thread_replies(bot)) == 1 and updates(bot, ts)[-1] == done


def test_steps_advancing_with_the_build_and_a_success_without_a_tail(bot: Bot) -> None:
    bot.codearts.add_job(BACKEND_ID, duration=3600, steps=STEPS)
    rid = start_backend(bot)
    ts = bot.store.get_build(rid).message_ts
    tick(bot)
    assert "step 1 of 3: Checkout" in shown(updates(bot, ts)[-1])  # the fake's own steps
    bot.codearts.set_status(BACKEND_ID, 1, "SUCCESS")
    tick(bot)
    (reply,) = thread_replies(bot)
    assert "succeeded" in shown(reply) and "```" not in shown(reply)
    assert bot.codearts.requests_to(f"/v3/jobs/{BACKEND_ID}/1/real-time-log") == []


def test_a_failing_steps_call_leaves_the_elapsed_time(bot: Bot) -> None:
    rid = start_backend(bot)
    ts = bot.store.get_build(rid).message_ts
    bot.codearts.fail_next(500, path_prefix=f"/v3/jobs/{BACKEND_ID}/1/history-details")
    tick(bot, 75)
    (update,) = updates(bot, ts)
    assert "Running for over 1 min" in shown(update) and "step" not in shown(update)
    build = bot.store.get_build(rid)
    assert build.failures == 0  # a progress problem is never a status failure
    assert len(bot.codearts.requests_to(f"/v3/jobs/{BACKEND_ID}/1/history-details")) == 1


def test_no_update_when_nothing_changed_and_at_most_one_per_interval(bot: Bot) -> None:
    rid = start_backend(bot)
    ts = bot.store.get_build(rid).message_ts
    bot.codearts.set_steps(BACKEND_ID, 1, steps(1))
    tick(bot)
    assert len(updates(bot, ts)) == 1
    tick(bot, 15)  # the same words: no update
    assert len(updates(bot, ts)) == 1
    bot.codearts.set_steps(BACKEND_ID, 1, steps(2))
    tick(bot, 45)  # the steps are read again (every 60 s) and the new one shown
    assert "step 2 of 3" in shown(updates(bot, ts)[-1]) and len(updates(bot, ts)) == 2
    assert len(bot.codearts.requests_to(f"/v3/jobs/{BACKEND_ID}/1/history-details")) == 2
    # a change right after an update waits for the interval (here another holder leased
    # the build early and found the step changed)
    bot.codearts.set_steps(BACKEND_ID, 1, steps(3))
    (held,) = bot.store.lease_due(owner="probe", now=bot.runtime.clock() + 100,
                                  lease_seconds=60, limit=10)
    bot.runtime.engine.progress(held, Lease("probe", held.lease_token, 60))
    assert len(updates(bot, ts)) == 2


def test_a_429_pauses_chat_update_for_all_and_the_result_comes_first(bot: Bot) -> None:
    """Slack limits chat.update per workspace, so a 429 on one message's progress pauses
    every chat.update (the Slack budget). Nothing waits for Retry-After in a worker; the
    other build's result reply (chat.postMessage) goes out at once; its message is
    updated once the pause is over, and then the slow message's progress."""
    slow = start_backend(bot)  # polled first (t=16)
    slow_ts = bot.store.get_build(slow).message_ts
    bot.clock.advance(10)
    bot.command("docs", user="UANYONE", channel="CRANDOM")  # first checked at t=25
    bot.wait_idle()
    other = bot.slack.wait_for(lambda: [b for b in _builds(bot) if b.job_id == DOCS_ID
                                        and b.message_ts])[0]
    bot.codearts.set_steps(BACKEND_ID, 1, steps(1))
    bot.slack.fail("chat.update", status=429, body={"ok": False, "error": "ratelimited"},
                   retry_after=120)
    began = time.monotonic()
    tick(bot, 6)  # t=16: only the slow one is due; its update gets the 429
    assert time.monotonic() - began < 10  # nobody waited for Retry-After
    build = bot.store.get_build(slow)
    assert build.progress_text is None
    assert build.progress_due_at >= bot.runtime.clock() + 100
    bot.codearts.set_status(DOCS_ID, 1, "SUCCESS")
    tick(bot, 16)  # t=32: both due; the other one ends, the slow one waits
    (reply,) = thread_replies(bot)
    assert reply["thread_ts"] == other.message_ts and "succeeded" in shown(reply)
    assert updates(bot) == []  # nothing is sent into the pause
    assert bot.store.get_build(other.id).watch == "reporting"  # finished later
    tick(bot, 120)  # the pause is over: the result's message first, then progress
    assert len(updates(bot, other.message_ts)) == 1
    assert "succeeded" in shown(updates(bot, other.message_ts)[0])
    assert len(thread_replies(bot)) == 1  # the result was found in its thread, not reposted
    tick(bot, 16)
    assert "step 1 of 3: Checkout" in shown(updates(bot, slow_ts)[-1])
    assert bot.slack.refused() == []


def _builds(bot: Bot) -> list[Any]:
    import sqlalchemy as sa

    from bot.lifecycle import Build
    from bot.store import builds

    with bot.store.engine.connect() as c:
        return [Build.from_row(r) for r in c.execute(sa.select(builds)).mappings()]


def test_a_holder_whose_lease_passed_never_updates_the_message(bot: Bot) -> None:
    rid = start_backend(bot)
    ts = bot.store.get_build(rid).message_ts
    bot.codearts.set_steps(BACKEND_ID, 1, steps(2))
    now = bot.runtime.clock() + 20
    (mine,) = bot.store.lease_due(owner="old", now=now, lease_seconds=5, limit=10)
    # the old holder froze; its lease ran out and another replica took the build over
    (theirs,) = bot.store.lease_due(owner="new", now=now + 10, lease_seconds=60, limit=10)
    assert theirs.lease_token != mine.lease_token
    bot.clock.advance(30)
    bot.runtime.engine.poll(mine, Lease("old", mine.lease_token, 5))
    assert updates(bot, ts) == []
    assert bot.store.get_build(rid).progress_text is None


def test_a_holder_whose_lease_passed_unclaimed_still_posts_the_result_once(
        bot: Bot) -> None:
    """A result that waited behind Slack's budget longer than its lease (at 50 updates a
    minute, a burst of results does): nobody leased the build since (its token is the
    same), so the holder renews the lease and posts, once, instead of dropping it until
    the lease's grace runs out (bench.slack_limits found results waiting minutes so)."""
    rid = start_backend(bot)
    ts = bot.store.get_build(rid).message_ts
    now = bot.runtime.clock() + 20
    (mine,) = bot.store.lease_due(owner="old", now=now, lease_seconds=5, limit=10)
    bot.clock.advance(3600)  # the build ended; the lease passed; nobody took it
    bot.runtime.engine.poll(mine, Lease("old", mine.lease_token, 5))
    (reply,) = thread_replies(bot)
    assert reply["thread_ts"] == ts
    assert bot.store.get_build(rid).watch.value == "done"
    tick(bot, 600)  # nothing is posted again
    assert len(thread_replies(bot)) == 1


def test_progress_off(db_url: str, tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path, progress_update_seconds=0) as bot:
        bot.codearts.add_job(BACKEND_ID, duration=3600, steps=STEPS)
        rid = start_backend(bot)
        tick(bot)
        tick(bot, 120)
        assert updates(bot) == []
        assert bot.codearts.requests_to(f"/v3/jobs/{BACKEND_ID}/1/history-details") == []
        assert bot.store.get_build(rid).watch.value == "watching"


# --- the log tail ---------------------------------------------------------------------

def test_an_unreadable_log_is_one_line_and_the_result_is_still_posted(bot: Bot) -> None:
    rid = start_backend(bot)
    bot.codearts.fail_next(403, path_prefix=f"/v3/jobs/{BACKEND_ID}/1/real-time-log")
    bot.codearts.set_status(BACKEND_ID, 1, "ABORTED")
    tick(bot)
    (reply,) = thread_replies(bot)
    text = shown(reply)
    assert "was stopped" in text
    assert "The build log could not be read (CodeArts answered HTTP 403, request ID `" in text
    assert "```" not in text
    assert bot.store.get_build(rid).watch.value == "done"


def test_a_stopped_build_gets_the_tail_with_a_link_to_the_full_log(
        db_url: str, tmp_path: Path) -> None:
    template = "https://console.example.com/build/{job_id}/{build_no}"
    with running_bot(db_url, tmp_path, build_link_template=template, log_tail_lines=3) as bot:
        bot.codearts.add_job(BACKEND_ID, duration=3600)
        start_backend(bot)
        bot.codearts.set_log(BACKEND_ID, 1, "one\ntwo\nthree\nfour\nfive")
        bot.codearts.set_status(BACKEND_ID, 1, "ABORTED")
        tick(bot)
        (reply,) = thread_replies(bot)
        text = shown(reply)
        assert "```\nthree\nfour\nfive\n```" in text and "two" not in text
        assert f"<https://console.example.com/build/{BACKEND_ID}/1|Full log in CodeArts>" in text


def test_log_tail_off(db_url: str, tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path, log_tail_lines=0) as bot:
        bot.codearts.add_job(BACKEND_ID, duration=3600)
        start_backend(bot)
        bot.codearts.set_status(BACKEND_ID, 1, "FAILED")
        tick(bot)
        (reply,) = thread_replies(bot)
        assert "failed" in shown(reply) and "log" not in shown(reply)
        assert bot.codearts.requests_to(f"/v3/jobs/{BACKEND_ID}/1/real-time-log") == []


def test_a_report_retry_reads_the_tail_again_and_posts_once(bot: Bot) -> None:
    rid = start_backend(bot)
    bot.codearts.set_log(BACKEND_ID, 1, "boom\n")
    bot.codearts.set_status(BACKEND_ID, 1, "FAILED")
    bot.slack.error("chat.postMessage", "internal_error")  # the first reply attempt fails
    tick(bot)
    assert thread_replies(bot) == []
    assert bot.store.get_build(rid).watch.value == "reporting"
    tick(bot, 60)  # the retry looks in the thread, reads the log again and posts
    (reply,) = thread_replies(bot)
    assert "boom" in shown(reply)
    assert len(bot.codearts.requests_to(f"/v3/jobs/{BACKEND_ID}/1/real-time-log")) == 2
    tick(bot, 900)
    assert len(thread_replies(bot)) == 1
