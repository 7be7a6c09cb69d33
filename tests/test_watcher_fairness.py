"""The watcher's loop under slow partners.

One job's slow status calls do not delay another job's result: the watcher takes due
builds in due order, never waits for a batch, and caps the threads one job may hold."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from bot import messages as msg
from tests.harness import BACKEND_ID, DOCS_ID, Bot, running_bot

POLL = 0.5
SLOW = 6.0  # each status call of the slow job is held this long


def sample(bot: Bot, name: str) -> float:
    """A metric's current value, read from the bot's registry (what /metrics would show)."""
    return bot.runtime.metrics.registry.get_sample_value(name) or 0.0


def test_a_fast_jobs_result_is_on_time_while_a_slow_job_hogs_the_api(
        db_url: str, tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path, poll=POLL, WATCHER_THREADS="8") as bot:
        bot.codearts.add_job(BACKEND_ID, duration=3600)
        bot.codearts.add_job(DOCS_ID, duration=2.0)
        # the slow job's status reads: its history, read once for all its builds
        bot.codearts.hang(SLOW, count=1000, path_prefix=f"/v3/jobs/{BACKEND_ID}/history")
        for _ in range(8):  # more slow builds than the watcher has threads
            rid, url = bot.confirmation("backend")
            bot.click(msg.RUN, rid, response_url=url)
            bot.wait_response(url, 2)
        bot.wait_idle()
        watcher = bot.runtime.watcher
        watcher.start()
        # the slow job's call is out and held: its builds, leased together, are one task
        # (at most per_job of its tasks would run, whatever the threads)
        bot.slack.wait_for(lambda: bot.codearts.requests_to(f"/v3/jobs/{BACKEND_ID}/history"))
        bot.slack.wait_for(lambda: 1 <= watcher._running[BACKEND_ID] <= watcher.per_job)
        resp, _ = bot.command("docs")  # confirm = false: starts at once
        assert resp.status_code == 200
        bot.slack.wait_for(lambda: bot.codearts.builds(DOCS_ID))
        ends_at = time.monotonic() + 2.0
        (reply, *_) = bot.slack.wait_for(
            lambda: [c for c in bot.slack.all_calls() if c.method == "chat.postMessage"
                     and c.params.get("thread_ts") and "docs" in c.params.get("text", "")], 15)
        late = reply.at - ends_at  # when the Slack stand-in received the result
        assert late <= 2 * POLL + 1.0, f"the fast job's result came {late:.1f} s after its end"


def test_a_database_outage_logs_a_handful_of_lines_not_hundreds(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    with running_bot(f"sqlite:///{db_dir / 'buildbot.db'}", tmp_path, poll=0.15) as bot:
        watcher = bot.runtime.watcher
        watcher.failure_log_every = 1.0  # a minute in production
        caplog.set_level(logging.INFO, logger="bot.watcher")
        watcher.start()
        bot.slack.wait_for(lambda: sample(bot, "buildbot_watcher_last_pass_timestamp_seconds"))
        bot.store.engine.dispose()
        db_dir.rename(tmp_path / "gone")  # the database is unreachable ...
        # ... for 60 watcher passes (about 3 s: a pass every 0.05 s, lines once a second)
        bot.slack.wait_for(lambda: sample(bot, "buildbot_database_errors_total") >= 60, 15)
        failing = [r for r in caplog.records if r.name == "bot.watcher"]
        (tmp_path / "gone").rename(db_dir)  # and back
        bot.slack.wait_for(lambda: any("recovered" in r.getMessage() for r in caplog.records
                                       if r.name == "bot.watcher"), 5)
    assert 2 <= len(failing) <= 6, [r.getMessage() for r in failing]
    assert sum(1 for r in failing if r.exc_info) == 1  # one traceback, then counts
    assert any("attempts" in r.getMessage() for r in failing)


def test_settling_lost_run_answers_does_not_hold_up_results(db_url: str, tmp_path: Path) -> None:
    from bot.recovery import SETTLE_SOON

    with running_bot(db_url, tmp_path, poll=POLL) as bot:
        bot.codearts.add_job(BACKEND_ID, duration=3600)
        bot.codearts.add_job(DOCS_ID, duration=2.0)
        for _ in range(4):  # four runs whose answers were lost, as after a crash
            rid, _url = bot.confirmation("backend")
            claim = bot.store.claim_request(id=rid, user_id="UALICE", now=bot.runtime.clock())
            assert claim.ok and claim.request is not None
            bot.runtime.engine.store.note_answer_lost(id=rid, now=bot.runtime.clock(),
                                                      error="answer lost: test")
        bot.codearts.hang(SLOW, count=1000, path_prefix=f"/v3/jobs/{BACKEND_ID}/history")
        bot.clock.advance(SETTLE_SOON + 1)
        bot.runtime.watcher.start()
        bot.slack.wait_for(lambda: bot.codearts.requests_to(f"/v3/jobs/{BACKEND_ID}/history"))
        resp, _ = bot.command("docs")
        assert resp.status_code == 200
        bot.slack.wait_for(lambda: bot.codearts.builds(DOCS_ID))
        ends_at = time.monotonic() + 2.0
        (reply, *_) = bot.slack.wait_for(
            lambda: [c for c in bot.slack.all_calls() if c.method == "chat.postMessage"
                     and c.params.get("thread_ts") and "docs" in c.params.get("text", "")], 15)
        late = reply.at - ends_at
        assert late <= 2 * POLL + 1.0, f"the result came {late:.1f} s after its end"
