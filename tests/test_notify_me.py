"""Notify me (issue 28): a running build's channel message carries a Notify me button; a
click answers the clicker alone and a second one undoes it; when the build ends each person
who asked gets one DM (result, duration, a link to the thread), never lost or doubled by a
restart or a second process. Signed clicks into the real endpoint, the Slack and CodeArts
stand-ins on loopback, a real database; time moves through the harness clock."""

from __future__ import annotations

import concurrent.futures
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from slack_sdk import WebClient

from bot import messages as msg
from bot.notifier import NOTIFY_EVENT, tagged
from bot.store import Store
from bot.store.notify import NotifyRow
from tests.fakes.codearts import FakeCodeArts
from tests.harness import BACKEND_ID, BOT_TOKEN, Bot, button_value, running_bot

POLL = 15.0


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path, poll=POLL) as b:
        b.codearts.add_job(BACKEND_ID, duration=60)  # ends at the second poll (end)
        yield b


def start(bot: Bot, user: str = "UALICE") -> tuple[str, dict[str, Any]]:
    """Run a build through the whole flow: its id and its channel message."""
    rid, url = bot.confirmation("backend", user=user)
    bot.click(msg.RUN, rid, user=user, response_url=url)
    post = bot.slack.wait_for(lambda: [p for p in bot.slack.calls("chat.postMessage")
                                       if not p.get("thread_ts")])
    bot.wait_idle()
    return rid, post[0]


def notify(bot: Bot, build_id: str, user: str, channel: str = "CBUILDS") -> dict[str, Any]:
    """Click Notify me: what the clicker alone was told."""
    url = bot.slack.response_url()
    resp = bot.click(msg.NOTIFY, build_id, user=user, channel=channel, response_url=url)
    assert resp.status_code == 200, resp.text
    (said,) = bot.wait_response(url)
    bot.wait_idle()
    return said


def dms(bot: Bot, user: str | None = None) -> list[dict[str, Any]]:
    return [c for c in bot.slack.calls("chat.postMessage")
            if (c.get("metadata") or {}).get("event_type") == NOTIFY_EVENT
            and (user is None or c["channel"] == "D" + user[1:])]


def end(bot: Bot, rid: str) -> None:
    """The build ends in CodeArts (after its minute) and the watcher reports it."""
    for _ in range(5):
        bot.clock.advance(POLL + 1)
        bot.runtime.watcher.run_once()
        if bot.store.get_build(rid).result is not None:
            return
    raise AssertionError("the build did not end")


def test_the_running_message_carries_notify_me_and_the_result_drops_it(bot: Bot) -> None:
    rid, post = start(bot)
    assert button_value(post, msg.NOTIFY) == rid
    end(bot, rid)
    update = bot.slack.calls("chat.update")[-1]
    assert "succeeded" in update["text"]
    assert msg.NOTIFY not in str(update["blocks"])


def test_a_click_answers_the_clicker_alone_and_a_second_undoes_it(bot: Bot) -> None:
    rid, _ = start(bot)
    daily = bot.store.get_build(rid).daily_build_number
    said = notify(bot, rid, "UBOB")
    assert said["response_type"] == "ephemeral" and said["replace_original"] is False
    assert "You'll get a DM when *backend*" in said["text"] and daily in said["text"]
    assert bot.store.notify_rows(rid) == [("UBOB", "wanted")]
    said = notify(bot, rid, "UBOB")
    assert "You won't get a DM" in said["text"] and said["replace_original"] is False
    assert bot.store.notify_rows(rid) == []
    end(bot, rid)
    assert dms(bot) == []  # undone: no DM
    decisions = [r["decision"] for r in bot.store.audit_rows(request_id=rid)]
    assert "notify_on" in decisions and "notify_off" in decisions


