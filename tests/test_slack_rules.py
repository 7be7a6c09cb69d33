"""The Slack stand-in refuses what real Slack documents it refuses (bot/standins/
slack_rules.py), so a view or message the bot builds wrong fails the suite instead of
failing real users. Each rule: one call that breaks it, sent with slack_sdk's own clients
(WebClient, WebhookClient) over HTTP, answered as Slack answers; and one at the limit,
accepted. A refused call is recorded, but Slack takes nothing from it: no view, no
trigger_id, no message."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from bot.standins.slack import FakeSlack

_TRIGGERS = itertools.count(1)


def trigger() -> str:
    return f"1.{next(_TRIGGERS)}.t"


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def client(slack: FakeSlack) -> WebClient:
    return WebClient(token="xoxb-test", base_url=slack.api_url)


def plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def select(options: int = 2, *, text: str = "option", placeholder: str = "Pick",
           action_id: str = "pick") -> dict[str, Any]:
    return {"type": "static_select", "action_id": action_id, "placeholder": plain(placeholder),
            "options": [{"text": plain(text if i == 0 else f"option {i}"), "value": f"v{i}"}
                        for i in range(options)]}


def input_block(block_id: str = "field", element: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    return {"type": "input", "block_id": block_id, "label": plain("Field"),
            "element": element or {"type": "plain_text_input", "action_id": "value"}}


def section(text: str = "Hello", block_id: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    if block_id is not None:
        block["block_id"] = block_id
    return block


def button(action_id: str, value: str = "v") -> dict[str, Any]:
    return {"type": "button", "text": plain("Go"), "action_id": action_id, "value": value}


def modal(**fields: Any) -> dict[str, Any]:
    """A view Slack accepts; ``fields`` replace its own (None drops one)."""
    view: dict[str, Any] = {"type": "modal", "callback_id": "form", "title": plain("A form"),
                            "close": plain("Cancel"), "submit": plain("Start"),
                            "private_metadata": "m", "blocks": [input_block()]}
    view.update(fields)
    return {k: v for k, v in view.items() if v is not None}


# Each: a view breaking one rule, and where Slack's [ERROR] line points.
BAD_VIEWS: dict[str, tuple[dict[str, Any], str]] = {
    "input block without submit": (modal(submit=None), "/view/submit"),
    "title over 24": (modal(title=plain("t" * 25)), "/view/title/text"),
    "submit over 24": (modal(submit=plain("s" * 25)), "/view/submit/text"),
    "close over 24": (modal(close=plain("c" * 25)), "/view/close/text"),
    "over 100 blocks": (modal(blocks=[section() for _ in range(101)]), "/view/blocks"),
    "metadata over 3000": (modal(private_metadata="m" * 3001), "/view/private_metadata"),
    "callback_id over 255": (modal(callback_id="c" * 256), "/view/callback_id"),
    "duplicate block_id": (modal(blocks=[input_block("x"), section(block_id="x")]),
                           "/view/blocks/1/block_id"),
    "duplicate action_id in a block": (
        modal(blocks=[{"type": "actions", "block_id": "a",
                       "elements": [button("go"), button("go", "w")]}]),
        "/view/blocks/0/elements/1/action_id"),
    "option text over 75": (modal(blocks=[input_block(element=select(text="o" * 76))]),
                            "/view/blocks/0/element/options/0/text/text"),
    "over 100 options": (modal(blocks=[input_block(element=select(options=101))]),
                         "/view/blocks/0/element/options"),
    "placeholder over 150": (
        modal(blocks=[{**section(block_id="s"), "accessory": select(placeholder="p" * 151)}]),
        "/view/blocks/0/accessory/placeholder/text"),
}


def _open(client: WebClient, view: dict[str, Any]) -> dict[str, Any]:
    return client.views_open(trigger_id=trigger(), view=view)["view"]


def _refusal(call: Callable[[], Any]) -> dict[str, Any]:
    with pytest.raises(SlackApiError) as refused:
        call()
    return dict(refused.value.response.data)


@pytest.mark.parametrize("method", ["views.open", "views.update"])
@pytest.mark.parametrize("rule", list(BAD_VIEWS))
def test_a_view_breaking_a_rule_is_refused_as_slack_does(
        slack: FakeSlack, client: WebClient, rule: str, method: str) -> None:
    view, pointer = BAD_VIEWS[rule]
    if method == "views.open":
        tid = trigger()
        answer = _refusal(lambda: client.views_open(trigger_id=tid, view=view))
        assert client.views_open(trigger_id=tid, view=modal())["ok"]  # trigger not used up
    else:
        shown = _open(client, modal())
        answer = _refusal(lambda: client.views_update(view_id=shown["id"], hash=shown["hash"],
                                                      view=view))
        assert slack.views[shown["id"]] == shown  # unchanged: same blocks, same hash
    assert answer["ok"] is False and answer["error"] == "invalid_arguments"
    (line,) = answer["response_metadata"]["messages"]
    assert line.startswith("[ERROR] ") and line.endswith(f"[json-pointer:{pointer}]")
    last = slack.all_calls()[-2 if method == "views.open" else -1]
    assert last.method == method and last.error == "invalid_arguments" and last.problem == line
    assert last in slack.refused(method)


def test_the_first_view_as_the_bot_built_it_before_is_refused(client: WebClient) -> None:
    """The bug this guards against: the job select as an input block with dispatch_action,
    in a view with nothing to submit yet. slack_sdk's models accept it; Slack does not."""
    view = modal(submit=None, blocks=[
        {"type": "input", "block_id": "job", "dispatch_action": True, "label": plain("Job"),
         "element": select()},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "Pick a job."}]}])
    answer = _refusal(lambda: client.views_open(trigger_id=trigger(), view=view))
    assert answer["error"] == "invalid_arguments"
    assert "submit" in answer["response_metadata"]["messages"][0]


