"""Signed requests into the bot, built the way Slack builds them (form-encoded bodies, the
``v0`` HMAC-SHA256 signature over ``v0:<timestamp>:<body>``, the two ``X-Slack-*`` headers):
used by ``python -m bot demo``, the tests and the benchmarks."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

import httpx


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
        "api_app_id": "A1", "response_url": response_url, "trigger_id": "1.2.3",
    }).encode()


def action_body(action_id: str, value: str, *, user: str, channel: str, response_url: str,
                team: str = "T1", message_ts: str | None = None, user_name: str = "someone",
                channel_name: str = "builds", label: str | None = None) -> bytes:
    payload: dict[str, Any] = {
        "type": "block_actions", "team": {"id": team, "domain": "example"},
        "user": {"id": user, "username": user_name, "team_id": team},
        "api_app_id": "A1", "token": "legacy-unused", "trigger_id": "1.2.3",
        "channel": {"id": channel, "name": channel_name},
        "container": {"type": "message", "is_ephemeral": message_ts is None,
                      "message_ts": message_ts or "1.1", "channel_id": channel},
        "response_url": response_url,
        "actions": [{"type": "button", "action_id": action_id, "block_id": "b",
                     "value": value, "action_ts": str(time.time()),
                     "text": {"type": "plain_text", "text": label or action_id}}],
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

    def close(self) -> None:
        self.http.close()
