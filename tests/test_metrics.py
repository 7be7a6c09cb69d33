"""/metrics: scraped after a build and parsed with prometheus_client's own parser."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bot import messages as msg
from tests.harness import BACKEND_ID, running_bot


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = httpx.get(url + "/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def test_the_counters_and_histograms_move_with_a_build(db_url: str, tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path, metrics=True) as bot:
        bot.codearts.add_job(BACKEND_ID, duration=0)
        before = scrape(bot.url)
        assert before[("buildbot_builds_started_total", ())] == 0
        rid, url = bot.confirmation("backend")
        bot.click(msg.RUN, rid, response_url=url)
        bot.wait_response(url, 2)
        bot.wait_idle()
        assert scrape(bot.url)[("buildbot_builds_followed", ())] == 1
        bot.command("nosuchjob")
        bot.wait_idle()
        bot.clock.advance(16)
        bot.runtime.watcher.run_once()
        after = scrape(bot.url)
    assert after[("buildbot_commands_total", (("outcome", "confirm"),))] == 1
    assert after[("buildbot_commands_total", (("outcome", "refused"),))] == 1
    assert after[("buildbot_builds_started_total", ())] == 1
    assert after[("buildbot_builds_ended_total", (("result", "success"),))] == 1
    assert after[("buildbot_builds_followed", ())] == 0
    assert after[("buildbot_command_to_confirmation_seconds_count", ())] == 1
    assert after[("buildbot_build_end_to_reply_seconds_count", ())] == 1
    run = (("call", "run"), ("outcome", "2xx"))
    record = (("call", "history"), ("outcome", "2xx"))  # the poll: the job's history
    assert after[("buildbot_codearts_call_seconds_count", run)] == 1
    assert after[("buildbot_codearts_call_seconds_count", record)] == 1
    posts = (("method", "chat.postMessage"), ("outcome", "ok"))
    assert after[("buildbot_slack_call_seconds_count", posts)] == 2  # announcement + reply
    assert after[("buildbot_slack_call_seconds_count",
                  (("method", "response_url"), ("outcome", "ok")))] >= 2


def test_metrics_are_off_unless_asked_for(db_url: str, tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path) as bot:
        assert httpx.get(bot.url + "/metrics").status_code == 404


def test_the_slack_budget_shows_its_waits_and_what_progress_put_off(db_url: str,
                                                                      tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path, metrics=True) as bot:
        before = scrape(bot.url)
        assert before[("buildbot_slack_budget_wait_seconds", ())] == 0
        assert before[("buildbot_progress_updates_put_off", ())] == 0
        budget = bot.runtime.budget
        budget.pause("chat.update", None, 60.0)  # as a 429 would
        assert not budget.take("chat.update")
        assert scrape(bot.url)[("buildbot_progress_updates_put_off", ())] == 1
