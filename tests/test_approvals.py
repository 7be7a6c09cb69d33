"""Guard rails, end to end through signed requests, the Slack and CodeArts stand-ins and a
real database: approval by a second person (approve, reject, withdraw, expiry, who may
approve, N approvals, two replicas on PostgreSQL) and the per-user hourly limit."""

from __future__ import annotations

import concurrent.futures
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import messages as msg
from tests.harness import CONFIG, OTHER_ID, Bot, button_value, running_bot

GUARDED = CONFIG + f"""
[jobs.deploy]
id = "{OTHER_ID}"
description = "Production deploy"
users = ["UALICE", "UCAROL"]
channels = ["CBUILDS"]
approvers = ["UCAROL", "UDAVE", "UALICE"]
approver_groups = ["SLEADS"]
approval_channel = "CAPPROVALS"
approval_ttl = "30m"

[jobs.deploy.params.target]
choices = ["eu", "us"]
default = "eu"

[jobs.release]
id = "{OTHER_ID}"
users = ["UALICE"]
confirm = false
approvers = ["UCAROL", "UDAVE", "UERIN"]
approvals = 2

[jobs.limited]
id = "{OTHER_ID}"
users = ["*"]
confirm = false
max_per_user_per_hour = 2

[jobs.hourly]
id = "{OTHER_ID}"
users = ["*"]
max_per_user_per_hour = 1
"""


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path, config=GUARDED) as b:
        prepare(b)
        yield b


def prepare(b: Bot) -> None:
    b.codearts.add_job(OTHER_ID)
    b.slack.usergroups["SLEADS"] = ["UGRACE"]


def runs(bot: Bot) -> list[Any]:
    return bot.codearts.requests_to("/v3/jobs/build", "POST")


def posts(bot: Bot, channel: str) -> list[dict[str, Any]]:
    return [c for c in bot.slack.calls("chat.postMessage") if c.get("channel") == channel]


def updates(bot: Bot, channel: str) -> list[dict[str, Any]]:
    return [c for c in bot.slack.calls("chat.update") if c.get("channel") == channel]


def blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    found = message.get("blocks") or []
    return json.loads(found) if isinstance(found, str) else list(found)


def shown(message: dict[str, Any]) -> str:
    """Every text of a message: its top-level text and its blocks'."""
    parts = [str(message.get("text") or "")]
    for block in blocks(message):
        if block.get("type") == "section":
            parts.append(block["text"]["text"])
        elif block.get("type") == "context":
            parts += [e["text"] for e in block["elements"]]
    return "\n".join(parts)


def waiting(bot: Bot, text: str = "deploy target=us", user: str = "UALICE"
            ) -> tuple[str, str, dict[str, Any]]:
    """Type, Run: (request id, the requester's response_url, the approval message)."""
    rid, url = bot.confirmation(text, user=user)
    bot.click(msg.RUN, rid, user=user, response_url=url)
    said = bot.wait_response(url, 2)[1]
    assert "waiting for approval by" in said["text"] and said["replace_original"] is True
    assert button_value(said, msg.WITHDRAW) == rid
    bot.wait_idle()
    (question,) = [p for p in posts(bot, "CAPPROVALS")
                   if any(e.get("value") == rid for b in blocks(p) if b["type"] == "actions"
                          for e in b["elements"])]
    return rid, url, question


def click(bot: Bot, action: str, rid: str, user: str, *, channel: str = "CAPPROVALS",
          ts: str | None = "1.1") -> dict[str, Any]:
    """A click; returns what the clicker alone was told (the first response)."""
    url = bot.slack.response_url()
    assert bot.click(action, rid, user=user, channel=channel, response_url=url,
                     message_ts=ts).status_code == 200
    bot.wait_idle()
    return (bot.slack.responses(url) or [{}])[0]


def decisions(bot: Bot, rid: str) -> list[str]:
    return [r["decision"] for r in bot.store.audit_rows(request_id=rid)]


