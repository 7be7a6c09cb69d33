"""The build form end to end: signed commands, clicks, picks and submissions into the real
HTTP endpoint; the Slack stand-in records views.open / views.update and keeps each view
(id, hash) as Slack would, and refuses what Slack refuses (``slack_rules``: no test here
may leave a refused call behind); CodeArts is its stand-in; a real database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import forms
from bot import messages as msg
from bot.lifecycle import RequestState
from bot.standins.slack_requests import view_submission_body
from bot.usergroups import SlackUserGroups
from tests.harness import (
    BACKEND_ID,
    CONFIG,
    DOCS_ID,
    Bot,
    button_value,
    closed_port_url,
    running_bot,
)

DEPLOY_ID = "aaaabbbbccccddddeeeeffff00001111"
FORM_CONFIG = CONFIG + f"""
[jobs.deploy]
id = "{DEPLOY_ID}"
description = "Deploy a version"
users = ["UALICE"]

[jobs.deploy.params.version]
required = true
pattern = '^v[0-9]+$'

[jobs.deploy.params.region]
choices = ["eu", "us"]
"""


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path, config=FORM_CONFIG) as b:
        b.codearts.add_job(DEPLOY_ID)
        yield b
        b.wait_idle()
        assert [(c.method, c.problem) for c in b.slack.refused()] == []


def runs(bot: Bot) -> list[Any]:
    return bot.codearts.requests_to("/v3/jobs/build", "POST")


def view(bot: Bot, n: int = 1) -> dict[str, Any]:
    """The newest open view, once ``n`` views.open / views.update calls have arrived."""
    bot.slack.wait_for(lambda: len(bot.slack.calls("views.open"))
                       + len(bot.slack.calls("views.update")) >= n)
    bot.wait_idle()
    return list(bot.slack.views.values())[-1]


def blocks(v: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["block_id"]: b for b in v["blocks"] if "block_id" in b}


def job_select(v: dict[str, Any]) -> dict[str, Any]:
    """The job select: an input block's element (a view with fields, and submit) or a
    section's accessory (a view with nothing to submit)."""
    block = blocks(v)[forms.JOB_BLOCK]
    return block["element"] if block["type"] == "input" else block["accessory"]


def job_options(v: dict[str, Any]) -> list[str]:
    return [o["value"] for o in job_select(v)["options"]]


def pick(bot: Bot, v: dict[str, Any], job: str, user: str = "UALICE") -> dict[str, Any]:
    before = len(bot.slack.calls("views.update"))
    resp = bot.sender.pick(v, forms.JOB_BLOCK, forms.JOB_ACTION, job, user=user)
    assert resp.status_code == 200
    bot.slack.wait_for(lambda: len(bot.slack.calls("views.update")) > before)
    bot.wait_idle()
    return bot.slack.views[v["id"]]


def submit(bot: Bot, v: dict[str, Any], entered: dict[str, str | None] | None = None,
           user: str = "UALICE") -> dict[str, Any]:
    resp = bot.sender.submit(v, entered, user=user)
    assert resp.status_code == 200, resp.text
    return resp.json() if resp.content else {}


def open_form(bot: Bot, user: str = "UALICE", channel: str = "CBUILDS",
              response_url: str | None = None) -> tuple[dict[str, Any], str]:
    url = response_url or bot.slack.response_url()
    resp = bot.sender.command("", user=user, channel=channel, response_url=url)
    assert resp.status_code == 200 and resp.text == ""  # acked at once, nothing said
    return view(bot), url


# --- opening, picking -----------------------------------------------------------------

def test_build_alone_opens_a_form_listing_only_the_jobs_runnable_here(bot: Bot) -> None:
    v, _ = open_form(bot)
    (call,) = bot.slack.calls("views.open")
    assert call["trigger_id"] and call["view"]["callback_id"] == forms.CALLBACK
    assert job_options(v) == ["backend", "docs", "deploy"]
    assert "submit" not in v  # nothing to submit before a job is picked
    other, _ = open_form(bot, user="UNOBODY", channel="CRANDOM")
    assert job_options(other) == ["docs"]


