"""Signed requests into the bot, built the way Slack builds them (form-encoded bodies, the
``v0`` HMAC-SHA256 signature over ``v0:<timestamp>:<body>``, the two ``X-Slack-*`` headers):
used by ``python -m bot demo``, the tests and the benchmarks."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from typing import Any
from urllib.parse import urlencode

import httpx

_TRIGGERS = itertools.count(1)


def trigger_id() -> str:
    """A fresh trigger_id, as Slack gives each command and click its own."""
    return f"{int(time.time())}.{next(_TRIGGERS)}.t"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {"Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": sign(secret, body, ts)}


def command_body(text: str, *, user: str, channel: str, response_url: str,
                 team: str = "T1", user_name: str = "someone",
                 channel_name: str = "builds") -> bytes:
    return urlencode({
        "token": "legacy-unused", "team_id": team, "team_domain": "example",
        "channel_id": channel, "channel_name": channel_name, "user_id": user,
        "user_name": user_name, "command": "/build", "text": text,
        "api_app_id": "A1", "response_url": response_url, "trigger_id": trigger_id(),
    }).encode()


def action_body(action_id: str, value: str, *, user: str, channel: str, response_url: str,
                team: str = "T1", message_ts: str | None = None, user_name: str = "someone",
                channel_name: str = "builds", label: str | None = None) -> bytes:
    payload: dict[str, Any] = {
        "type": "block_actions", "team": {"id": team, "domain": "example"},
        "user": {"id": user, "username": user_name, "team_id": team},
        "api_app_id": "A1", "token": "legacy-unused", "trigger_id": trigger_id(),
        "channel": {"id": channel, "name": channel_name},
        "container": {"type": "message", "is_ephemeral": message_ts is None,
                      "message_ts": message_ts or "1.1", "channel_id": channel},
        "response_url": response_url,
        "actions": [{"type": "button", "action_id": action_id, "block_id": "b",
                     "value": value, "action_ts": str(time.time()),
                     "text": {"type": "plain_text", "text": label or action_id}}],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def view_state(view: dict[str, Any], entered: dict[str, str | None] | None = None
               ) -> dict[str, Any]:
    """The ``state.values`` Slack sends for a modal: each input block's element with what
    it shows (its initial value or option), or what ``entered`` gives for its block_id
    (None empties the field). A select is given the option whose value is entered."""
    entered = entered or {}
    values: dict[str, Any] = {}
    for block in view.get("blocks", []):
        if block.get("type") != "input":
            continue
        element, block_id = block["element"], block["block_id"]
        state_of = _select_state if element["type"] == "static_select" else _text_state
        values[block_id] = {element["action_id"]: state_of(element, block_id, entered)}
    return values


def _select_state(element: dict[str, Any], block_id: str,
                  entered: dict[str, str | None]) -> dict[str, Any]:
    """A select's state: its initial option, or the option whose value is entered."""
    chosen = element.get("initial_option")
    if block_id in entered:
        value = entered[block_id]
        chosen = next((o for o in element["options"] if o["value"] == value), None)
        if value is not None and chosen is None:  # as a tampered payload would
            chosen = {"text": {"type": "plain_text", "text": value}, "value": value}
    return {"type": "static_select", "selected_option": chosen}


def _text_state(element: dict[str, Any], block_id: str,
                entered: dict[str, str | None]) -> dict[str, Any]:
    """A text input's state: its initial value, or what is entered (None: emptied)."""
    shown = entered[block_id] if block_id in entered else element.get("initial_value")
    return {"type": element["type"], "value": shown}