# --- approve --------------------------------------------------------------------------

def test_one_approval_starts_one_build_and_every_message_says_so(bot: Bot) -> None:
    rid, url, question = waiting(bot)
    assert runs(bot) == []  # nothing sent before the approval
    text = shown(question)
    assert "<@UALICE> asks to run *deploy*" in text and "`target` = `us`" in text
    assert "<@UCAROL>" in text and "`SLEADS`" in text and "Expires at" in text
    assert {e["action_id"] for b in blocks(question) if b["type"] == "actions"
            for e in b["elements"]} == {msg.APPROVE, msg.REJECT}
    assert bot.store.get_request(rid).state == "awaiting"

    assert click(bot, msg.APPROVE, rid, "UCAROL") == {}  # the clicker is told nothing more
    (sent,) = runs(bot)
    assert sent.body["parameter"] == [{"name": "target", "value": "us"}]
    (announced,) = posts(bot, "CBUILDS")
    assert "approved by <@UCAROL>" in shown(announced)
    daily = bot.codearts.builds(OTHER_ID)[0].daily
    (closed,) = updates(bot, "CAPPROVALS")
    assert closed["ts"] == bot.store.get_request(rid).approval_ts  # updated in place
    assert f"Approved by <@UCAROL>, started {daily}" in shown(closed)
    assert not [b for b in blocks(closed) if b["type"] == "actions"]  # no buttons left
    assert daily in bot.wait_response(url, 3)[2]["text"]  # the requester's started note
    assert decisions(bot, rid) == ["confirm", "approval_asked", "approved", "started"]
    approved = bot.store.audit_rows(request_id=rid)[2]
    assert approved["user_id"] == "UCAROL" and approved["at"] > 0

    # a click after the decision (a second approver, a replay, a reject) changes nothing
    late = click(bot, msg.APPROVE, rid, "UDAVE")
    assert "started" in late["text"] and late["replace_original"] is False
    assert "started" in click(bot, msg.REJECT, rid, "UDAVE")["text"]
    assert len(runs(bot)) == 1 and len(updates(bot, "CAPPROVALS")) == 1


def test_a_member_of_an_approver_group_may_approve_from_any_channel(bot: Bot) -> None:
    rid, _, _ = waiting(bot)
    click(bot, msg.APPROVE, rid, "UGRACE", channel="CELSEWHERE")
    assert len(runs(bot)) == 1
    assert bot.store.get_request(rid).approved_by == ("UGRACE",)


def test_the_requester_cannot_approve_even_when_listed_and_others_not_at_all(
        bot: Bot) -> None:
    rid, _, _ = waiting(bot)  # UALICE is in approvers
    own = click(bot, msg.APPROVE, rid, "UALICE")
    assert "your own request" in own["text"] and own["response_type"] == "ephemeral"
    assert "your own request" in click(bot, msg.REJECT, rid, "UALICE")["text"]
    stranger = click(bot, msg.APPROVE, rid, "UMALLORY")
    assert "not an approver" in stranger["text"]
    assert "not an approver" in click(bot, msg.REJECT, rid, "UMALLORY")["text"]
    assert runs(bot) == [] and bot.store.get_request(rid).state == "awaiting"
    refused = [r for r in bot.store.audit_rows(request_id=rid)
               if r["decision"] == "refused_click"]
    assert [r["user_id"] for r in refused] == ["UALICE", "UALICE", "UMALLORY", "UMALLORY"]
    click(bot, msg.APPROVE, rid, "UCAROL")  # a real approver still can
    assert len(runs(bot)) == 1