def test_each_person_who_asked_gets_one_dm_with_result_duration_and_thread(bot: Bot) -> None:
    bot.codearts.add_job(BACKEND_ID, outcome="FAILURE", duration=60)
    rid, _post = start(bot)
    notify(bot, rid, "UBOB")
    notify(bot, rid, "UCAROL")
    end(bot, rid)
    for user in ("UBOB", "UCAROL"):
        (dm,) = dms(bot, user)
        assert "failed" in dm["text"] and "*backend*" in dm["text"]
        shown = str(dm["blocks"])
        ts = bot.store.get_build(rid).message_ts
        assert f"archives/CBUILDS/p{ts.replace('.', '')}" in shown  # the thread's link
        assert "failed in 1 min 0 s" in dm["text"]  # the duration
    assert bot.slack.calls("conversations.open") and bot.slack.calls("chat.getPermalink")
    # the requester keeps the thread reply with the mention, and no DM they did not ask for
    replies = [c for c in bot.slack.calls("chat.postMessage") if c.get("thread_ts")]
    assert replies and replies[0]["text"].startswith("<@UALICE>")
    assert dms(bot, "UALICE") == []
    for _ in range(3):
        bot.clock.advance(POLL + 1)
        bot.runtime.watcher.run_once()
    assert len(dms(bot)) == 2
    assert sorted(bot.store.notify_rows(rid)) == [("UBOB", "sent"), ("UCAROL", "sent")]


def test_a_click_on_an_ended_build_changes_nothing(bot: Bot) -> None:
    rid, _ = start(bot)
    end(bot, rid)
    said = notify(bot, rid, "UBOB")
    assert "has already ended" in said["text"]
    assert bot.store.notify_rows(rid) == [] and dms(bot) == []


def test_a_forged_value_or_another_channel_is_refused(bot: Bot) -> None:
    rid, _ = start(bot)
    url = bot.slack.response_url()
    bot.click(msg.NOTIFY, "not-a-build<!channel>", user="UBOB", response_url=url)
    (said,) = bot.wait_response(url)
    assert "no longer valid" in said["text"]
    said = notify(bot, rid, "UBOB", channel="COTHER")
    assert "another channel" in said["text"]
    said = notify(bot, "f" * 32, "UBOB")
    assert "no longer followed" in said["text"]
    assert bot.store.notify_rows(rid) == []


def test_a_followed_build_carries_notify_me_and_sends_the_dm(db_url: str,
                                                             tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path, poll=POLL) as bot:
        bot.codearts.add_job(BACKEND_ID, duration=3600)
        resp, url = bot.command("subscribe backend", user="UALICE")
        bot.reply(resp, url)
        bot.wait_idle()
        answer = httpx.post(bot.codearts.url + "/v3/jobs/build", json={"job_id": BACKEND_ID},
                            headers={"X-Auth-Token": FakeCodeArts.token})
        build_no = str(answer.json()["actual_build_number"])
        bot.clock.advance(POLL + 1)
        bot.runtime.watcher.run_once()
        (post,) = [p for p in bot.slack.calls("chat.postMessage") if not p.get("thread_ts")
                   and "started by buildbot in CodeArts" in p["text"]]
        build_id = button_value(post, msg.NOTIFY)
        assert "You'll get a DM" in notify(bot, build_id, "UBOB")["text"]
        bot.codearts.set_status(BACKEND_ID, int(build_no), "SUCCESS")
        bot.clock.advance(POLL + 1)
        bot.runtime.watcher.run_once()
        (dm,) = dms(bot, "UBOB")
        daily = bot.codearts.builds(BACKEND_ID)[int(build_no) - 1].daily
        assert "succeeded" in dm["text"] and daily and daily in dm["text"]  # its daily number


# --- once only: restarts and a second process ------------------------------------------------

def _dead_store(bot: Bot) -> Store:
    """The store as a process that claimed a DM and then died (its heartbeat stopped)."""
    bot.store.beat(id="deadproc", now=bot.clock() - 3600, host="h", pid=1)
    return Store(bot.store.engine, owner="deadproc")


def _claimed_by_the_dead(bot: Bot, rid: str, user: str) -> tuple[NotifyRow, int]:
    dead = _dead_store(bot)
    (row,) = dead.notify_due(now=bot.clock(), stale_after=120.0, build_id=rid)
    tries = dead.claim_notify(row, now=bot.clock(), stale_after=120.0)
    assert tries is not None
    assert dead.set_notify_channel(row, tries=tries, channel="D" + user[1:])
    return row, tries


def _ended_with(bot: Bot, rid: str, users: tuple[str, ...]) -> None:
    """The build ends with ``users`` asking, while the DMs are not sent yet (a process that
    died before its report's DMs)."""
    for user in users:
        notify(bot, rid, user)
    sender = bot.runtime.engine.notify
    sender.alive = lambda: False  # like a process that missed its beats: it sends nothing
    try:
        end(bot, rid)
    finally:
        sender.alive = lambda: True
    assert dms(bot) == []


