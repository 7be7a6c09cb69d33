"""A build belongs to the job entry it was started under (from Slack), or to every entry
naming its build task (started elsewhere). Two entries sharing one task ID must not let
the users of one see or stop the other's builds: signed requests, the stand-ins, a real
database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot import messages as msg
from tests.fakes.codearts import FakeCodeArts
from tests.harness import BACKEND_ID, CONFIG, Bot, button_value, running_bot

SHARED = CONFIG + f"""
[jobs.secretjob]
id = "{BACKEND_ID}"
users = ["UCAROL"]
channels = ["CSECRET", "CBUILDS"]

[jobs.pubjob]
id = "{BACKEND_ID}"
users = ["*"]
"""


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path, config=SHARED) as b:
        b.codearts.add_job(BACKEND_ID, duration=3600)  # runs until stopped
        yield b


def secret_build(bot: Bot) -> str:
    """UCAROL starts a secretjob build in CSECRET; returns its build number."""
    rid, url = bot.confirmation("secretjob", user="UCAROL", channel="CSECRET")
    bot.click(msg.RUN, rid, user="UCAROL", channel="CSECRET", response_url=url)
    bot.slack.wait_for(lambda: bot.store.get_build(rid) is not None)
    bot.wait_idle()
    return bot.store.get_build(rid).build_no


def answer(bot: Bot, text: str, *, user: str, channel: str = "CBUILDS") -> dict:
    resp, url = bot.command(text, user=user, channel=channel)
    shown = bot.reply(resp, url)
    bot.wait_idle()
    return shown


def stop_calls(bot: Bot) -> list:
    return [r for r in bot.codearts.requests_to("/v3/jobs/", "POST")
            if r.path.endswith("/stop")]


def test_stop_through_a_look_alike_entry_is_refused(bot: Bot) -> None:
    number = secret_build(bot)
    said = answer(bot, f"stop pubjob {number}", user="UBOB")
    assert "same permission as running it" in said["text"]
    assert msg.STOP_CONFIRM not in str(said)
    assert stop_calls(bot) == []
    # nothing posted in the secret job's channel by Bob
    assert not [c for c in bot.slack.calls("chat.postMessage")
                if c.get("channel") == "CSECRET" and c.get("thread_ts")]


def test_a_forged_stop_click_through_a_look_alike_entry_is_refused(bot: Bot) -> None:
    number = secret_build(bot)
    url = bot.slack.response_url()
    bot.click(msg.STOP_CONFIRM, f"{BACKEND_ID}:{number}", user="UBOB", response_url=url)
    bot.wait_idle()
    assert stop_calls(bot) == []
    assert "same permission as running it" in bot.slack.responses(url)[-1]["text"]


def test_the_owner_of_the_entry_may_still_stop_it(bot: Bot) -> None:
    number = secret_build(bot)
    question = answer(bot, f"stop secretjob {number}", user="UCAROL")
    url = bot.slack.response_url()
    bot.click(msg.STOP_CONFIRM, button_value(question, msg.STOP_CONFIRM), user="UCAROL",
              response_url=url)
    bot.wait_idle()
    assert len(stop_calls(bot)) == 1


def test_status_through_a_look_alike_entry_hides_the_other_entrys_builds(bot: Bot) -> None:
    secret_build(bot)
    said = answer(bot, "status pubjob", user="UBOB")
    assert "UCAROL" not in str(said)
    assert "1 more build of this build task not shown" in said["text"]
    own = answer(bot, "status secretjob", user="UCAROL")
    assert "<@UCAROL>" in own["text"]


def test_a_console_build_belongs_to_every_entry_naming_the_task(bot: Bot) -> None:
    resp = httpx.post(bot.codearts.url + "/v3/jobs/build", json={"job_id": BACKEND_ID},
                      headers={"X-Auth-Token": FakeCodeArts.token})
    number = str(resp.json()["actual_build_number"])
    # Bob may run pubjob but not secretjob (or backend): not his to stop
    said = answer(bot, f"stop pubjob {number}", user="UBOB")
    assert msg.STOP_CONFIRM not in str(said) and stop_calls(bot) == []
    # an admin may run every entry: asked Stop / Keep running
    said = answer(bot, f"stop pubjob {number}", user="UADMIN")
    assert button_value(said, msg.STOP_CONFIRM) == f"{BACKEND_ID}:{number}"