def test_two_approvals_needed_start_once_and_count_each_person_once(bot: Bot) -> None:
    resp, url = bot.command("release")  # confirm = false: waits for approval at once
    assert resp.status_code == 200
    said = bot.wait_response(url)[0]
    assert "waiting for approval by" in said["text"] and "(2 needed)" in said["text"]
    bot.wait_idle()
    (question,) = posts(bot, "CBUILDS")  # no approval_channel: the request's channel
    rid = button_value(question, msg.APPROVE)
    assert "Needs 2 approvals" in shown(question)

    first = click(bot, msg.APPROVE, rid, "UCAROL", channel="CBUILDS")
    assert "recorded (1 of 2)" in first["text"]
    (progress,) = updates(bot, "CBUILDS")
    assert "Approved so far by <@UCAROL> (1 of 2)" in shown(progress)
    assert button_value(progress, msg.APPROVE) == rid  # still open
    again = click(bot, msg.APPROVE, rid, "UCAROL", channel="CBUILDS")
    assert "approved this request already" in again["text"]
    assert runs(bot) == []

    click(bot, msg.APPROVE, rid, "UDAVE", channel="CBUILDS")
    assert len(runs(bot)) == 1
    announced = [p for p in posts(bot, "CBUILDS") if "started" in p["text"]]
    assert len(announced) == 1 and "approved by <@UCAROL>, <@UDAVE>" in shown(announced[0])
    assert "Approved by <@UCAROL>, <@UDAVE>, started" in shown(updates(bot, "CBUILDS")[-1])
    assert "started" in click(bot, msg.APPROVE, rid, "UERIN", channel="CBUILDS")["text"]
    assert len(runs(bot)) == 1
    assert decisions(bot, rid) == ["approved", "approval_asked", "approval", "approved",
                                   "started"]


# --- reject, withdraw, expiry ------------------------------------------------------------

def test_one_reject_ends_it_and_tells_the_requester(bot: Bot) -> None:
    rid, url, _ = waiting(bot)
    assert click(bot, msg.REJECT, rid, "UDAVE") == {}
    told = bot.wait_response(url, 3)[2]
    assert "<@UDAVE> rejected deploy" in told["text"] and "nothing was started" in told["text"]
    (closed,) = updates(bot, "CAPPROVALS")
    assert "Rejected by <@UDAVE>" in shown(closed)
    assert bot.store.get_request(rid).state == "rejected"
    late = click(bot, msg.APPROVE, rid, "UCAROL")
    assert "was rejected" in late["text"] and late["replace_original"] is False
    assert "was rejected" in click(bot, msg.REJECT, rid, "UCAROL")["text"]
    assert "was rejected" in click(bot, msg.WITHDRAW, rid, "UALICE", channel="CBUILDS")["text"]
    assert runs(bot) == [] and len(updates(bot, "CAPPROVALS")) == 1
    row = [r for r in bot.store.audit_rows(request_id=rid) if r["decision"] == "rejected"]
    assert len(row) == 1 and row[0]["user_id"] == "UDAVE"


def test_the_requester_may_withdraw_while_it_waits_and_only_they_may(bot: Bot) -> None:
    rid, _url, _ = waiting(bot)
    other = click(bot, msg.WITHDRAW, rid, "UMALLORY", channel="CBUILDS")
    assert "Only <@UALICE> can withdraw" in other["text"]
    assert bot.store.get_request(rid).state == "awaiting"
    mine = click(bot, msg.WITHDRAW, rid, "UALICE", channel="CBUILDS")
    assert "Withdrawn" in mine["text"] and mine["replace_original"] is True
    assert "Withdrawn by <@UALICE>" in shown(updates(bot, "CAPPROVALS")[0])
    assert "withdrawn" in click(bot, msg.APPROVE, rid, "UCAROL")["text"]
    assert "withdrawn" in click(bot, msg.WITHDRAW, rid, "UALICE", channel="CBUILDS")["text"]
    assert runs(bot) == [] and bot.store.get_request(rid).state == "withdrawn"
    assert decisions(bot, rid).count("withdrawn") == 1


