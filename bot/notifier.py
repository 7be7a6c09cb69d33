"""Everything the bot says in Slack goes through here: channel posts, thread replies,
updates, direct messages and ``response_url`` answers.

Each call returns a ``Delivery`` instead of raising, and tells a refusal Slack
will repeat forever (an archived channel, a message too long, a revoked token)
from one that may pass (rate limits, 5xx, a dropped connection), so callers
can stop retrying the first kind and fall back to the requester.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.slack_io import BACKOFF, respond

log = logging.getLogger(__name__)

# Slack error words that may pass if the same call is made again later. Any other
# ``ok: false`` answer is Slack's final word on that call.
PASSING_ERRORS = frozenset({
    "ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
    "request_timeout", "timeout", "team_added_to_org",
})


@dataclass(frozen=True)
class Delivery:
    ok: bool
    channel: str | None = None
    ts: str | None = None
    error: str | None = None  # Slack's error word, or the exception's type name
    permanent: bool = False  # Slack will refuse this call however often it is made


class Notifier:
    """The bot's one voice in Slack."""

    def __init__(self, client: WebClient, *, backoff: float = BACKOFF) -> None:
        self.client = client
        self.backoff = backoff

    def post(self, channel: str, message: dict[str, Any], *,
             thread_ts: str | None = None) -> Delivery:
        """A channel message, or a reply in ``thread_ts``'s thread."""
        return self._call("chat.postMessage", lambda: self.client.chat_postMessage(
            channel=channel, thread_ts=thread_ts, **message), channel)

    def update(self, channel: str, ts: str, message: dict[str, Any]) -> Delivery:
        return self._call("chat.update", lambda: self.client.chat_update(
            channel=channel, ts=ts, **message), channel)

    def direct(self, user_id: str, message: dict[str, Any]) -> Delivery:
        """A direct message from the bot (the app's Messages tab)."""
        return self._call("chat.postMessage(dm)", lambda: self.client.chat_postMessage(
            channel=user_id, **message), user_id)

    def respond(self, url: str | None, message: dict[str, Any]) -> bool:
        """An answer through a command's or click's ``response_url``."""
        return respond(url, message, backoff=self.backoff)

    def _call(self, what: str, call: Any, channel: str) -> Delivery:
        try:
            resp = call()
        except SlackApiError as exc:
            error = str(exc.response.get("error") or "unknown_error")
            status = getattr(exc.response, "status_code", 200)
            permanent = error not in PASSING_ERRORS and not (status >= 500 or status == 429)
            log.warning("%s refused channel=%s error=%s permanent=%s", what, channel, error,
                        permanent)
            return Delivery(False, error=error, permanent=permanent)
        except (SlackClientError, OSError) as exc:
            log.warning("%s failed channel=%s error=%s", what, channel, type(exc).__name__)
            return Delivery(False, error=type(exc).__name__)
        return Delivery(True, channel=resp.get("channel") or channel, ts=resp.get("ts"))