def test_the_first_form_is_one_slack_accepts_and_picking_updates_it_in_place(
        bot: Bot) -> None:
    """Slack refuses an input block in a view without submit (views.open answers
    invalid_arguments): the first view holds the job select as a section's accessory,
    and the pick (a block_actions) updates that same view with the job's fields."""
    v, _ = open_form(bot)
    assert bot.slack.refused() == [] and v["id"]
    assert all(b["type"] != "input" for b in v["blocks"]) and "submit" not in v
    job = blocks(v)[forms.JOB_BLOCK]
    assert job["type"] == "section" and job["accessory"]["action_id"] == forms.JOB_ACTION
    assert "initial_option" not in job["accessory"]
    picked = pick(bot, v, "deploy")
    (update,) = bot.slack.calls("views.update")
    assert update["view_id"] == v["id"] and update["hash"] == v["hash"]
    assert picked["id"] == v["id"] and picked["hash"] != v["hash"]
    assert list(bot.slack.views) == [v["id"]]  # updated in place, no second modal
    assert blocks(picked)[forms.JOB_BLOCK]["type"] == "input"  # now submit holds it
    assert job_select(picked)["initial_option"]["value"] == "deploy"
    assert "param.version" in blocks(picked) and picked["submit"]["text"] == "Continue"
    assert bot.slack.refused() == []


def test_a_form_submitted_with_no_job_picked_says_to_pick_one(bot: Bot) -> None:
    """The first view has no submit button; should a submission come anyway (or the job
    field come back empty), the answer is an error on the job field."""
    v, _ = open_form(bot)
    answer = submit(bot, v)
    assert answer == {"response_action": "errors",
                      "errors": {forms.JOB_BLOCK: "Pick a job from the list."}}
    bot.wait_idle()
    assert runs(bot) == []


def test_picking_a_job_shows_one_field_per_parameter_with_its_default(bot: Bot) -> None:
    v, _ = open_form(bot)
    v = pick(bot, v, "backend")
    (update,) = bot.slack.calls("views.update")
    assert update["view_id"] == v["id"] and update["hash"]  # never over a newer version
    fields = blocks(v)
    assert list(fields) == [forms.JOB_BLOCK, "param.codeBranch", "param.target",
                            forms.COMMIT_BLOCK, forms.TAG_BLOCK]
    branch, target = fields["param.codeBranch"], fields["param.target"]
    assert branch["element"]["type"] == "plain_text_input"
    assert branch["element"]["initial_value"] == "master" and branch["optional"] is True
    assert target["element"]["type"] == "static_select"
    assert [o["value"] for o in target["element"]["options"]] == ["staging", "prod"]
    assert target["element"]["initial_option"]["value"] == "staging"
    assert fields[forms.JOB_BLOCK]["element"]["initial_option"]["value"] == "backend"
    assert v["submit"]["text"] == "Continue"


def test_required_parameters_are_not_optional(bot: Bot) -> None:
    v = pick(bot, open_form(bot)[0], "deploy")
    assert blocks(v)["param.version"]["optional"] is False
    assert blocks(v)["param.region"]["optional"] is True
    assert "initial_option" not in blocks(v)["param.region"]["element"]


def test_a_job_not_runnable_here_is_not_shown_even_if_picked(bot: Bot) -> None:
    v, _ = open_form(bot, user="UNOBODY", channel="CRANDOM")
    v = pick(bot, v, "backend", user="UNOBODY")  # a forged pick
    assert "param.codeBranch" not in blocks(v) and "submit" not in v


# --- submitting -------------------------------------------------------------------------

def test_bad_values_come_back_on_their_fields_and_nothing_is_sent(bot: Bot) -> None:
    v, url = open_form(bot)
    v = pick(bot, v, "backend")
    answer = submit(bot, v, {"param.codeBranch": "a;b", "param.target": "qa",
                             forms.COMMIT_BLOCK: "xyz", forms.TAG_BLOCK: "-bad"})
    assert answer["response_action"] == "errors"
    errors = answer["errors"]
    assert set(errors) == {"param.codeBranch", "param.target", forms.COMMIT_BLOCK,
                           forms.TAG_BLOCK}
    assert "pattern" in errors["param.codeBranch"] and "staging" in errors["param.target"]
    assert "hexadecimal" in errors[forms.COMMIT_BLOCK]
    bot.wait_idle()
    assert runs(bot) == [] and bot.slack.responses(url) == []
    assert bot.store.audit_rows()[-1]["decision"] == "denied"  # audited like a typed one


def test_a_required_value_left_empty_is_refused_on_its_field(bot: Bot) -> None:
    v = pick(bot, open_form(bot)[0], "deploy")
    answer = submit(bot, v, {"param.version": None})
    assert list(answer["errors"]) == ["param.version"]
    assert "required" in answer["errors"]["param.version"]


