"""Input hygiene (issue 26): invisible and reordering characters refused in the command and
the form alike, forged button values, requests from another workspace, where a
subscription may post. Signed requests into the real HTTP endpoint, the Slack and
CodeArts stand-ins on loopback, a real database (SQLite, and PostgreSQL when
TEST_DATABASE_URL is set)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import pytest

from bot import forms
from bot import messages as msg
from bot.gate import BUTTON_VALUES, rule_for
from bot.home_view import HOME_RUN
from bot.standins.slack_requests import (
    action_body,
    command_body,
    signed_headers,
    view_submission_body,
)
from tests.harness import BACKEND_ID, CONFIG, Bot, button_value, running_bot

HIDDEN = [("\u202e", "U+202E RIGHT-TO-LEFT OVERRIDE"), ("\u2066", "U+2066 LEFT-TO-RIGHT ISOLATE"),
          ("\u200f", "U+200F RIGHT-TO-LEFT MARK"), ("\u061c", "U+061C ARABIC LETTER MARK"),
          ("\u2028", "U+2028 LINE SEPARATOR"), ("\u2029", "U+2029 PARAGRAPH SEPARATOR"),
          ("\u200b", "U+200B ZERO WIDTH SPACE"), ("\u200d", "U+200D ZERO WIDTH JOINER"),
          ("\u2060", "U+2060 WORD JOINER"), ("\ufeff", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
          ("\u00ad", "U+00AD SOFT HYPHEN"), ("\U000e0041", "U+E0041 TAG LATIN CAPITAL LETTER A"),
          ("\u3164", "U+3164 HANGUL FILLER")]


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path, config=CONFIG) as b:
        yield b
        b.wait_idle()
        assert [(c.method, c.problem) for c in b.slack.refused()] == []


def runs(bot: Bot) -> list[Any]:
    return bot.codearts.requests_to("/v3/jobs/build", "POST")


def said(bot: Bot, text: str, *, user: str = "UALICE", channel: str = "CBUILDS") -> str:
    """What the typist was told (the ack's body or the first response), as text."""
    resp, url = bot.command(text, user=user, channel=channel)
    reply = bot.reply(resp, url)
    bot.wait_idle()
    assert reply.get("response_type") == "ephemeral", reply
    return str(reply["text"])


# --- invisible and reordering characters ------------------------------------------------

@pytest.mark.parametrize(("char", "named"), HIDDEN)
def test_a_value_with_an_invisible_character_is_refused_by_name(bot: Bot, char: str,
                                                                named: str) -> None:
    text = said(bot, f"docs msg=deploy{char}now", user="UANYONE", channel="CRANDOM")
    assert f"The value of `msg` holds an invisible character ({named})" in text
    assert "type it again without it" in text
    assert runs(bot) == [] and bot.slack.calls("chat.postMessage") == []


@pytest.mark.parametrize(("text", "expected"), [
    ("docs ms\u200bg=x", "The parameter name `ms[U+200B]g` holds an invisible character "
                         "(U+200B ZERO WIDTH SPACE)"),
    ("do\u202ecs", "The job name `do[U+202E]cs` holds an invisible character "
                   "(U+202E RIGHT-TO-LEFT OVERRIDE)"),
    ("docs tag=v1\u2069", "The tag holds an invisible character (U+2069 POP DIRECTIONAL "
                          "ISOLATE)"),
    ("docs msg=end\u2028", "The value of `msg` holds an invisible character (U+2028 LINE "
                           "SEPARATOR)"),
    ("docs msg=x\u2029tag=v1", "The value of `msg` holds an invisible character (U+2029 "
                               "PARAGRAPH SEPARATOR)"),
    ("status do\u200ccs", "The job name `do[U+200C]cs` holds an invisible character"),
    ("stop do\u200ecs 4", "The job name `do[U+200E]cs` holds an invisible character"),
])
def test_names_tags_and_job_names_with_invisible_characters_are_refused(
        bot: Bot, text: str, expected: str) -> None:
    shown = said(bot, text, user="UANYONE", channel="CRANDOM")
    assert expected in shown, shown
    assert runs(bot) == [] and bot.slack.calls("chat.postMessage") == []


def test_visible_unicode_still_runs(bot: Bot) -> None:
    """Accents, CJK, right-to-left letters, emoji and a tab are not invisible characters:
    they are sent as typed."""
    resp, _ = bot.command("docs msg=\"café 構築 שלום 🚀\tend\"", user="UANYONE",
                          channel="CRANDOM")
    assert resp.status_code == 200
    bot.slack.wait_for(lambda: runs(bot))
    bot.wait_idle()
    (sent,) = runs(bot)
    assert sent.body["parameter"] == [{"name": "msg", "value": "café 構築 שלום 🚀\tend"}]


def _form(bot: Bot, job: str, *, user: str, channel: str) -> dict[str, Any]:
    url = bot.slack.response_url()
    resp = bot.sender.command("", user=user, channel=channel, response_url=url)
    assert resp.status_code == 200
    bot.slack.wait_for(lambda: bot.slack.calls("views.open"))
    bot.wait_idle()
    v = list(bot.slack.views.values())[-1]
    before = len(bot.slack.calls("views.update"))
    assert bot.sender.pick(v, forms.JOB_BLOCK, forms.JOB_ACTION, job,
                           user=user).status_code == 200
    bot.slack.wait_for(lambda: len(bot.slack.calls("views.update")) > before)
    bot.wait_idle()
    return bot.slack.views[v["id"]]


@pytest.mark.parametrize(("entered", "block", "expected"), [
    ({"param.codeBranch": "main\u202e"}, "param.codeBranch",
     "The value of `codeBranch` holds an invisible character (U+202E RIGHT-TO-LEFT OVERRIDE)"),
    ({forms.TAG_BLOCK: "v1\u200b"}, forms.TAG_BLOCK,
     "The tag holds an invisible character (U+200B ZERO WIDTH SPACE)"),
    ({forms.COMMIT_BLOCK: "abc\ufeff"}, forms.COMMIT_BLOCK, "is not a commit ID"),
])
def test_the_form_refuses_invisible_characters_on_their_field(
        bot: Bot, entered: dict[str, str], block: str, expected: str) -> None:
    v = _form(bot, "backend", user="UALICE", channel="CBUILDS")
    resp = bot.sender.submit(v, entered, user="UALICE")
    assert resp.status_code == 200
    answer = resp.json()
    assert answer["response_action"] == "errors"
    assert expected in answer["errors"][block]
    bot.wait_idle()
    assert runs(bot) == []


@pytest.mark.parametrize(("extra", "expected"), [
    ("msg=a\u2028b", "The value of `msg` holds an invisible character (U+2028 LINE SEPARATOR)"),
    ("m\u200dsg=a", "The parameter name `m[U+200D]sg` holds an invisible character"),
    ("msg=x\u2066y\u2069", "The value of `msg` holds an invisible character (U+2066"),
])
def test_the_forms_extra_lines_refuse_invisible_characters(bot: Bot, extra: str,
                                                           expected: str) -> None:
    v = _form(bot, "docs", user="UANYONE", channel="CRANDOM")
    resp = bot.sender.submit(v, {forms.EXTRA_BLOCK: extra}, user="UANYONE")
    answer = resp.json()
    assert answer["response_action"] == "errors"
    assert expected in answer["errors"][forms.EXTRA_BLOCK]
    bot.wait_idle()
    assert runs(bot) == []


# --- forged button values ---------------------------------------------------------------

REQUEST_ID = "0123456789abcdef0123456789abcdef"  # the shape of one, known to nobody
FORGED = ["", "nope", "²", "٣" * 32, REQUEST_ID.upper(), REQUEST_ID + "0", REQUEST_ID[:-1],
          REQUEST_ID[:-1] + "²", "\x00" * 32, REQUEST_ID[:-1] + "\u202e", "a" * 3000,
          f"{BACKEND_ID}:1", "../" * 11, 7, None, ["x"], {"id": REQUEST_ID}]
FORGED_STOPS = [f"{BACKEND_ID}:²", f"{BACKEND_ID}:-1", f"{BACKEND_ID}:1e3", f"{BACKEND_ID}: 1",
                f"{BACKEND_ID}:{'9' * 19}", f"{BACKEND_ID}:", f"{BACKEND_ID}:١٢",
                f"{BACKEND_ID[:-1]}é:1", f"{BACKEND_ID}:1:2", REQUEST_ID, "", 42, None]
CASES = {action: FORGED_STOPS if action in (msg.STOP_CONFIRM, msg.STOP_KEEP) else FORGED
         for action in sorted(BUTTON_VALUES)}
CASES[f"{msg.OPEN_FORM}.0"] = ["nosuchjob", "", "backend\u200b", "docs ", 3, None]
CASES[HOME_RUN] = CASES[f"{msg.OPEN_FORM}.0"]  # the App Home's Run… (a job's name)


def click_carrying(bot: Bot, action_id: str, value: Any, *, user: str = "UALICE",
                   team: str = "T1", url: str) -> httpx.Response:
    """A signed click whose button carries ``value`` (any JSON, as a forger can send)."""
    payload = json.loads(parse_qs(action_body(
        action_id, "", user=user, channel="CBUILDS", response_url=url,
        team=team).decode())["payload"][0])
    payload["actions"][0]["value"] = value
    return bot.sender.post(urlencode({"payload": json.dumps(payload)}).encode())


@pytest.mark.parametrize("action_id", sorted(CASES))
def test_a_forged_button_value_gets_a_clear_refusal_and_no_error(bot: Bot,
                                                                 action_id: str) -> None:
    """Every button the bot listens to, with every forged value (a table): each click gets
    "That button is no longer valid" and nothing else; no error ID, nothing sent."""
    for value in CASES[action_id]:
        url = bot.slack.response_url()
        resp = click_carrying(bot, action_id, value, url=url)
        assert resp.status_code == 200 and resp.text == "", value
        (reply,) = bot.wait_response(url)
        bot.wait_idle()
        assert reply["response_type"] == "ephemeral"
        assert reply["text"].startswith(":no_entry_sign: That button is no longer valid"), value
        assert bot.slack.responses(url) == [reply]  # nothing else said
    shown = repr(bot.slack.all_calls())
    assert "error ID" not in shown and "Something went wrong" not in shown
    assert [r for r in bot.codearts.requests if r.method != "GET"] == []  # nothing sent


def test_every_button_the_bot_listens_to_has_a_value_rule() -> None:
    """``create_app`` refuses a button without one; the table covers each action id."""
    listened = {msg.RUN, msg.CANCEL, msg.STOP, msg.REBUILD, msg.APPROVE, msg.REJECT,
                msg.WITHDRAW, msg.QUEUE, msg.RUN_ANYWAY, msg.LEAVE, msg.EDIT, msg.STOP_CONFIRM,
                msg.STOP_KEEP, HOME_RUN, msg.NOTIFY, msg.ON_IT}
    assert set(BUTTON_VALUES) == listened
    assert rule_for(f"{msg.OPEN_FORM}.12") is not None and rule_for("buildbot.other") is None


def test_the_stop_question_still_works_with_its_own_value(bot: Bot) -> None:
    """The real Stop-confirmation value passes the check and stops the build."""
    bot.codearts.add_job(BACKEND_ID, duration=3600)
    run_id, url = bot.confirmation("backend")
    bot.click(msg.RUN, run_id, response_url=url)
    build = bot.slack.wait_for(lambda: bot.store.get_build(run_id))
    asked_url = bot.slack.response_url()
    resp = bot.sender.command(f"stop backend {build.build_no}", user="UALICE",
                              channel="CBUILDS", response_url=asked_url)
    assert resp.status_code == 200
    (question,) = bot.wait_response(asked_url)
    value = button_value(question, msg.STOP_CONFIRM)
    assert value == f"{BACKEND_ID}:{build.build_no}"
    stop_url = bot.slack.response_url()
    bot.click(msg.STOP_CONFIRM, value, response_url=stop_url)
    bot.slack.wait_for(lambda: bot.codearts.requests_to(
        f"/v3/jobs/{BACKEND_ID}/{build.build_no}/stop", "POST"))
    bot.wait_idle()
    assert "no longer valid" not in json.dumps(bot.slack.responses(stop_url))


def test_a_form_whose_metadata_is_forged_with_any_characters_is_refused_plainly(
        bot: Bot) -> None:
    v = _form(bot, "docs", user="UANYONE", channel="CRANDOM")
    for metadata in ["é.x", "\u202e.{}", ".", "x" * 3000]:
        resp = bot.sender.submit({**v, "private_metadata": metadata}, user="UANYONE")
        assert resp.status_code == 200
        answer = resp.json()
        assert answer["response_action"] == "update"
        assert "could not be read back" in json.dumps(answer["view"])
    bot.wait_idle()
    assert runs(bot) == []


# --- requests from another workspace ----------------------------------------------------

def test_requests_from_another_workspace_are_refused_and_logged_once_per_workspace(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    """The bot token's workspace is T1 (auth.test at start); T2 and T3 are refused: a
    command in its ack, a click through its response_url, a form in the form, an event
    acknowledged; each other workspace logged once."""
    assert bot.runtime.workspace.team_id == "T1"
    caplog.set_level("WARNING", logger="bot.gate")
    url = bot.slack.response_url()
    for _ in range(3):
        resp = bot.sender.post(command_body("docs", user="UANYONE", channel="CRANDOM",
                                            response_url=url, team="T2"))
        assert resp.status_code == 200
        assert resp.json()["text"].startswith(":no_entry_sign: buildbot serves another Slack")
    run_id, _ = bot.confirmation("backend")  # a real question, in T1
    click_url = bot.slack.response_url()
    resp = bot.sender.post(action_body(msg.RUN, run_id, user="UALICE", channel="CBUILDS",
                                       response_url=click_url, team="T3"))
    assert resp.status_code == 200 and resp.text == ""
    (reply,) = bot.wait_response(click_url)
    assert "another Slack workspace" in reply["text"] and reply["response_type"] == "ephemeral"
    v = _form(bot, "docs", user="UANYONE", channel="CRANDOM")
    resp = bot.sender.post(view_submission_body(v, user="UANYONE", team="T2"))
    assert resp.json()["response_action"] == "update"
    assert "another Slack workspace" in json.dumps(resp.json()["view"])
    event = json.dumps({"type": "event_callback", "team_id": "T3", "api_app_id": "A1",
                        "event": {"type": "app_mention", "text": "hi"}}).encode()
    resp = bot.sender.http.post(bot.sender.url, content=event, headers={
        **signed_headers(bot.sender.secret, event), "Content-Type": "application/json"})
    assert resp.status_code == 200 and resp.text == ""
    bot.wait_idle()
    assert runs(bot) == []
    assert bot.store.get_request(run_id).state == "pending"  # the T3 click did nothing
    logged = [r.getMessage() for r in caplog.records if "another Slack workspace" in
              r.getMessage()]
    assert len(logged) == 2, logged  # T2 once, T3 once
    assert "team='T2'" in logged[0] and "team='T3'" in logged[1]


def test_a_user_of_another_workspace_in_a_shared_channel_is_refused(bot: Bot) -> None:
    """A click whose user belongs to another workspace (a Slack Connect channel) is refused
    even when the request names ours as its team."""
    run_id, url = bot.confirmation("backend")
    payload = json.loads(parse_qs(action_body(msg.RUN, run_id, user="UALICE", channel="CBUILDS",
                                              response_url=url).decode())["payload"][0])
    payload["user"]["team_id"] = "TOTHER"
    resp = bot.sender.post(urlencode({"payload": json.dumps(payload)}).encode())
    assert resp.status_code == 200
    replies = bot.wait_response(url, 2)
    assert "another Slack workspace" in replies[-1]["text"]
    bot.wait_idle()
    assert runs(bot) == []


def test_the_same_requests_from_the_bots_workspace_are_served(bot: Bot) -> None:
    resp, _ = bot.command("docs", user="UANYONE", channel="CRANDOM")
    assert resp.status_code == 200
    bot.slack.wait_for(lambda: runs(bot))
    bot.wait_idle()
    assert len(runs(bot)) == 1


# --- where a subscription may post ------------------------------------------------------

def subscribe(bot: Bot, channel: str, user: str = "UANYONE") -> dict[str, Any]:
    resp, url = bot.command("subscribe docs", user=user, channel=channel)
    reply = bot.reply(resp, url)
    bot.wait_idle()
    return reply


@pytest.mark.parametrize(("channel", "kind", "member", "said"), [
    ("DALICE", "im", True, "Subscriptions post in channels, not in direct messages"),
    ("GGROUPDM", "mpim", True, "Subscriptions post in channels, not in direct messages"),
    ("CSECRET", "private", False,
     "buildbot cannot see this channel, so it cannot post here: invite @buildbot to it first"),
    ("COLD", "archived", True, "#old is archived"),
])
def test_subscribe_refuses_where_the_bot_cannot_post(bot: Bot, channel: str, kind: str,
                                                     member: bool, said: str) -> None:
    if kind == "archived":
        bot.slack.conversation(channel, "public", name="old", archived=True)
    else:
        bot.slack.conversation(channel, kind, member=member)
    reply = subscribe(bot, channel)
    assert reply["response_type"] == "ephemeral"
    assert reply["text"].startswith(":no_entry: This conversation cannot be subscribed")
    assert said in reply["text"], reply["text"]
    assert [c["channel"] for c in bot.slack.calls("conversations.info")] == [channel]
    assert bot.store.subscriptions_of(channel_id=channel) == []
    assert bot.slack.calls("chat.postMessage") == []  # nothing said in the conversation
    assert bot.store.audit_rows()[-1]["decision"] == "denied"


def test_a_direct_message_is_refused_by_what_slack_says_not_by_its_id(bot: Bot) -> None:
    """An ID that does not look like a DM, but Slack says is one, is refused."""
    bot.slack.conversation("CLOOKSLIKEACHANNEL", "im")
    reply = subscribe(bot, "CLOOKSLIKEACHANNEL")
    assert "not in direct messages" in reply["text"]
    assert bot.store.subscriptions_of(channel_id="CLOOKSLIKEACHANNEL") == []


def test_a_missing_scope_is_refused_saying_which(bot: Bot) -> None:
    bot.slack.scopes.discard("im:read")
    reply = subscribe(bot, "DALICE")
    assert "Slack wants the scope im:read" in reply["text"]
    assert "channels:read, groups:read, im:read and mpim:read" in reply["text"]
    assert bot.store.subscriptions_of(channel_id="DALICE") == []


def test_no_answer_from_slack_subscribes_nothing(bot: Bot) -> None:
    bot.slack.fail("conversations.info", status=500, count=10)
    reply = subscribe(bot, "CBUILDS")
    assert "Slack did not say whether buildbot can post in this channel" in reply["text"]
    assert bot.store.subscriptions_of(channel_id="CBUILDS") == []


@pytest.mark.parametrize(("channel", "kind", "member"), [
    ("CPUBLIC", "public", True), ("CNOTJOINED", "public", False), ("GPRIVATE", "private", True)])
def test_subscribe_works_in_channels_the_bot_can_post_in(bot: Bot, channel: str, kind: str,
                                                         member: bool) -> None:
    bot.slack.conversation(channel, kind, member=member)
    reply = subscribe(bot, channel)
    assert ":bell:" in reply["text"], reply["text"]
    (sub,) = bot.store.subscriptions_of(channel_id=channel)
    assert sub.job_name == "docs"


def test_a_request_before_the_start_answer_asks_slack_which_workspace(bot: Bot) -> None:
    """HTTP mode serves while auth.test is asked at start: a request that comes first has
    the guard ask auth.test itself (once), and is then judged like any other."""
    bot.runtime.workspace.team_id = None  # as before the answer at start
    asked = len(bot.slack.calls("auth.test"))
    url = bot.slack.response_url()
    resp = bot.sender.post(command_body("docs", user="UANYONE", channel="CRANDOM",
                                        response_url=url, team="T2"))
    assert "another Slack workspace" in resp.json()["text"]
    assert len(bot.slack.calls("auth.test")) == asked + 1
    assert bot.runtime.workspace.team_id == "T1"
    bot.slack.fail("auth.test", status=500, count=10)
    bot.runtime.workspace.team_id = None
    resp, _ = bot.command("docs", user="UANYONE", channel="CRANDOM")  # Slack does not answer
    assert "very busy" in resp.json()["text"]
    bot.wait_idle()
    assert runs(bot) == []