def test_expiry_ends_it_once_and_tells_the_requester(bot: Bot) -> None:
    rid, url, _ = waiting(bot)
    bot.clock.advance(29 * 60)
    bot.runtime.watcher.housekeeping()
    assert bot.store.get_request(rid).state == "awaiting"  # 30m: not yet
    bot.clock.advance(2 * 60)
    bot.runtime.watcher.housekeeping()
    bot.runtime.watcher.housekeeping()
    told = bot.wait_response(url, 3)[2]
    assert "Nobody approved deploy in time" in told["text"]
    assert "/build deploy target=us" in told["text"]
    (closed,) = updates(bot, "CAPPROVALS")
    assert "Expired" in shown(closed)
    late = click(bot, msg.APPROVE, rid, "UCAROL")
    assert "expired" in late["text"]
    assert runs(bot) == [] and decisions(bot, rid).count("approval_expired") == 1
    assert len(bot.slack.responses(url)) == 3


def test_an_approve_click_past_the_expiry_expires_it_instead(bot: Bot) -> None:
    rid, url, _ = waiting(bot)
    bot.clock.advance(31 * 60)  # before any sweep
    late = click(bot, msg.APPROVE, rid, "UCAROL")
    assert "expired" in late["text"] and late["replace_original"] is False
    assert "Nobody approved" in bot.wait_response(url, 3)[2]["text"]
    bot.runtime.watcher.housekeeping()  # the sweep finds nothing left to tell
    assert runs(bot) == [] and decisions(bot, rid).count("approval_expired") == 1
    assert len(updates(bot, "CAPPROVALS")) == 1


def test_an_approval_request_that_cannot_be_posted_starts_nothing(bot: Bot) -> None:
    rid, url = bot.confirmation("deploy")
    bot.slack.error("chat.postMessage", "not_in_channel")
    bot.click(msg.RUN, rid, response_url=url)
    told = bot.wait_response(url, 2)[1]
    assert "could not be posted" in told["text"] and "nothing was started" in told["text"]
    bot.wait_idle()
    assert bot.store.get_request(rid).state == "failed"
    assert "ended without a build" in click(bot, msg.APPROVE, rid, "UCAROL")["text"]
    assert runs(bot) == []


def test_a_second_run_click_asks_for_approval_once(bot: Bot) -> None:
    rid, url = bot.confirmation("deploy")
    for _ in range(3):
        bot.click(msg.RUN, rid, response_url=url)
    bot.wait_idle()
    assert len(posts(bot, "CAPPROVALS")) == 1
    assert decisions(bot, rid).count("approval_asked") == 1


# --- two replicas on PostgreSQL ----------------------------------------------------------

def test_simultaneous_approvals_on_two_replicas_start_one_build(
        pg_url: str, tmp_path: Path) -> None:
    (tmp_path / "two").mkdir()
    with running_bot(pg_url, tmp_path, config=GUARDED) as one, \
            running_bot(pg_url, tmp_path / "two", config=GUARDED) as two:
        for b in (one, two):
            prepare(b)
            b.codearts.hang(0.2, path_prefix="/v3/jobs/build", count=50)
        rids = []
        for _ in range(4):  # one approval needed; two approvers at the same moment
            rid, _, _ = waiting(one)
            rids.append(rid)
        for _ in range(3):  # two approvals needed; three approvers at the same moment
            resp, url = one.command("release")
            assert resp.status_code == 200
            one.wait_response(url)
            one.wait_idle()
        release = [button_value(p, msg.APPROVE) for p in posts(one, "CBUILDS")]
        assert len(release) == 3

        def approve(job: tuple[Bot, str, str]) -> int:
            replica, rid, user = job
            url = replica.slack.response_url()
            return replica.click(msg.APPROVE, rid, user=user, channel="CAPPROVALS",
                                 response_url=url, message_ts="1.1").status_code

        clicks = [(one, rid, "UCAROL") for rid in rids] + [(two, rid, "UDAVE") for rid in rids]
        clicks += [(r, rid, u) for rid in release
                   for r, u in ((one, "UCAROL"), (two, "UDAVE"), (two, "UERIN"))]
        with concurrent.futures.ThreadPoolExecutor(len(clicks)) as pool:
            assert set(pool.map(approve, clicks)) == {200}
        one.wait_idle(20)
        two.wait_idle(20)
        assert len(runs(one)) + len(runs(two)) == len(rids) + len(release)
        for rid in rids + release:
            assert one.store.get_request(rid).state == "started"
            assert decisions(one, rid).count("approved") == (1 if rid in rids else 2)
            assert decisions(one, rid).count("started") == 1