def test_a_dm_sent_by_a_process_that_died_before_marking_it_is_not_sent_again(
        bot: Bot) -> None:
    rid, _ = start(bot)
    _ended_with(bot, rid, ("UBOB",))
    _claimed_by_the_dead(bot, rid, "UBOB")
    # the dead process's DM reached Slack; its answer never came back to be recorded
    WebClient(token=BOT_TOKEN, base_url=bot.slack.api_url).chat_postMessage(
        channel="DBOB", **tagged({"text": "result"}, NOTIFY_EVENT, rid))
    bot.clock.advance(1)
    bot.runtime.watcher.run_once()
    assert len(dms(bot, "UBOB")) == 1  # found, not sent again
    assert bot.store.notify_rows(rid) == [("UBOB", "sent")]
    assert bot.slack.calls("conversations.history")


def test_a_dm_claimed_by_a_process_that_died_before_posting_is_sent_once(bot: Bot) -> None:
    rid, _ = start(bot)
    _ended_with(bot, rid, ("UBOB",))
    _claimed_by_the_dead(bot, rid, "UBOB")
    bot.clock.advance(1)
    bot.runtime.watcher.run_once()
    bot.runtime.watcher.run_once()
    (dm,) = dms(bot, "UBOB")
    assert "succeeded" in dm["text"]
    assert bot.store.notify_rows(rid) == [("UBOB", "sent")]


def test_a_live_claim_is_left_alone_until_its_grace_ends(bot: Bot) -> None:
    rid, _ = start(bot)
    _ended_with(bot, rid, ("UBOB",))
    live = Store(bot.store.engine, owner="liveproc")
    live.beat(id="liveproc", now=bot.clock(), host="h", pid=2)
    (row,) = live.notify_due(now=bot.clock(), stale_after=120.0, build_id=rid)
    assert live.claim_notify(row, now=bot.clock(), stale_after=120.0) is not None
    bot.runtime.watcher.run_once()
    assert dms(bot) == []  # its owner lives and may be posting it
    bot.clock.advance(200)  # longer than any live post: handed over, looked for, sent
    bot.runtime.watcher.run_once()
    assert len(dms(bot, "UBOB")) == 1


def test_many_senders_at_once_send_each_dm_once(bot: Bot) -> None:
    rid, _ = start(bot)
    users = ("UBOB", "UCAROL", "UDAVE")
    _ended_with(bot, rid, users)
    notifier = bot.runtime.engine.notify
    bot.runtime.heartbeat.beat()  # alive now by the moved clock: its claims are its own
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _i: notifier.send_due(rid), range(4)))
    assert sorted(c["channel"] for c in dms(bot)) == ["DBOB", "DCAROL", "DDAVE"]


def test_a_passing_refusal_is_retried_and_a_final_one_given_up(bot: Bot) -> None:
    rid, _ = start(bot)
    notify(bot, rid, "UBOB")
    notify(bot, rid, "UCAROL")
    bot.slack.error("conversations.open", "ratelimited")  # passing: BOB's is tried again
    bot.slack.error("conversations.open", "user_not_found")  # final: CAROL's is given up
    end(bot, rid)
    assert dms(bot) == []
    bot.clock.advance(31)
    bot.runtime.watcher.run_once()
    assert len(dms(bot, "UBOB")) == 1 and dms(bot, "UCAROL") == []
    assert sorted(bot.store.notify_rows(rid)) == [("UBOB", "sent"), ("UCAROL", "failed")]



class Killed(Exception):
    """The process died here (nothing after this line of it ran)."""


@pytest.mark.parametrize("dies", ["after Slack took the DM", "before the DM was posted"])
def test_a_restart_sends_each_dm_once(db_url: str, tmp_path: Path, dies: str) -> None:
    """The first process is killed while sending a DM (after Slack took it, before it was
    marked sent; or before posting it); the second (a restart: the same database, fresh
    memory) sends it exactly once: it reads the DM conversation back first."""
    (tmp_path / "two").mkdir()
    with running_bot(db_url, tmp_path, poll=POLL) as one, \
            running_bot(db_url, tmp_path / "two", poll=POLL,
                        codearts_endpoint=one.codearts.url,
                        slack_api_url=one.slack.api_url) as two:
        one.codearts.add_job(BACKEND_ID, duration=60)
        rid, _ = start(one)
        notify(one, rid, "UBOB")
        notifier = one.runtime.engine.notifier
        real_post = notifier.post

        def post(channel: str, message: dict[str, Any], **kw: Any) -> Any:
            is_dm = (message.get("metadata") or {}).get("event_type") == NOTIFY_EVENT
            if is_dm and dies == "before the DM was posted":
                raise Killed
            sent = real_post(channel, message, **kw)
            if is_dm:
                raise Killed  # Slack took it; the process died before hearing so
            return sent

        notifier.post = post  # type: ignore[method-assign]
        end(one, rid)  # the report is finished; the DM's sender dies in the middle
        assert [r[1] for r in one.store.notify_rows(rid)] == ["sending"]
        assert len(dms(one)) == (1 if dies == "after Slack took the DM" else 0)
        one.runtime.heartbeat.stop(clean=False)
        # the restart, past the grace of a claim whose owner may still be posting
        two.clock.advance(one.clock.offset + 200)
        two.runtime.watcher.run_once()
        two.clock.advance(POLL + 1)
        two.runtime.watcher.run_once()
        (dm,) = dms(one, "UBOB")
        assert "succeeded" in dm["text"]
        assert two.store.notify_rows(rid) == [("UBOB", "sent")]


