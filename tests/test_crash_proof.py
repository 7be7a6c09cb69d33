"""Posts whose outcome Slack did not confirm, and replicas that freeze: every build is
announced once and its result posted once. Through the real endpoint, the stand-ins
and a real database."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import messages as msg
from bot.lifecycle import Lease, WatchState
from bot.recovery import INTENT_GRACE
from bot.watcher import Watcher
from tests.harness import BACKEND_ID, Bot, database_away_once, running_bot

POLL = 15.0


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path, poll=POLL, slack_timeout=1) as b:
        b.codearts.add_job(BACKEND_ID, duration=0)  # ends as soon as it starts
        yield b


def start(bot: Bot) -> tuple[str, str]:
    rid, url = bot.confirmation("backend")
    bot.click(msg.RUN, rid, response_url=url)
    bot.wait_response(url, 2)
    bot.wait_idle()
    return rid, url


def channel_posts(bot: Bot) -> list[dict[str, Any]]:
    return [c for c in bot.slack.calls("chat.postMessage")
            if c.get("channel") == "CBUILDS" and not c.get("thread_ts")]


def replies(bot: Bot) -> list[dict[str, Any]]:
    return [c for c in bot.slack.calls("chat.postMessage") if c.get("thread_ts")]


def next_poll(bot: Bot, seconds: float = POLL + 1) -> int:
    bot.clock.advance(seconds)
    return bot.runtime.watcher.run_once()


def test_an_announcement_slack_took_but_did_not_confirm_is_found_not_posted_again(
        bot: Bot) -> None:
    bot.slack.accept_slowly("chat.postMessage", 2.5)  # past the client's 1 s timeout
    rid, url = start(bot)
    assert "Started backend" in bot.slack.responses(url)[-1]["text"]
    assert len(channel_posts(bot)) == 1  # Slack has it; the bot does not know
    next_poll(bot, INTENT_GRACE + 1)  # the watcher looks for it in the channel and adopts it
    assert len(channel_posts(bot)) == 1
    build = bot.store.get_build(rid)
    assert build is not None and build.announce == "posted" and build.message_ts
    next_poll(bot)
    (reply,) = replies(bot)
    assert reply["thread_ts"] == build.message_ts and "succeeded" in reply["text"]


def test_a_result_slack_took_but_did_not_confirm_is_found_not_posted_again(bot: Bot) -> None:
    rid, _ = start(bot)
    bot.slack.accept_slowly("chat.postMessage", 2.5)
    next_poll(bot)  # the reply is posted, its answer lost: retried later
    assert len(replies(bot)) == 1
    build = bot.store.get_build(rid)
    assert build is not None and build.watch == WatchState.REPORTING
    next_poll(bot, 31)  # the retry looks in the thread first
    assert len(replies(bot)) == 1
    build = bot.store.get_build(rid)
    assert build is not None and build.watch == WatchState.DONE
    assert bot.store.audit_rows(request_id=rid)[-1]["decision"] == "finished"
    assert len(bot.slack.calls("chat.update")) == 1  # the parent still shows the result


def test_a_burst_of_429s_on_the_announcement_delays_it_but_never_drops_it(bot: Bot) -> None:
    bot.slack.fail("chat.postMessage", status=429, retry_after=0, count=5)  # > 3 retries
    rid, url = start(bot)
    assert channel_posts(bot) == []
    assert [r for r in bot.slack.responses(url) if r.get("response_type") == "in_channel"] == []
    next_poll(bot, INTENT_GRACE + 1)
    assert len(channel_posts(bot)) == 1
    assert bot.store.get_build(rid).announce == "posted"  # type: ignore[union-attr]


def test_429_twice_then_ok_posts_once(bot: Bot) -> None:
    bot.slack.fail("chat.postMessage", status=429, retry_after=0, count=2)
    rid, _ = start(bot)
    assert len(channel_posts(bot)) == 1
    assert bot.store.get_build(rid).announce == "posted"  # type: ignore[union-attr]


def test_a_replica_frozen_past_its_lease_while_posting_does_not_post_again(bot: Bot) -> None:
    rid, _ = start(bot)
    engine, store = bot.runtime.engine, bot.store
    frozen = Watcher(engine, poll_seconds=POLL, owner="frozen", clock=bot.clock)
    bot.clock.advance(POLL + 1)
    (leased,) = store.lease_due(owner="frozen", now=bot.clock(), lease_seconds=frozen.lease,
                                limit=10)
    lease = Lease("frozen", leased.lease_token, frozen.lease)
    assert store.begin_report(id=rid, owner="frozen", token=lease.token, result="success",
                              duration_ms=1000, now=bot.clock())
    # ... and it freezes here, before posting. Its lease runs out; another replica takes
    # the report over (only after the grace), looks in the thread, and posts it once.
    bot.clock.advance(frozen.lease + 1)
    assert bot.runtime.watcher.run_once() == 0  # within the grace: not handed out
    bot.clock.advance(INTENT_GRACE)
    assert bot.runtime.watcher.run_once() == 1
    assert len(replies(bot)) == 1
    # the frozen replica wakes up and carries on where it stopped: its token is stale
    build = store.get_build(rid)
    assert build is not None
    engine.report(build.__class__(**{**build.__dict__, "watch": WatchState.REPORTING}), lease)
    assert len(replies(bot)) == 1
    assert [r["decision"] for r in store.audit_rows(request_id=rid)].count("finished") == 1
    frozen.stop(1)


def test_an_expired_confirmation_is_told_once(bot: Bot) -> None:
    rid, url = bot.confirmation("backend")
    bot.clock.advance(601)
    bot.runtime.watcher.housekeeping()  # the sweep expires it and tells it
    bot.click(msg.RUN, rid, response_url=url)  # a late click on the old button
    bot.wait_idle()
    told = [r for r in bot.slack.responses(url) if "expired after" in r["text"]]
    assert len(told) == 1
    assert [r["decision"] for r in bot.store.audit_rows(request_id=rid)].count("expired") == 1


# --- a run whose answer was lost ------------------------------------------------------

def lost_answer(bot: Bot, text: str = "backend codeBranch=develop", *,
                runs: int = 1) -> tuple[str, str]:
    """Claim a confirmation as a Run click does, and send the run ``runs`` times as a process
    would before dying: the bot never hears back. Returns (request id, response_url)."""
    rid, url = bot.confirmation(text)
    claim = bot.store.claim_request(id=rid, user_id="UALICE", now=bot.runtime.clock())
    assert claim.ok and claim.request is not None
    for _ in range(runs):
        bot.runtime.api.run_build(claim.request.body)
    return rid, url


def settle(bot: Bot) -> None:
    bot.clock.advance(INTENT_GRACE + 1)
    bot.runtime.watcher.housekeeping()
    bot.wait_idle()


def test_a_run_whose_answer_was_lost_is_found_in_the_history_and_followed(bot: Bot) -> None:
    bot.codearts.add_job(BACKEND_ID, duration=0)
    rid, url = lost_answer(bot)
    settle(bot)
    told = bot.slack.responses(url)[-1]["text"]
    assert "CodeArts did start it" in told and "#1" in told
    build = bot.store.get_build(rid)
    assert build is not None and build.build_no == "1"
    assert len(channel_posts(bot)) == 1
    next_poll(bot)
    (reply,) = replies(bot)
    assert "succeeded" in reply["text"]
    assert len(bot.codearts.requests_to("/v3/jobs/build")) == 1  # never sent again


def test_a_run_that_never_reached_codearts_is_told_and_asked_again(bot: Bot) -> None:
    rid, url = lost_answer(bot, runs=0)
    settle(bot)
    texts = [r["text"] for r in bot.slack.responses(url)]
    assert any("nothing was started" in t for t in texts)
    assert bot.store.get_request(rid).state == "failed"  # type: ignore[union-attr]
    question = bot.slack.responses(url)[-1]
    assert "Run this build?" in question["text"]
    assert bot.codearts.requests_to("/v3/jobs/build") == []
    assert bot.store.audit_rows(request_id=rid)[-1]["decision"] == "not_started"


def test_two_builds_that_may_be_it_are_named_and_neither_is_followed(bot: Bot) -> None:
    rid, url = lost_answer(bot, runs=2)
    settle(bot)
    told = bot.slack.responses(url)[-1]["text"]
    assert "#1" in told and "#2" in told and "several builds" in told
    assert bot.store.get_request(rid).state == "unknown"  # type: ignore[union-attr]
    assert bot.store.get_build(rid) is None


def test_a_build_with_other_parameters_is_not_taken_for_it(bot: Bot) -> None:
    rid, _url = lost_answer(bot, runs=0)
    other, _ = bot.confirmation("backend codeBranch=main")
    claim = bot.store.claim_request(id=other, user_id="UALICE", now=bot.runtime.clock())
    assert claim.request is not None
    bot.runtime.api.run_build(claim.request.body)  # someone else's build, other parameters
    settle(bot)
    assert bot.store.get_request(rid).state == "failed"  # type: ignore[union-attr]


def test_a_build_the_database_could_not_record_is_picked_up_once_it_is_back(
        bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    database_away_once(monkeypatch, "record_build")
    rid, url = bot.confirmation("backend")
    bot.click(msg.RUN, rid, response_url=url)
    first = bot.wait_response(url, 2)[1]["text"]
    bot.wait_idle()
    assert "*was started*" in first and "othing was started" not in first
    settle(bot)  # the database is back: the history settles it
    texts = [r["text"] for r in bot.slack.responses(url)]
    assert not any("othing was started" in t for t in texts)
    assert any("CodeArts did start it" in t for t in texts)
    assert len(channel_posts(bot)) == 1
    next_poll(bot)
    assert len(replies(bot)) == 1
    assert len(bot.codearts.requests_to("/v3/jobs/build")) == 1


def test_the_database_cut_right_after_the_run_answer_loses_no_build(
        tmp_path: Path, pg_url: str) -> None:
    import sqlalchemy as sa

    from tests.test_http_server import TcpProxy

    target = sa.engine.make_url(pg_url)
    proxy = TcpProxy((target.host or "127.0.0.1", target.port or 5432))
    proxied = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        with running_bot(proxied, tmp_path, poll=POLL) as bot:
            bot.codearts.add_job(BACKEND_ID, duration=0)
            bot.codearts.hang(1.0, path_prefix="/v3/jobs/build")  # CodeArts takes a second
            rid, url = bot.confirmation("backend")
            bot.click(msg.RUN, rid, response_url=url)
            bot.slack.wait_for(lambda: bot.codearts.builds(BACKEND_ID))
            proxy.cut()  # the database goes away before the answer comes back
            first = bot.wait_response(url, 2, timeout=15)[1]["text"]
            bot.wait_idle(30)
            assert "*was started*" in first and "othing was started" not in first
            proxy.restore()
            settle(bot)  # once the database is back the history settles it
            texts = [r["text"] for r in bot.slack.responses(url)]
            assert any("CodeArts did start it" in t for t in texts)
            assert not any("othing was started" in t for t in texts)
            assert len(channel_posts(bot)) == 1
            next_poll(bot)
            assert len(replies(bot)) == 1
            assert len(bot.codearts.requests_to("/v3/jobs/build")) == 1
    finally:
        proxy.close()


def test_a_lost_run_is_found_behind_many_later_builds_of_the_job(bot: Bot) -> None:
    rid, url = lost_answer(bot)
    body = bot.store.get_request(rid).body  # type: ignore[union-attr]
    for i in range(70):  # a busy job: others start it after ours, with other parameters
        bot.runtime.api.run_build({**body, "parameter": [
            {"name": "codeBranch", "value": f"other-{i}"}]})
    settle(bot)
    assert "CodeArts did start it" in bot.slack.responses(url)[-1]["text"]
    assert bot.store.get_build(rid).build_no == "1"  # type: ignore[union-attr]


# --- the request ID of the run call's answer, in the words that settle it ---------------

def test_two_builds_behind_a_5xx_page_are_named_with_its_request_id(bot: Bot) -> None:
    rid, url = bot.confirmation("backend codeBranch=develop")
    body = bot.store.get_request(rid).body  # type: ignore[union-attr]
    bot.runtime.api.run_build(body)  # the same build, started a moment before elsewhere
    # the gateway's page hides that CodeArts did start this one
    bot.codearts.html_next(502, path_prefix="/v3/jobs/build",
                           headers={"X-Request-Id": "gw-rid"})
    bot.click(msg.RUN, rid, response_url=url)
    checking = bot.wait_response(url, 2)[1]["text"]
    bot.wait_idle()
    assert "*may* have started" in checking and checking.endswith("\nRequest ID `gw-rid`")
    settle(bot)
    told = bot.slack.responses(url)[-1]["text"]
    assert "several builds" in told and "#1" in told and "#2" in told
    assert told.endswith("\nRequest ID `gw-rid`")
    assert bot.store.get_request(rid).state == "unknown"  # type: ignore[union-attr]


def test_a_history_unreadable_when_settling_gives_both_request_ids(bot: Bot) -> None:
    from bot.recovery import SETTLE_GIVE_UP

    bot.codearts.fail_next(503, path_prefix="/v3/jobs/build",
                           headers={"X-Request-Id": "run-rid"})
    rid, url = bot.confirmation("backend")
    bot.click(msg.RUN, rid, response_url=url)
    assert bot.wait_response(url, 2)[1]["text"].endswith("\nRequest ID `run-rid`")
    bot.wait_idle()
    bot.codearts.fail_next(503, count=100, path_prefix=f"/v3/jobs/{BACKEND_ID}/history",
                           headers={"X-Request-Id": "hist-rid"})
    bot.clock.advance(bot.runtime.engine.intent_grace + SETTLE_GIVE_UP + 1)
    bot.runtime.watcher.housekeeping()
    bot.wait_idle()
    told = bot.slack.responses(url)[-1]["text"]
    assert "*may or may not* have started" in told
    assert told.endswith("\nRequest ID `run-rid`\n"
                         "The build history could not be read, request ID `hist-rid`")
    assert bot.store.get_request(rid).state == "unknown"  # type: ignore[union-attr]


def test_a_lost_answer_without_a_request_id_says_nothing_of_one(bot: Bot) -> None:
    _rid, url = lost_answer(bot, runs=2)  # the process died: no answer at all
    settle(bot)
    told = bot.slack.responses(url)[-1]["text"]
    assert "several builds" in told and "request id" not in told.lower()


def test_many_lost_answers_of_one_job_read_each_builds_parameters_once(bot: Bot) -> None:
    """Settling after a crash with many runs in flight: each build's parameters are read
    once (they never change), and a build already recorded for another request is not
    looked at again, so the settlements finish quickly however many there are."""
    lost = [lost_answer(bot, f"backend codeBranch=run-{i}") for i in range(6)]
    settle(bot)
    for rid, url in lost:
        assert "CodeArts did start it" in bot.slack.responses(url)[-1]["text"]
        build = bot.store.get_build(rid)
        assert build is not None
    numbers = {bot.store.get_build(rid).build_no for rid, _ in lost}  # type: ignore[union-attr]
    assert len(numbers) == 6
    reads = bot.codearts.requests_to("/v1/job/")
    per_build = Counter(r.path for r in reads if r.path.endswith("/history-parameters"))
    assert per_build and max(per_build.values()) == 1
    assert len(bot.codearts.requests_to("/v3/jobs/build")) == 6
