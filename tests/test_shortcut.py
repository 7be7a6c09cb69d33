"""The global shortcut "Run a build" (issue 29), end to end: the shortcut and the form's
submissions sent signed the way Slack sends them, the Slack and CodeArts stand-ins, a
real database.

The form is the ``/build`` form with a Channel field first (a conversations select whose
submission brings that channel's response_url); its job list holds every job the person
may run in some channel; a submission is checked for the chosen channel, a refusal comes
back on the form's fields, and after that everything goes on as if ``/build`` had been
typed in that channel."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import forms
from bot import messages as msg
from tests.harness import BACKEND_ID, Bot, button_value, running_bot
from tests.slack_requests import channel_submission_body, shortcut_body
from tests.test_approvals import GUARDED, prepare, runs


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path, config=GUARDED) as b:
        prepare(b)
        yield b
        b.wait_idle()
        assert [(c.method, c.problem) for c in b.slack.refused()] == []


def shortcut(bot: Bot, user: str = "UALICE") -> dict[str, Any]:
    """Pick "Run a build" in the shortcuts menu: the form Slack opened."""
    resp = bot.sender.post(shortcut_body(forms.SHORTCUT, user=user))
    assert resp.status_code == 200 and resp.text == ""  # acked at once, nothing said
    bot.slack.wait_for(lambda: bot.slack.calls("views.open"))
    bot.wait_idle()
    return list(bot.slack.views.values())[-1]


def pick(bot: Bot, view: dict[str, Any], job: str, user: str = "UALICE") -> dict[str, Any]:
    before = len(bot.slack.calls("views.update"))
    assert bot.sender.pick(view, forms.JOB_BLOCK, forms.JOB_ACTION, job,
                           user=user).status_code == 200
    bot.slack.wait_for(lambda: len(bot.slack.calls("views.update")) > before)
    bot.wait_idle()
    return bot.slack.views[view["id"]]


def submit(bot: Bot, view: dict[str, Any], channel: str | None, url: str | None,
           entered: dict[str, str | None] | None = None,
           user: str = "UALICE") -> dict[str, Any]:
    resp = bot.sender.post(channel_submission_body(view, channel, url, entered, user=user))
    assert resp.status_code == 200, resp.text
    return resp.json() if resp.content else {}


def block_ids(view: dict[str, Any]) -> list[str]:
    return [b.get("block_id", "") for b in view["blocks"]]


def options(view: dict[str, Any]) -> list[str]:
    (block,) = [b for b in view["blocks"] if b.get("block_id") == forms.JOB_BLOCK]
    return [o["value"] for o in block["element"]["options"]]


def test_the_shortcut_opens_the_form_with_a_channel_field_and_every_job_runnable_somewhere(
        bot: Bot) -> None:
    view = shortcut(bot)
    assert block_ids(view)[:2] == [forms.CHANNEL_BLOCK, forms.JOB_BLOCK]
    channel = view["blocks"][0]
    assert channel["type"] == "input"
    assert channel["element"]["type"] == "conversations_select"
    assert channel["element"]["response_url_enabled"] is True
    assert view["submit"]["text"] == "Continue"  # an input block needs submit
    # backend may only be run in CBUILDS, deploy too: listed all the same
    assert options(view) == ["backend", "docs", "deploy", "release", "limited", "hourly"]
    assert options(shortcut(bot, user="UBOB")) == ["docs", "limited", "hourly"]


def test_someone_who_may_run_no_job_is_told_how_to_get_access(
        db_url: str, tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path, config=GUARDED.replace('users = ["*"]', 'users = []')
                     ) as b:
        view = shortcut(b, user="UNOBODY")
        assert "submit" not in view
        assert "ask a buildbot admin to add your Slack user ID" in json.dumps(view)


def test_a_submitted_form_asks_run_cancel_in_the_channel_and_run_starts_it_there(
        bot: Bot) -> None:
    view = pick(bot, shortcut(bot), "backend")
    assert block_ids(view)[:2] == [forms.CHANNEL_BLOCK, forms.JOB_BLOCK]
    assert "param.codeBranch" in block_ids(view)
    url = bot.slack.response_url()  # the response_url Slack gives for the picked channel
    answer = submit(bot, view, "CBUILDS", url, {"param.codeBranch": "develop"})
    assert answer == {"response_action": "clear"}
    (question,) = bot.wait_response(url)
    assert question["response_type"] == "ephemeral" and "`develop`" in question["text"]
    rid = button_value(question, msg.RUN)
    request = bot.store.get_request(rid)
    assert request.channel_id == "CBUILDS" and request.command == \
        "backend codeBranch=develop target=staging"
    assert runs(bot) == []  # nothing before Run
    bot.click(msg.RUN, rid, response_url=url)
    bot.wait_idle()
    (sent,) = runs(bot)
    assert sent.body["job_id"] == BACKEND_ID
    (post,) = bot.slack.calls("chat.postMessage")
    assert post["channel"] == "CBUILDS" and "started" in post["text"]


def test_without_a_response_url_the_question_is_an_ephemeral_message_in_the_channel(
        bot: Bot) -> None:
    """Slack gives the picked channel's response_url only where it can; without one the
    Run/Cancel question is posted with chat.postEphemeral, to the submitter alone."""
    view = pick(bot, shortcut(bot), "backend")
    assert submit(bot, view, "CBUILDS", None) == {"response_action": "clear"}
    bot.wait_idle()
    (question,) = bot.slack.calls("chat.postEphemeral")
    assert question["channel"] == "CBUILDS" and question["user"] == "UALICE"
    rid = button_value(question, msg.RUN)
    url = bot.slack.response_url()  # the click on the ephemeral message brings its own
    bot.click(msg.RUN, rid, response_url=url)
    bot.wait_idle()
    assert len(runs(bot)) == 1 and bot.store.get_request(rid).channel_id == "CBUILDS"


def test_a_job_not_allowed_in_the_chosen_channel_is_refused_on_the_form(bot: Bot) -> None:
    view = pick(bot, shortcut(bot), "backend")
    url = bot.slack.response_url()
    answer = submit(bot, view, "CRANDOM", url)
    assert answer["response_action"] == "errors"
    assert list(answer["errors"]) == [forms.CHANNEL_BLOCK]
    assert "CBUILDS" in answer["errors"][forms.CHANNEL_BLOCK]
    bot.wait_idle()
    assert runs(bot) == [] and bot.slack.responses(url) == []
    assert [r["decision"] for r in bot.store.audit_rows()] == ["denied"]


def test_a_form_without_a_channel_or_a_job_says_which_field_to_fill(bot: Bot) -> None:
    view = shortcut(bot)
    url = bot.slack.response_url()
    assert submit(bot, view, None, url) == {"response_action": "errors", "errors": {
        forms.CHANNEL_BLOCK: "Pick the channel to run the build in."}}
    answer = submit(bot, view, "CBUILDS", url)
    assert answer == {"response_action": "errors",
                      "errors": {forms.JOB_BLOCK: "Pick a job from the list."}}
    assert runs(bot) == []


def test_a_job_needing_approval_asks_for_it_as_a_typed_command_would(bot: Bot) -> None:
    view = pick(bot, shortcut(bot), "deploy")
    url = bot.slack.response_url()
    assert submit(bot, view, "CBUILDS", url, {"param.target": "us"}) == {
        "response_action": "clear"}
    (question,) = bot.wait_response(url)
    bot.click(msg.RUN, button_value(question, msg.RUN), response_url=url)
    said = bot.wait_response(url, 2)[1]
    assert "waiting for approval by" in said["text"]
    bot.wait_idle()
    (asked,) = [c for c in bot.slack.calls("chat.postMessage")
                if c.get("channel") == "CAPPROVALS"]
    assert "asks to run *deploy*" in json.dumps(asked)
    assert runs(bot) == []


def test_a_forged_form_for_someone_else_is_refused(bot: Bot) -> None:
    view = pick(bot, shortcut(bot), "docs")
    url = bot.slack.response_url()
    answer = submit(bot, view, "CBUILDS", url, user="UMALLORY")  # Alice's signed metadata
    assert answer["response_action"] == "update"
    assert "could not be read back" in json.dumps(answer["view"])
    assert runs(bot) == []
