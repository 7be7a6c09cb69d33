"""A stored request is checked again against the configuration in force just before it
is sent: a Run click on a pending question, the approval that makes it enough, and the
queue's turn. Each test asks under one jobs file, restarts the bot on the same database
under a stricter one, then acts: nothing reaches CodeArts, the request ends refused, and
the people involved are told why in the words of a refused command. Rebuild sends the
stored parameters as data, never re-read from the command text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot import messages as msg
from tests.harness import BACKEND_ID, CONFIG, OTHER_ID, Bot, button_value, run_value, running_bot

TARGET_PROD = CONFIG  # backend: users UALICE, choices staging/prod

NO_ALICE = CONFIG.replace('users = ["UALICE"]', 'users = ["UBOB"]', 1)
STAGING_ONLY = CONFIG.replace('choices = ["staging", "prod"]', 'choices = ["staging"]', 1)

GATED = CONFIG + f"""
[jobs.deploy]
id = "{OTHER_ID}"
users = ["UALICE"]
approvers = ["UCAROL"]
approval_channel = "CBUILDS"
"""
GATED_NO_ALICE = GATED.replace('users = ["UALICE"]\napprovers', 'users = ["UBOB"]\napprovers')

QUEUED = CONFIG + f"""
[jobs.single]
id = "{OTHER_ID}"
users = ["UALICE", "UBOB"]
max_running = 1
"""
QUEUED_NO_BOB = QUEUED.replace('users = ["UALICE", "UBOB"]', 'users = ["UALICE"]')


def runs(bot: Bot) -> list[Any]:
    return bot.codearts.requests_to("/v3/jobs/build", "POST")


def decisions(bot: Bot, rid: str) -> list[str]:
    return [r["decision"] for r in bot.store.audit_rows(request_id=rid)]


def blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    found = message.get("blocks") or []
    return json.loads(found) if isinstance(found, str) else list(found)


def click(bot: Bot, action: str, value: str, user: str) -> dict[str, Any]:
    """A click; what the clicker alone was told (the first response)."""
    url = bot.slack.response_url()
    assert bot.click(action, value, user=user, response_url=url).status_code == 200
    bot.wait_idle()
    return (bot.slack.responses(url) or [{}])[0]


def refused(bot: Bot, rid: str, said: dict[str, Any], problem: str) -> None:
    """Nothing sent, the request refused and audited, and ``said`` gives the reason."""
    assert runs(bot) == []
    assert bot.store.get_request(rid).state == "refused"
    assert "refused_when_sent" in decisions(bot, rid)
    assert "checked again" in said["text"] and problem in said["text"]


# --- Run on a pending question -------------------------------------------------------------

def test_run_after_the_user_was_removed_sends_nothing(db_url: str, tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path, config=CONFIG) as one:
        rid, _ = one.confirmation("backend target=prod")
    with running_bot(db_url, tmp_path, config=NO_ALICE) as two:
        said = click(two, msg.RUN, rid, "UALICE")
        refused(two, rid, said, "may not run")
        assert said["replace_original"] is True  # the question is gone


def test_run_after_the_choices_were_tightened_sends_nothing(db_url: str,
                                                            tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path, config=CONFIG) as one:
        rid, _ = one.confirmation("backend target=prod")
    with running_bot(db_url, tmp_path, config=STAGING_ONLY) as two:
        said = click(two, msg.RUN, rid, "UALICE")
        refused(two, rid, said, "can only be `staging`")
        # a second click changes nothing and says so
        again = click(two, msg.RUN, rid, "UALICE")
        assert "was refused when checked again" in again["text"] and runs(two) == []


def test_run_still_allowed_sends_the_stored_body(db_url: str, tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path, config=CONFIG) as one:
        rid, _ = one.confirmation("backend target=prod codeBranch=main")
    with running_bot(db_url, tmp_path, config=STAGING_ONLY.replace(
            'choices = ["staging"]', 'choices = ["prod", "staging"]')) as two:
        click(two, msg.RUN, rid, "UALICE")
        two.slack.wait_for(lambda: len(runs(two)) == 1)
        (sent,) = runs(two)
        assert sent.body["parameter"] == [{"name": "codeBranch", "value": "main"},
                                          {"name": "target", "value": "prod"}]
        assert two.store.get_request(rid).state == "started"


def test_a_job_entry_that_now_names_another_task_refuses(db_url: str,
                                                         tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path, config=CONFIG) as one:
        rid, _ = one.confirmation("backend")
    moved = CONFIG.replace(f'id = "{BACKEND_ID}"', f'id = "{OTHER_ID}"', 1)
    with running_bot(db_url, tmp_path, config=moved) as two:
        two.codearts.add_job(OTHER_ID)
        said = click(two, msg.RUN, rid, "UALICE")
        refused(two, rid, said, "now names another build task")


# --- the approval that makes it enough --------------------------------------------------

def test_approve_after_the_requester_was_removed_sends_nothing(db_url: str,
                                                               tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path, config=GATED) as one:
        one.codearts.add_job(OTHER_ID)
        rid, url = one.confirmation("deploy")
        one.click(msg.RUN, rid, response_url=url)
        assert "waiting for approval" in one.wait_response(url, 2)[1]["text"]
        one.wait_idle()
    with running_bot(db_url, tmp_path, config=GATED_NO_ALICE) as two:
        two.codearts.add_job(OTHER_ID)
        told = click(two, msg.APPROVE, rid, "UCAROL")
        refused(two, rid, told, "may not run")
        assert told["replace_original"] is False  # the approver's own note
        (closed,) = two.slack.calls("chat.update")
        text = closed["text"] + json.dumps(blocks(closed))
        assert "Approved by" in text and "not started" in text
        assert msg.APPROVE not in json.dumps(blocks(closed))  # no buttons left
        # the requester hears it too, where they were waiting
        assert any("checked again" in r["text"] for r in two.slack.responses(url))


# --- the queue's turn -------------------------------------------------------------------

def test_a_queued_request_refused_at_its_turn(db_url: str, tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path, config=QUEUED) as one:
        one.codearts.add_job(OTHER_ID, duration=3600 * 24)
        first, url = one.confirmation("single")
        one.click(msg.RUN, first, response_url=url)
        one.slack.wait_for(lambda: len(runs(one)) == 1)
        one.wait_idle()
        resp, burl = one.command("single", user="UBOB")
        question = one.reply(resp, burl)
        queued = button_value(question, msg.QUEUE)
        click(one, msg.QUEUE, queued, "UBOB")
        assert one.store.get_request(queued).state == "queued"
        one.codearts.set_status(OTHER_ID, 1, "SUCCESS")  # the build ends; the bot stops
        one.clock.advance(20)                               # before its next pass
        one.runtime.watcher.run_once()
        assert one.store.get_request(queued).state == "queued"
    with running_bot(db_url, tmp_path, config=QUEUED_NO_BOB) as two:
        two.codearts.add_job(OTHER_ID)
        two.runtime.watcher.run_once()
        two.runtime.watcher.run_once()
        two.wait_idle()
        assert runs(two) == []
        assert two.store.get_request(queued).state == "refused"
        told = [m for m in two.slack.calls("chat.postMessage") if m.get("channel") == "UBOB"] \
            + two.slack.responses()
        assert any("checked again" in str(m.get("text")) for m in told)


# --- Rebuild sends what was sent ------------------------------------------------------------

def test_rebuild_reuses_the_parameters_as_data(db_url: str, tmp_path: Path) -> None:
    """A form value holding quotes, which the command parser would read as a second
    parameter, comes back from Rebuild exactly as sent, with no commit the original never
    had."""
    from bot import forms

    with running_bot(db_url, tmp_path) as bot:
        tricky = "a\u201d commit=\u201cdeadbeefdeadbeefdeadbeefdeadbeefdeadbeef"
        url = bot.slack.response_url()
        assert bot.sender.command("", user="UANY", channel="CRANDOM",
                                  response_url=url).status_code == 200
        bot.slack.wait_for(lambda: bot.slack.calls("views.open"))
        bot.wait_idle()
        v = list(bot.slack.views.values())[-1]
        bot.sender.pick(v, forms.JOB_BLOCK, forms.JOB_ACTION, "docs", user="UANY")
        bot.slack.wait_for(lambda: bot.slack.calls("views.update"))
        bot.wait_idle()
        v = bot.slack.views[v["id"]]
        resp = bot.sender.submit(v, {forms.EXTRA_BLOCK: f"msg={tricky}"}, user="UANY")
        assert resp.json() == {"response_action": "clear"}
        bot.slack.wait_for(lambda: len(runs(bot)) == 1)
        bot.wait_idle()
        (first,) = runs(bot)
        assert first.body["parameter"] == [{"name": "msg", "value": tricky}]
        (rid,) = {r["request_id"] for r in bot.store.audit_rows() if r["request_id"]}
        rebuild_url = bot.slack.response_url()
        bot.click(msg.REBUILD, rid, user="UANY", channel="CRANDOM", response_url=rebuild_url)
        question = bot.wait_response(rebuild_url)[-1]
        assert "Run this build again?" in question["text"], question["text"]
        assert "build_commit_id" not in json.dumps(question) and "• commit" not in \
            question["text"]
        bot.click(msg.RUN, run_value(question), user="UANY", channel="CRANDOM",
                  response_url=rebuild_url)
        bot.slack.wait_for(lambda: len(runs(bot)) == 2)
        assert runs(bot)[1].body == first.body == {
            "job_id": first.body["job_id"], "parameter": [{"name": "msg", "value": tricky}]}
