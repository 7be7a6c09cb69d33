"""The App Home (issue 29), end to end: ``app_home_opened`` events and Home clicks sent
signed the way Slack sends them, the Slack and CodeArts stand-ins, a real database.

What a person sees (approvals they may decide, their builds with links, the jobs they may
run), Approve and Reject from the Home with the channel's once-only, the refresh after a
change at most once per 10 s per person across two replicas sharing a database, and a
Home with 200 builds and 50 approvals that Slack accepts."""

from __future__ import annotations

import concurrent.futures
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import forms
from bot import messages as msg
from bot.home_view import HOME_RUN
from bot.store import builds, requests
from tests.harness import OTHER_ID, Bot, running_bot
from tests.slack_requests import home_action_body, home_opened_body
from tests.test_approvals import GUARDED, prepare, runs, waiting


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path, config=GUARDED) as b:
        prepare(b)
        yield b
        b.wait_idle()
        assert [(c.method, c.problem) for c in b.slack.refused()] == []


def publishes(bot: Bot, user: str) -> list[dict[str, Any]]:
    return [c for c in bot.slack.calls("views.publish") if c.get("user_id") == user]


def open_home(bot: Bot, user: str) -> dict[str, Any] | None:
    """``user`` opens the Home tab; the Home Slack now holds for them (None: none yet)."""
    resp = bot.sender.post(home_opened_body(user))
    assert resp.status_code == 200, resp.text
    bot.wait_idle()
    return bot.slack.homes.get(user)


def home_click(bot: Bot, user: str, action_id: str, value: str,
               home: dict[str, Any] | None = None) -> None:
    home = home or bot.slack.homes[user]
    assert bot.sender.post(home_action_body(action_id, value, user=user, view=home)
                           ).status_code == 200
    bot.wait_idle()


def texts(view: dict[str, Any]) -> str:
    parts = []
    for block in view["blocks"]:
        if block["type"] in ("section", "header"):
            parts.append(block["text"]["text"])
        elif block["type"] == "context":
            parts += [e["text"] for e in block["elements"]]
    return "\n".join(parts)


def buttons(view: dict[str, Any], action_id: str) -> list[str]:
    found = [e for b in view["blocks"] if b["type"] == "actions" for e in b["elements"]]
    found += [b["accessory"] for b in view["blocks"] if "accessory" in b]
    return [e["value"] for e in found if e.get("action_id") == action_id]


def dms(bot: Bot, user: str) -> list[str]:
    return [c["text"] for c in bot.slack.calls("chat.postMessage") if c.get("channel") == user]


# --- what it shows ---------------------------------------------------------------------

def test_an_approver_sees_the_request_and_the_jobs_they_may_run(bot: Bot) -> None:
    rid, _, _ = waiting(bot)
    home = open_home(bot, "UCAROL")
    assert home is not None and home["type"] == "home"
    shown = texts(home)
    assert "Waiting for you" in shown and "<@UALICE> asks to run *deploy*" in shown
    assert "`target` = `us`" in shown and "Expires at" in shown
    assert buttons(home, msg.APPROVE) == [rid] and buttons(home, msg.REJECT) == [rid]
    # every job Carol may run somewhere, each with its Run… button
    assert buttons(home, HOME_RUN) == ["docs", "deploy", "limited", "hourly"]
    assert len(publishes(bot, "UCAROL")) == 1  # opened by the person: published at once


def test_the_requester_sees_their_request_waiting_not_a_button_to_approve_it(
        bot: Bot) -> None:
    waiting(bot)
    home = open_home(bot, "UALICE")
    assert home is not None
    assert buttons(home, msg.APPROVE) == []  # the requester never approves their own
    assert "*deploy* · :raised_hand: waiting for approval" in texts(home)


def test_someone_with_no_job_sees_one_line_saying_how_to_get_access(
        db_url: str, tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path, config=GUARDED.replace('users = ["*"]', 'users = []')
                     ) as b:
        home = open_home(b, "UNOBODY")
        assert home is not None
        (block,) = home["blocks"]
        assert "ask a buildbot admin to add your Slack user ID" in block["text"]["text"]