def test_a_view_at_every_limit_is_accepted(slack: FakeSlack, client: WebClient) -> None:
    blocks = [input_block("first", select(options=100, text="o" * 75, placeholder="p" * 150)),
              {"type": "actions", "block_id": "buttons",
               "elements": [button("go"), button("stop")]},
              section("s" * 3000, block_id="long"),
              *(section(block_id=f"s{i}") for i in range(97))]
    view = modal(title=plain("t" * 24), submit=plain("s" * 24), close=plain("c" * 24),
                 private_metadata="m" * 3000, callback_id="c" * 255, blocks=blocks)
    shown = _open(client, view)
    assert len(shown["blocks"]) == 100 and slack.views[shown["id"]]["blocks"] == blocks
    nothing_to_submit = modal(submit=None, blocks=[{**section(block_id="job"),
                                                    "accessory": select()}])
    updated = client.views_update(view_id=shown["id"], hash=shown["hash"],
                                  view=nothing_to_submit)
    assert updated["ok"] and updated["view"]["hash"] != shown["hash"]


# --- messages ------------------------------------------------------------------------------

BAD_MESSAGES: dict[str, tuple[dict[str, Any], str, str]] = {
    "over 50 blocks": ({"text": "x", "blocks": [section() for _ in range(51)]},
                       "invalid_blocks", "/blocks"),
    "section text over 3000": ({"text": "x", "blocks": [section("s" * 3001)]},
                               "invalid_blocks", "/blocks/0/text/text"),
    "text over 40000": ({"text": "x" * 40_001}, "msg_too_long", "/text"),
}


@pytest.mark.parametrize("method", ["chat.postMessage", "chat.update", "chat.postEphemeral"])
@pytest.mark.parametrize("rule", list(BAD_MESSAGES))
def test_a_message_breaking_a_rule_is_refused_as_slack_does(
        slack: FakeSlack, client: WebClient, rule: str, method: str) -> None:
    message, error, pointer = BAD_MESSAGES[rule]
    if method == "chat.postMessage":
        answer = _refusal(lambda: client.chat_postMessage(channel="CRULES", **message))
        history = client.conversations_history(channel="CRULES")["messages"]
        assert all(m["text"] != message["text"] for m in history)  # nothing was posted
    elif method == "chat.update":
        ts = client.chat_postMessage(channel="CRULES", text="before")["ts"]
        answer = _refusal(lambda: client.chat_update(channel="CRULES", ts=ts, **message))
    else:
        answer = _refusal(lambda: client.chat_postEphemeral(channel="CRULES", user="U1",
                                                            **message))
    assert answer["ok"] is False and answer["error"] == error
    (line,) = answer["response_metadata"]["messages"]
    assert line.startswith("[ERROR] ") and line.endswith(f"[json-pointer:{pointer}]")
    if error == "invalid_blocks":
        assert answer["errors"] == [line[len("[ERROR] "):]]
    last = slack.all_calls()[-2 if method == "chat.postMessage" else -1]
    assert last.method == method and last.error == error and last.ts is None
    assert last in slack.refused(method)