def test_a_valid_form_asks_run_cancel_and_run_sends_what_was_entered(bot: Bot) -> None:
    v, url = open_form(bot)
    v = pick(bot, v, "backend")
    answer = submit(bot, v, {"param.codeBranch": "develop", "param.target": "prod",
                             forms.COMMIT_BLOCK: "ABC1234"})
    assert answer == {"response_action": "clear"}
    (question,) = bot.wait_response(url)
    assert "`develop`" in question["text"] and "`prod`" in question["text"]
    assert button_value(question, msg.EDIT) == button_value(question, msg.RUN)
    assert runs(bot) == []  # nothing before Run
    bot.click(msg.RUN, button_value(question, msg.RUN), response_url=url)
    (post,) = bot.slack.wait_for(lambda: bot.slack.calls("chat.postMessage"))
    assert post["channel"] == "CBUILDS"
    (sent,) = runs(bot)
    assert sent.body == {"job_id": BACKEND_ID,
                         "parameter": [{"name": "codeBranch", "value": "develop"},
                                       {"name": "target", "value": "prod"}],
                         "scm": {"build_commit_id": "abc1234"}}
    request = bot.store.get_request(button_value(question, msg.RUN))
    assert request.command == "backend codeBranch=develop target=prod commit=ABC1234"


def test_a_job_without_confirmation_starts_when_the_form_is_submitted(bot: Bot) -> None:
    v, _ = open_form(bot, user="UANYONE", channel="CRANDOM")
    v = pick(bot, v, "docs", user="UANYONE")
    assert v["submit"]["text"] == "Start"
    answer = submit(bot, v, {forms.EXTRA_BLOCK: "lang=en\nnote=two words"}, user="UANYONE")
    assert answer == {"response_action": "clear"}
    (post,) = bot.slack.wait_for(lambda: bot.slack.calls("chat.postMessage"))
    assert post["channel"] == "CRANDOM"
    (sent,) = runs(bot)
    assert sent.body == {"job_id": DOCS_ID, "parameter": [
        {"name": "lang", "value": "en"}, {"name": "note", "value": "two words"}]}


def test_extra_lines_are_checked_like_typed_parameters(bot: Bot) -> None:
    v = pick(bot, open_form(bot, user="UANYONE", channel="CRANDOM")[0], "docs", user="UANYONE")
    answer = submit(bot, v, {forms.EXTRA_BLOCK: "PATH=/tmp"}, user="UANYONE")
    assert "reserved" in answer["errors"][forms.EXTRA_BLOCK]
    answer = submit(bot, v, {forms.EXTRA_BLOCK: "just words"}, user="UANYONE")
    assert "name=value" in answer["errors"][forms.EXTRA_BLOCK]
    bot.wait_idle()
    assert runs(bot) == []


def test_a_stale_response_url_gets_the_question_as_an_ephemeral_post(bot: Bot) -> None:
    v, _ = open_form(bot, response_url=closed_port_url())
    v = pick(bot, v, "backend")
    assert submit(bot, v) == {"response_action": "clear"}
    (post,) = bot.slack.wait_for(lambda: bot.slack.calls("chat.postEphemeral"))
    assert post["channel"] == "CBUILDS" and post["user"] == "UALICE"
    assert any(b.get("type") == "actions" for b in post["blocks"])


# --- never trusting the view ----------------------------------------------------------------

def test_altered_metadata_or_another_user_is_refused(bot: Bot) -> None:
    v = pick(bot, open_form(bot)[0], "backend")
    meta = v["private_metadata"]
    forged = {**v, "private_metadata": meta.replace("CBUILDS", "COTHER")}
    answer = submit(bot, forged)
    assert answer["response_action"] == "update"
    assert "could not be read back" in answer["view"]["blocks"][0]["text"]["text"]
    assert submit(bot, v, user="UMALLORY")["response_action"] == "update"
    bot.wait_idle()
    assert runs(bot) == [] and bot.slack.calls("chat.postEphemeral") == []


def test_a_form_submitted_after_permission_was_lost_is_refused_like_typing(bot: Bot) -> None:
    bot.runtime.flow.groups = SlackUserGroups(bot.runtime.slack, ttl=0)  # no caching
    bot.slack.usergroups["SDEVS"] = ["UBOB"]
    v = pick(bot, open_form(bot, user="UBOB")[0], "backend", user="UBOB")
    bot.slack.usergroups["SDEVS"] = []
    answer = submit(bot, v, user="UBOB")
    assert answer["response_action"] == "update"
    shown = answer["view"]["blocks"][0]["text"]["text"]
    typed = bot.reply(*bot.command("backend", user="UBOB"))
    assert "You may not run `backend`" in shown and "You may not run `backend`" in typed["text"]
    bot.wait_idle()
    assert runs(bot) == []