def view_submission_body(view: dict[str, Any], entered: dict[str, str | None] | None = None,
                         *, user: str, team: str = "T1") -> bytes:
    """A ``view_submission`` of ``view`` (as the bot last set it: id, hash, metadata)."""
    payload = {
        "type": "view_submission", "team": {"id": team, "domain": "example"},
        "user": {"id": user, "username": "someone", "team_id": team},
        "api_app_id": "A1", "token": "legacy-unused", "trigger_id": trigger_id(),
        "view": {**view, "state": {"values": view_state(view, entered)}},
        "response_urls": [],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def view_select_body(view: dict[str, Any], block_id: str, action_id: str, value: str, *,
                     user: str, team: str = "T1") -> bytes:
    """A ``block_actions`` from an open modal: an option picked in a select that
    dispatches its action (``dispatch_action``)."""
    option = {"text": {"type": "plain_text", "text": value}, "value": value}
    payload = {
        "type": "block_actions", "team": {"id": team, "domain": "example"},
        "user": {"id": user, "username": "someone", "team_id": team},
        "api_app_id": "A1", "token": "legacy-unused", "trigger_id": trigger_id(),
        "container": {"type": "view", "view_id": view.get("id")},
        "view": {**view, "state": {"values": view_state(view, {block_id: value})}},
        "actions": [{"type": "static_select", "action_id": action_id, "block_id": block_id,
                     "selected_option": option, "action_ts": str(time.time())}],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


class SlackSender:
    """Posts signed payloads to the bot's /slack/events."""

    def __init__(self, url: str, secret: str) -> None:
        self.url = url
        self.secret = secret
        self.http = httpx.Client(timeout=10)

    def post(self, body: bytes, *, timestamp: int | None = None,
             secret: str | None = None) -> httpx.Response:
        headers = signed_headers(secret or self.secret, body, timestamp=timestamp)
        return self.http.post(self.url, content=body, headers=headers)

    def event(self, envelope: dict[str, Any], **kw: Any) -> httpx.Response:
        """An Events API delivery (a JSON body, signed like every request)."""
        body = json.dumps(envelope).encode()
        ts = kw.get("timestamp")
        headers = {**signed_headers(kw.get("secret") or self.secret, body, timestamp=ts),
                   "Content-Type": "application/json"}
        return self.http.post(self.url, content=body, headers=headers)

    def command(self, text: str, *, user: str, channel: str, response_url: str,
                names: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        """``names``: optional ``user_name`` / ``channel_name`` for the body."""
        return self.post(command_body(text, user=user, channel=channel,
                                      response_url=response_url, **(names or {})), **kw)

    def click(self, action_id: str, value: str, *, user: str, channel: str, response_url: str,
              message_ts: str | None = None, names: dict[str, str] | None = None,
              **kw: Any) -> httpx.Response:
        """``names``: optional ``user_name`` / ``channel_name`` / ``label`` for the payload."""
        return self.post(action_body(action_id, value, user=user, channel=channel,
                                     response_url=response_url, message_ts=message_ts,
                                     **(names or {})), **kw)

    def submit(self, view: dict[str, Any], entered: dict[str, str | None] | None = None, *,
               user: str, **kw: Any) -> httpx.Response:
        """Submit a modal with ``entered`` values (by block_id) over what it shows."""
        return self.post(view_submission_body(view, entered, user=user), **kw)

    def pick(self, view: dict[str, Any], block_id: str, action_id: str, value: str, *,
             user: str, **kw: Any) -> httpx.Response:
        """Pick ``value`` in a modal's select that dispatches its action."""
        return self.post(view_select_body(view, block_id, action_id, value, user=user), **kw)

    def close(self) -> None:
        self.http.close()


# --- the App Home and the "Run a build" shortcut (issue 29) --------------------------------

def home_opened_body(user: str, *, team: str = "T1", tab: str = "home") -> bytes:
    """The ``app_home_opened`` event Slack sends (Events API, JSON) when ``user`` opens the
    app's Home tab."""
    return json.dumps({
        "token": "legacy-unused", "team_id": team, "api_app_id": "A1", "type": "event_callback",
        "event_id": f"Ev{next(_TRIGGERS):08d}", "event_time": int(time.time()),
        "event": {"type": "app_home_opened", "user": user, "channel": f"D{user}", "tab": tab,
                  "event_ts": f"{time.time():.6f}"},
    }).encode()


def home_action_body(action_id: str, value: str, *, user: str, view: dict[str, Any],
                     team: str = "T1") -> bytes:
    """A button clicked on the App Home: a ``block_actions`` from a view of type home,
    with no channel and no response_url (Slack gives neither there)."""
    payload = {
        "type": "block_actions", "team": {"id": team, "domain": "example"},
        "user": {"id": user, "username": "someone", "team_id": team},
        "api_app_id": "A1", "token": "legacy-unused", "trigger_id": trigger_id(),
        "container": {"type": "view", "view_id": view.get("id")},
        "view": {**view, "state": {"values": {}}},
        "actions": [{"type": "button", "action_id": action_id, "block_id": "b",
                     "value": value, "action_ts": str(time.time()),
                     "text": {"type": "plain_text", "text": action_id}}],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def shortcut_body(callback_id: str, *, user: str, team: str = "T1") -> bytes:
    """A global shortcut (``type: shortcut``) picked from Slack's shortcuts menu."""
    payload = {
        "type": "shortcut", "callback_id": callback_id, "trigger_id": trigger_id(),
        "action_ts": str(time.time()), "team": {"id": team, "domain": "example"},
        "user": {"id": user, "username": "someone", "team_id": team},
        "api_app_id": "A1", "token": "legacy-unused",
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def channel_submission_body(view: dict[str, Any], channel: str | None,
                            response_url: str | None,
                            entered: dict[str, str | None] | None = None, *, user: str,
                            team: str = "T1") -> bytes:
    """A ``view_submission`` of the shortcut's form: ``channel`` picked in its Channel
    field (a conversations select with ``response_url_enabled``), so Slack adds that
    channel's ``response_url`` to the payload (None: Slack gave none)."""
    values = view_state({**view, "blocks": [b for b in view.get("blocks", [])
                                            if b.get("block_id") != "channel"]}, entered)
    values["channel"] = {"value": {"type": "conversations_select",
                                   "selected_conversation": channel}}
    payload = {
        "type": "view_submission", "team": {"id": team, "domain": "example"},
        "user": {"id": user, "username": "someone", "team_id": team},
        "api_app_id": "A1", "token": "legacy-unused", "trigger_id": trigger_id(),
        "view": {**view, "state": {"values": values}},
        "response_urls": [] if channel is None or response_url is None else [
            {"block_id": "channel", "action_id": "value", "channel_id": channel,
             "response_url": response_url}],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()