@pytest.mark.parametrize("rule", list(BAD_MESSAGES))
def test_a_response_url_refuses_the_same_messages_with_http_400(
        slack: FakeSlack, rule: str) -> None:
    message, error, _ = BAD_MESSAGES[rule]
    url = slack.response_url()
    resp = WebhookClient(url).send_dict(message)
    assert resp.status_code == 400 and resp.body == error
    (refused,) = slack.refused("response_url")[-1:]
    assert refused.params == message and refused.error == error
    assert slack.responses(url) == [message]  # recorded as sent, flagged as refused


def test_a_message_at_every_limit_is_accepted(slack: FakeSlack, client: WebClient) -> None:
    blocks = [section("s" * 3000, block_id="long"),
              *(section(block_id=f"b{i}") for i in range(49))]
    posted = client.chat_postMessage(channel="CLIMITS", text="x" * 40_000, blocks=blocks)
    assert posted["ok"] and posted["ts"]
    assert client.chat_update(channel="CLIMITS", ts=posted["ts"], text="y", blocks=blocks)["ok"]
    assert client.chat_postEphemeral(channel="CLIMITS", user="U1", text="z",
                                     blocks=blocks)["ok"]
    url = slack.response_url()
    assert WebhookClient(url).send_dict({"text": "x" * 40_000, "blocks": blocks}).status_code \
        == 200
    (history,) = client.conversations_history(channel="CLIMITS")["messages"]
    assert history["ts"] == posted["ts"]
    assert [c for c in slack.all_calls() if c.params.get("channel") == "CLIMITS"
            and c.error is not None] == []


# --- the App Home and permalinks (issue 29) -------------------------------------------------

def test_a_home_over_100_blocks_is_refused_and_one_at_the_limit_is_kept(
        slack: FakeSlack, client: WebClient) -> None:
    """views.publish: the same view rules (a Home needs no submit, has no title), the
    published Home kept per user; a refused one leaves the last one in place."""
    home = {"type": "home", "blocks": [section(block_id=f"s{i}") for i in range(100)]}
    shown = client.views_publish(user_id="UHOME", view=home)["view"]
    assert shown["type"] == "home" and slack.homes["UHOME"]["blocks"] == home["blocks"]
    answer = _refusal(lambda: client.views_publish(
        user_id="UHOME", view={"type": "home", "blocks": [section() for _ in range(101)]}))
    assert answer["error"] == "invalid_arguments"
    assert answer["response_metadata"]["messages"][0].endswith("[json-pointer:/view/blocks]")
    assert slack.homes["UHOME"]["blocks"] == home["blocks"]  # unchanged
    assert _refusal(lambda: client.views_publish(user_id="UHOME", view=modal()))[
        "error"] == "invalid_arguments"  # views.publish takes a home view only
    assert _refusal(lambda: client.views_publish(user_id="", view=home))[
        "error"] == "invalid_arguments"


def test_a_permalink_is_given_for_a_message_the_app_posted_only(
        client: WebClient) -> None:
    posted = client.chat_postMessage(channel="CLINKS", text="hello")
    link = client.chat_getPermalink(channel="CLINKS", message_ts=posted["ts"])
    assert link["permalink"] == ("https://example.slack.com/archives/CLINKS/p"
                                 + posted["ts"].replace(".", ""))
    assert _refusal(lambda: client.chat_getPermalink(channel="CLINKS", message_ts="1.2"))[
        "error"] == "message_not_found"
    assert _refusal(lambda: client.chat_getPermalink(channel="COTHER",
                                                     message_ts=posted["ts"]))[
        "error"] == "message_not_found"