def test_your_builds_shows_running_first_then_results_each_linking_its_message(
        bot: Bot) -> None:
    bot.codearts.add_job(OTHER_ID, duration=5)
    resp, _ = bot.command("limited", user="UBOB")  # confirm = false: starts at once
    assert resp.status_code == 200
    bot.wait_idle()
    bot.clock.advance(16)
    bot.runtime.watcher.run_once()  # the first build ends
    bot.wait_idle()
    resp, _ = bot.command("limited", user="UBOB")  # the second one runs
    bot.wait_idle()
    home = open_home(bot, "UBOB")
    assert home is not None
    lines = [b["text"]["text"] for b in home["blocks"]
             if b["type"] == "section" and "*limited* build" in b["text"]["text"]]
    assert len(lines) == 2
    assert "running" in lines[0] and "succeeded in" in lines[1]
    for line in lines:  # each links to its channel message (chat.getPermalink)
        assert "<https://example.slack.com/archives/CBUILDS/p" in line and "|message>" in line
    asked = len(bot.slack.calls("chat.getPermalink"))
    assert asked == 2
    bot.clock.advance(11)
    open_home(bot, "UBOB")
    assert len(publishes(bot, "UBOB")) == 2
    assert len(bot.slack.calls("chat.getPermalink")) == asked  # kept: asked once each


# --- Approve and Reject from the Home ---------------------------------------------------

def test_approve_on_the_home_starts_one_build_and_a_late_click_is_told_why(
        bot: Bot) -> None:
    rid, _, _ = waiting(bot)
    open_home(bot, "UCAROL")
    open_home(bot, "UDAVE")
    home_click(bot, "UCAROL", msg.APPROVE, rid)
    assert len(runs(bot)) == 1 and bot.store.get_request(rid).state == "started"
    home_click(bot, "UDAVE", msg.APPROVE, rid)  # his Home still showed it
    assert len(runs(bot)) == 1
    (told,) = dms(bot, "UDAVE")  # a Home has no response_url: a direct message
    assert "started" in told
    assert [r["decision"] for r in bot.store.audit_rows(request_id=rid)].count("started") == 1


def test_the_clickers_home_shows_the_outcome_when_its_turn_allows(bot: Bot) -> None:
    rid, _, _ = waiting(bot)
    open_home(bot, "UCAROL")
    bot.clock.advance(10)
    home_click(bot, "UCAROL", msg.APPROVE, rid)
    home = bot.slack.homes["UCAROL"]  # published again at once: its turn had come
    assert len(publishes(bot, "UCAROL")) == 2 and buttons(home, msg.APPROVE) == []


def test_a_build_ending_refreshes_its_requesters_home_at_the_next_turn(bot: Bot) -> None:
    bot.codearts.add_job(OTHER_ID, duration=5)
    bot.command("limited", user="UBOB")
    bot.wait_idle()
    assert "running" in texts(open_home(bot, "UBOB") or {"blocks": []})
    bot.clock.advance(16)
    bot.runtime.watcher.run_once()  # the build ends: a change for Bob
    bot.wait_idle()
    assert bot.runtime.home.sweep() == 1
    assert "succeeded in" in texts(bot.slack.homes["UBOB"])
    assert bot.runtime.home.sweep() == 0  # nothing new: nothing published


def test_an_approve_on_the_home_and_one_in_the_channel_at_once_start_one_build(
        bot: Bot) -> None:
    for _ in range(3):
        rid, _, _ = waiting(bot)
        open_home(bot, "UCAROL")

        def home(rid: str) -> None:
            home_click(bot, "UCAROL", msg.APPROVE, rid)

        def channel(rid: str) -> None:
            bot.click(msg.APPROVE, rid, user="UDAVE", channel="CAPPROVALS",
                      response_url=bot.slack.response_url(), message_ts="1.1")

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            for f in [pool.submit(home, rid), pool.submit(channel, rid)]:
                f.result()
        bot.wait_idle()
        assert bot.store.get_request(rid).state == "started"
        assert [r["decision"] for r in bot.store.audit_rows(request_id=rid)
                ].count("started") == 1
        bot.clock.advance(11)
    assert len(runs(bot)) == 3


def test_reject_on_the_home_by_someone_who_may_not_decide_changes_nothing(
        bot: Bot) -> None:
    rid, _, _ = waiting(bot)
    open_home(bot, "UCAROL")
    home_click(bot, "UMALLORY", msg.REJECT, rid, bot.slack.homes["UCAROL"])  # forged
    assert bot.store.get_request(rid).state == "awaiting"
    (told,) = dms(bot, "UMALLORY")
    assert "not an approver" in told
    home_click(bot, "UCAROL", msg.REJECT, rid)
    assert bot.store.get_request(rid).state == "rejected" and runs(bot) == []


# --- refresh: at most once per 10 s per person, across replicas --------------------------

