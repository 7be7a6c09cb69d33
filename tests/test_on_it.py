"""I'm on it (issue 28): a failure reply carries I'm on it; the first click takes it and the
reply says so (the rest kept); someone else is told alone who has it; the taker's second
click releases it; /build status shows who is on a failed build; a later success of the job
on the same branch closes the claim and says who was on it. Signed clicks into the real
endpoint, the Slack and CodeArts stand-ins on loopback, a real database."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot import messages as msg
from bot.notifier import RESULT_EVENT, Delivery
from bot.store.on_it import Took
from tests.fakes.codearts import FakeCodeArts
from tests.harness import BACKEND_ID, Bot, button_value, running_bot

POLL = 15.0


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path, poll=POLL) as b:
        b.codearts.add_job(BACKEND_ID, outcome="FAILURE", duration=60,
                           log="[INFO] compiling\n[ERROR] boom\n")
        yield b


def run(bot: Bot, text: str = "backend") -> str:
    """Start a build through the whole flow and follow it to its end: its id."""
    before = len(bot.slack.calls("chat.postMessage"))
    rid, url = bot.confirmation(text, user="UALICE")
    bot.click(msg.RUN, rid, user="UALICE", response_url=url)
    bot.slack.wait_for(lambda: len(bot.slack.calls("chat.postMessage")) > before)
    bot.wait_idle()
    for _ in range(5):
        bot.clock.advance(POLL + 1)
        bot.runtime.watcher.run_once()
    assert bot.store.get_build(rid).result is not None
    return rid


def results(bot: Bot) -> list[dict[str, Any]]:
    """The result replies the bot posted, each with the ts Slack gave it."""
    return [{**c.params, "ts": c.ts} for c in bot.slack.all_calls()
            if c.method == "chat.postMessage" and c.ts
            and (c.params.get("metadata") or {}).get("event_type") == RESULT_EVENT]


def reply_of(bot: Bot, rid: str) -> dict[str, Any]:
    (reply,) = [c for c in results(bot) if c["metadata"]["event_payload"]["build_id"] == rid]
    return reply


def edits(bot: Bot, ts: str) -> list[dict[str, Any]]:
    return [u for u in bot.slack.calls("chat.update") if u["ts"] == ts]


def on_it(bot: Bot, rid: str, user: str, channel: str = "CBUILDS") -> list[dict[str, Any]]:
    """Click I'm on it: what the clicker alone was told (nothing when the edit says it)."""
    url = bot.slack.response_url()
    resp = bot.click(msg.ON_IT, rid, user=user, channel=channel, response_url=url)
    assert resp.status_code == 200, resp.text
    bot.wait_idle()
    return bot.slack.responses(url)


def shown(message: dict[str, Any]) -> str:
    return str(message.get("blocks"))


def test_take_is_shown_someone_else_is_told_and_the_taker_releases(bot: Bot) -> None:
    rid = run(bot)
    reply = reply_of(bot, rid)
    assert button_value(reply, msg.ON_IT) == rid and button_value(reply, msg.REBUILD) == rid
    assert on_it(bot, rid, "UBOB") == []  # the edit says it
    (taken,) = edits(bot, reply["ts"])
    assert "<@UBOB> is on it." in shown(taken)
    assert reply["text"] == taken["text"] and "[ERROR] boom" in shown(taken)  # rest kept
    assert button_value(taken, msg.ON_IT) == rid and button_value(taken, msg.REBUILD) == rid
    assert taken["metadata"]["event_payload"]["build_id"] == rid  # still findable
    (told,) = on_it(bot, rid, "UCAROL")
    assert told["response_type"] == "ephemeral" and told["replace_original"] is False
    assert "<@UBOB> is already on it." in told["text"]
    assert len(edits(bot, reply["ts"])) == 1  # nothing changed
    (released,) = on_it(bot, rid, "UBOB")
    assert "no longer on this" in released["text"]
    back = edits(bot, reply["ts"])[-1]
    assert "is on it" not in shown(back) and "[ERROR] boom" in shown(back)
    assert bot.store.failure_reply(rid).taker is None
    decisions = [r["decision"] for r in bot.store.audit_rows(request_id=rid)]
    assert "on_it_taken" in decisions and "on_it_released" in decisions