def test_a_form_whose_fields_are_for_another_job_is_not_accepted(bot: Bot) -> None:
    v = pick(bot, open_form(bot)[0], "backend")
    answer = submit(bot, v, {forms.JOB_BLOCK: "deploy"})  # picked, not yet updated
    assert list(answer["errors"]) == [forms.JOB_BLOCK]


# --- /build <job>, Edit parameters, help ---------------------------------------------------

def test_a_job_missing_a_required_value_opens_the_form_for_it(bot: Bot) -> None:
    resp, url = bot.command("deploy")
    assert resp.status_code == 200 and resp.text == ""
    v = view(bot)
    assert job_select(v)["initial_option"]["value"] == "deploy"
    assert "param.version" in blocks(v)
    answer = submit(bot, v, {"param.version": "v7", "param.region": "eu"})
    assert answer == {"response_action": "clear"}
    (question,) = bot.wait_response(url)
    assert "`v7`" in question["text"]


def test_a_job_with_every_value_opens_no_form(bot: Bot) -> None:
    rid, _url = bot.confirmation("backend")
    assert bot.slack.calls("views.open") == []
    assert rid and bot.store.get_request(rid).state is RequestState.PENDING


def test_when_slack_will_not_open_the_form_the_typed_answer_is_given(bot: Bot) -> None:
    bot.slack.error("views.open", "expired_trigger_id")
    _resp, url = bot.command("deploy")
    (answer,) = bot.wait_response(url)
    assert "`version` is required" in answer["text"]


def test_edit_parameters_replaces_the_question_and_kills_the_old_one(bot: Bot) -> None:
    rid, _url = bot.confirmation("backend codeBranch=develop tag=v1")
    edit_url = bot.slack.response_url()
    bot.click(msg.EDIT, rid, response_url=edit_url)
    v = view(bot)
    fields = blocks(v)
    assert fields["param.codeBranch"]["element"]["initial_value"] == "develop"
    assert fields[forms.TAG_BLOCK]["element"]["initial_value"] == "v1"
    assert submit(bot, v, {"param.codeBranch": "feature/x"}) == {"response_action": "clear"}
    replaced, question = bot.wait_response(edit_url, 2)
    assert replaced["replace_original"] is True and "replaced" in replaced["text"]
    assert bot.store.get_request(rid).state is RequestState.CANCELLED
    bot.click(msg.RUN, rid, response_url=edit_url)  # the old Run button
    bot.wait_idle()
    assert runs(bot) == []
    new = button_value(question, msg.RUN)
    assert new != rid
    bot.click(msg.RUN, new, response_url=edit_url)
    bot.slack.wait_for(lambda: runs(bot))
    bot.wait_idle()
    (sent,) = runs(bot)
    assert sent.body["parameter"][0] == {"name": "codeBranch", "value": "feature/x"}
    assert sent.body["scm"] == {"build_tag": "v1"}


def test_edit_on_someone_elses_question_opens_nothing(bot: Bot) -> None:
    rid, _ = bot.confirmation("backend")
    url = bot.slack.response_url()
    bot.click(msg.EDIT, rid, user="UADMIN", response_url=url)
    (answer,) = bot.wait_response(url)
    assert "Only <@UALICE>" in answer["text"] and bot.slack.calls("views.open") == []


def test_help_has_an_open_the_form_button_per_job(bot: Bot) -> None:
    body = bot.reply(*bot.command("help"))
    buttons = [e for b in body["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [b["value"] for b in buttons] == ["backend", "docs", "deploy"]
    assert buttons[0]["text"]["text"] == "Open the form: backend"
    bot.click(buttons[2]["action_id"], "deploy")
    v = view(bot)
    assert job_select(v)["initial_option"]["value"] == "deploy"


def test_list_stays_text(bot: Bot) -> None:
    body = bot.reply(*bot.command("list"))
    assert "`backend`" in body["text"] and bot.slack.calls("views.open") == []


def test_a_form_submission_needs_a_valid_signature(bot: Bot) -> None:
    v = pick(bot, open_form(bot)[0], "backend")
    resp = bot.sender.post(view_submission_body(v, user="UALICE"), secret="wrong")
    assert resp.status_code == 401
    bot.wait_idle()
    assert runs(bot) == [] and bot.slack.calls("chat.postEphemeral") == []