def test_a_change_is_published_once_per_10_s_across_two_replicas(
        db_url: str, tmp_path: Path) -> None:
    (tmp_path / "two").mkdir()
    with running_bot(db_url, tmp_path, config=GUARDED) as one, \
            running_bot(db_url, tmp_path / "two", config=GUARDED) as two:
        for b in (one, two):
            prepare(b)

        def published() -> list[dict[str, Any]]:
            return publishes(one, "UCAROL") + publishes(two, "UCAROL")

        def sweep_both() -> None:
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda b: b.runtime.home.sweep(), (one, two, one, two)))

        open_home(one, "UCAROL")
        assert len(published()) == 1 and buttons(one.slack.homes["UCAROL"], msg.APPROVE) == []
        open_home(two, "UCAROL")  # opened again within 10 s, on the other replica
        assert len(published()) == 1
        first, _, _ = waiting(one)  # a request she may approve
        second, _, _ = waiting(one)
        sweep_both()
        assert len(published()) == 1  # not before her 10 s are up
        for b in (one, two):
            b.clock.advance(10)
        sweep_both()
        (*_, last) = published()
        assert len(published()) == 2  # once, on one replica, with what is true now
        assert buttons(json.loads(last["view"]) if isinstance(last["view"], str)
                       else last["view"], msg.APPROVE) == [first, second]
        sweep_both()
        for b in (one, two):
            b.clock.advance(10)
        sweep_both()
        assert len(published()) == 2  # nothing changed: nothing published


def test_a_home_claimed_but_never_published_is_published_at_the_next_turn(
        bot: Bot) -> None:
    """A process that died between its claim and its views.publish: the claim stays
    open (publishing), so the next turn publishes."""
    store = bot.store
    store.home_opened(user_id="UCAROL", team_id="T1", now=bot.runtime.clock())
    assert store.claim_home(user_id="UCAROL", now=bot.runtime.clock(), every=10)
    # ... the process dies here: nothing published
    assert bot.runtime.home.sweep() == 0  # not before its turn
    bot.clock.advance(10)
    assert bot.runtime.home.sweep() == 1
    assert len(publishes(bot, "UCAROL")) == 1


# --- the 100-block limit ----------------------------------------------------------------

def test_200_builds_and_50_approvals_fit_in_a_home_slack_accepts(bot: Bot) -> None:
    now = bot.runtime.clock()
    body = json.dumps({"job_id": OTHER_ID, "parameter": [{"name": "target", "value": "us"}]})
    with bot.store.engine.begin() as c:
        for i in range(50):
            c.execute(requests.insert().values(
                id=uuid.uuid4().hex, state="awaiting", created_at=now + i, expires_at=now + 900,
                updated_at=now, user_id="UALICE", channel_id="CBUILDS", job_name="deploy",
                job_id=OTHER_ID, command="deploy target=us", body=body, approvals_needed=1))
        for i in range(200):
            c.execute(builds.insert().values(
                id=uuid.uuid4().hex, created_at=now - i, user_id="UCAROL",
                channel_id="CBUILDS", job_name="docs", job_id=OTHER_ID, build_no=str(i),
                daily_build_number=f"20261207.{i}", announce="posted", watch="done",
                next_check_at=now, failures=0, result=None if i < 30 else "success",
                duration_ms=1000 * i, finished_at=None if i < 30 else now - i))
    home = open_home(bot, "UCAROL")
    assert home is not None and len(home["blocks"]) <= 100
    shown = texts(home)
    assert "and 40 more requests waiting for your approval" in shown
    assert "and 20 more running or waiting" in shown and "and 160 more finished" in shown
    assert len(buttons(home, msg.APPROVE)) == 10


# --- Run… on the Home ------------------------------------------------------------------

def test_run_on_the_home_opens_the_form_for_that_job_with_a_channel_field(
        bot: Bot) -> None:
    open_home(bot, "UALICE")
    home_click(bot, "UALICE", HOME_RUN, "deploy")
    (opened,) = bot.slack.calls("views.open")
    view = json.loads(opened["view"]) if isinstance(opened["view"], str) else opened["view"]
    ids = [b.get("block_id") for b in view["blocks"]]
    assert ids[:2] == [forms.CHANNEL_BLOCK, forms.JOB_BLOCK]
    select = view["blocks"][1]["element"]
    assert select["initial_option"]["value"] == "deploy"
    assert "param.target" in ids and view["submit"]["text"] == "Continue"