def test_one_taker_however_many_click_at_once(bot: Bot) -> None:
    rid = run(bot)
    users = [f"U{i:03d}" for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        took = list(pool.map(lambda u: bot.store.take_or_release(
            build_id=rid, user_id=u, now=bot.clock()), users))
    assert took.count(Took.TAKEN) == 1 and took.count(Took.HELD) == 7
    assert bot.store.failure_reply(rid).taker == users[took.index(Took.TAKEN)]


def test_status_shows_who_is_on_a_failed_build(bot: Bot) -> None:
    rid = run(bot)
    on_it(bot, rid, "UBOB")
    resp, url = bot.command("status backend", user="UALICE")
    said = bot.reply(resp, url)
    bot.wait_idle()
    (line,) = [line for line in said["text"].splitlines() if line.startswith("•")]
    assert "failed" in line and line.endswith("<@UBOB> is on it")
    on_it(bot, rid, "UBOB")  # released: no longer shown
    resp, url = bot.command("status backend", user="UALICE")
    assert "is on it" not in bot.reply(resp, url)["text"]


def test_a_later_success_on_the_branch_closes_the_claim(bot: Bot) -> None:
    failed = run(bot, "backend codeBranch=master")
    other = run(bot, "backend codeBranch=release/1")
    on_it(bot, failed, "UBOB")
    on_it(bot, other, "UCAROL")
    bot.codearts.add_job(BACKEND_ID, outcome="SUCCESS", duration=60)
    notifier = bot.runtime.engine.notifier
    real_post = notifier.post
    seen: list[str | None] = []  # who was on it, as the success's result is posted

    def post(channel: str, message: dict[str, Any], **kw: Any) -> Any:
        build_id = ((message.get("metadata") or {}).get("event_payload") or {}).get("build_id")
        if (message.get("metadata") or {}).get("event_type") == RESULT_EVENT:
            build = bot.store.get_build(build_id)
            seen.append(bot.store.claim_closed_by(BACKEND_ID, "master", build.build_no))
        return real_post(channel, message, **kw)

    notifier.post = post  # type: ignore[method-assign]
    fixed = run(bot, "backend codeBranch=master")
    build_no = bot.store.get_build(fixed).build_no
    assert seen == ["UBOB"]  # closed before the success's messages: they can say who
    assert bot.store.claim_closed_by(BACKEND_ID, "master", build_no) == "UBOB"
    assert bot.store.claim_closed_by(BACKEND_ID, "release/1", build_no) is None
    (told,) = on_it(bot, failed, "UBOB")  # closed: nothing to take or release
    assert "has succeeded since" in told["text"] and f"#{build_no}" in told["text"]
    assert bot.store.failure_reply(other).taker == "UCAROL"  # another branch: still open


def test_a_forged_value_another_channel_or_an_unknown_failure_changes_nothing(
        bot: Bot) -> None:
    rid = run(bot)
    url = bot.slack.response_url()
    bot.click(msg.ON_IT, "../../etc", user="UBOB", response_url=url)
    (said,) = bot.wait_response(url)
    assert "no longer valid" in said["text"]
    (said,) = on_it(bot, rid, "UBOB", channel="COTHER")
    assert "another channel" in said["text"]
    (said,) = on_it(bot, "e" * 32, "UBOB")
    assert "no longer knows this failure" in said["text"]
    assert bot.store.failure_reply(rid).taker is None and bot.slack.calls("chat.update")[-1]


def test_a_success_reply_has_no_on_it(bot: Bot) -> None:
    bot.codearts.add_job(BACKEND_ID, outcome="SUCCESS", duration=60)
    rid = run(bot)
    assert msg.ON_IT not in shown(reply_of(bot, rid))
    assert bot.store.failure_reply(rid) is None


def test_a_followed_builds_failure_post_carries_on_it(bot: Bot) -> None:
    resp, url = bot.command("subscribe backend failures", user="UALICE")
    bot.reply(resp, url)
    bot.wait_idle()
    answer = httpx.post(bot.codearts.url + "/v3/jobs/build", json={"job_id": BACKEND_ID},
                        headers={"X-Auth-Token": FakeCodeArts.token})
    assert answer.status_code == 200
    for _ in range(6):
        bot.clock.advance(POLL + 1)
        bot.runtime.watcher.run_once()
    (post,) = results(bot)
    build_id = button_value(post, msg.ON_IT)
    assert on_it(bot, build_id, "UBOB") == []
    (taken,) = edits(bot, post["ts"])
    assert "<@UBOB> is on it." in shown(taken)
    assert "started by buildbot in CodeArts" in taken["text"]


def test_an_edit_slack_did_not_take_is_made_later_by_the_watcher(bot: Bot) -> None:
    rid = run(bot)
    ts = reply_of(bot, rid)["ts"]
    notifier = bot.runtime.engine.notifier
    real_update = notifier.update
    # Slack too busy for the edit (no budget left within its wait: a passing error)
    notifier.update = lambda *a, **k: Delivery(False, error="ratelimited")  # type: ignore
    assert on_it(bot, rid, "UBOB") == []
    assert bot.store.failure_reply(rid).taker == "UBOB" and edits(bot, ts) == []
    bot.runtime.watcher.run_once()
    assert edits(bot, ts) == []  # a click's own edit may still be under way: left alone
    notifier.update = real_update  # type: ignore[method-assign]
    bot.clock.advance(200)
    bot.runtime.watcher.run_once()
    (edited,) = edits(bot, ts)
    assert "<@UBOB> is on it." in shown(edited)
    bot.clock.advance(200)
    bot.runtime.watcher.run_once()
    assert len(edits(bot, ts)) == 1  # shown now: not edited again