def test_two_replicas_on_postgresql_send_each_dm_once(pg_url: str, tmp_path: Path) -> None:
    """Two live replicas on one database: both pass at once, over and over, after the
    builds end; each person who asked gets one DM per build."""
    (tmp_path / "two").mkdir()
    with running_bot(pg_url, tmp_path, poll=POLL) as one, \
            running_bot(pg_url, tmp_path / "two", poll=POLL,
                        codearts_endpoint=one.codearts.url,
                        slack_api_url=one.slack.api_url) as two:
        one.codearts.add_job(BACKEND_ID, duration=60)
        builds = [start(one)[0] for _ in range(3)]
        users = ("UBOB", "UCAROL", "UDAVE", "UERIN")
        for rid in builds:
            for user in users:
                notify(one, rid, user)

        def both() -> None:
            for replica in (one, two):
                replica.clock.advance(POLL + 1)
                replica.runtime.heartbeat.beat()  # both alive by their moved clocks
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda r: r.runtime.watcher.run_once(), (one, two)))

        for _ in range(6):
            both()
        assert all(one.store.get_build(rid).result == "success" for rid in builds)
        for user in users:
            sent = dms(one, user)
            assert len(sent) == 3
            assert {d["metadata"]["event_payload"]["build_id"] for d in sent} == set(builds)


@pytest.mark.parametrize("held", ["chat.postMessage", "conversations.open"])
def test_killed_while_sending_a_dm_then_restarted(
        stand_ins: tuple[Any, FakeCodeArts], tmp_path: Path, db_url: str, held: str) -> None:
    """``python -m bot`` is killed (SIGKILL) while Slack holds the answer to the DM it took
    (or to opening the DM conversation); after a restart the DM is there exactly once."""
    from tests.harness import SECRET
    from tests.slack_requests import SlackSender
    from tests.test_crash_process import bot_at, channel_posts, crash_env, run_backend, settle

    slack, codearts = stand_ins
    codearts.add_job(BACKEND_ID, duration=4)  # long enough to click Notify me
    env, url = crash_env(stand_ins, tmp_path, db_url)

    def to_bob() -> list[dict[str, Any]]:
        return [c for c in slack.calls("chat.postMessage") if c.get("channel") == "DBOB"]

    with bot_at(env, url, stop=signal.SIGKILL):
        slack.accept_slowly(held, 60, channel="DBOB" if held == "chat.postMessage" else None)
        run_backend(slack, url)
        (post,) = slack.wait_for(lambda: channel_posts(slack), 10)
        hook = slack.response_url()
        SlackSender(url + "/slack/events", SECRET).click(
            msg.NOTIFY, button_value(post, msg.NOTIFY), user="UBOB", channel="CBUILDS",
            response_url=hook)
        (said,) = slack.wait_for(lambda: slack.responses(hook), 10)
        assert "You'll get a DM" in said["text"]
        slack.wait_for(lambda: slack.calls(held), 30)  # Slack has it; no answer yet

    with bot_at(env, url):
        slack.wait_for(to_bob, 30)
        if held == "chat.postMessage":  # it looked before posting again
            slack.wait_for(lambda: [c for c in slack.calls("conversations.history")
                                    if c.get("channel") == "DBOB"], 30)
        settle(slack, url)
        (dm,) = to_bob()
        assert "succeeded" in dm["text"]
        assert dm["metadata"]["event_payload"]["build_id"] == \
            post["metadata"]["event_payload"]["build_id"]