# --- the per-user limit --------------------------------------------------------------------

def test_the_per_user_limit_refuses_with_the_next_allowed_time(bot: Bot) -> None:
    for n in range(1, 3):
        bot.command("limited", user="UBOB", channel="CRANDOM")
        bot.slack.wait_for(lambda n=n: len(runs(bot)) == n)
        bot.wait_idle()
    bot.clock.advance(10 * 60)
    resp, url = bot.command("limited", user="UBOB", channel="CRANDOM")
    refused = bot.reply(resp, url)
    assert "Nothing was started" in refused["text"]
    assert "2 builds of `limited` per hour" in refused["text"]
    m = re.search(r"allowed in (\d+) min \(at (\d\d:\d\d) UTC\)", refused["text"])
    assert m is not None and 49 <= int(m.group(1)) <= 51
    bot.wait_idle()
    assert len(runs(bot)) == 2
    assert bot.store.audit_rows()[-1]["decision"] == "over_limit"
    # another user is counted apart, and an hour after the first build it is allowed again
    bot.command("limited", user="UCAROL", channel="CRANDOM")
    bot.slack.wait_for(lambda: len(runs(bot)) == 3, 15)
    bot.clock.advance(51 * 60)
    bot.command("limited", user="UBOB", channel="CRANDOM")
    bot.slack.wait_for(lambda: len(runs(bot)) == 4, 15)


def test_a_user_at_the_limit_may_still_stop_their_build(bot: Bot) -> None:
    for n in range(1, 3):
        bot.command("limited", user="UBOB", channel="CRANDOM")
        bot.slack.wait_for(lambda n=n: len(runs(bot)) == n, 15)
        bot.wait_idle()
    (first, *_rest) = posts(bot, "CRANDOM")
    bot.click(msg.STOP, button_value(first, msg.STOP), user="UBOB", channel="CRANDOM")
    stops = bot.slack.wait_for(lambda: [r for r in bot.codearts.requests
                                        if r.path.endswith("/stop")], 15)
    assert len(stops) == 1
    bot.wait_idle()
    assert any("asked CodeArts to stop" in p.get("text", "")
               for p in bot.slack.calls("chat.postMessage") if p.get("thread_ts"))


def test_admins_are_exempt_from_the_per_user_limit(bot: Bot) -> None:
    for n in range(1, 4):
        bot.command("limited", user="UADMIN", channel="CRANDOM")
        bot.slack.wait_for(lambda n=n: len(runs(bot)) == n)
        bot.wait_idle()


def test_the_limit_is_checked_again_when_run_is_clicked(bot: Bot) -> None:
    first, first_url = bot.confirmation("hourly", user="UBOB")
    second, second_url = bot.confirmation("hourly", user="UBOB")  # both asked under it
    bot.click(msg.RUN, first, user="UBOB", response_url=first_url)
    bot.slack.wait_for(lambda: len(runs(bot)) == 1)
    bot.wait_idle()
    bot.click(msg.RUN, second, user="UBOB", response_url=second_url)
    refused = bot.wait_response(second_url, 2)[1]
    assert "1 build of `hourly` per hour" in refused["text"]
    assert refused["replace_original"] is False  # the question stays for later
    bot.wait_idle()
    assert len(runs(bot)) == 1 and bot.store.get_request(second).state == "pending"
