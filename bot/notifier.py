"""Everything the bot says in Slack goes through here: channel posts, thread replies,
updates, direct messages and ``response_url`` answers.

Each call returns a ``Delivery`` instead of raising, and tells a refusal Slack
will repeat forever (an archived channel, a message too long, a revoked token)
from one that may pass (rate limits, 5xx, a dropped connection), so callers
can stop retrying the first kind and fall back to the requester.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.metrics import Metrics, slack_outcome
from bot.slack_io import BACKOFF, respond

log = logging.getLogger(__name__)

# Slack error words that may pass if the same call is made again later. Any other
# ``ok: false`` answer is Slack's final word on that call.
PASSING_ERRORS = frozenset({
    "ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
    "request_timeout", "timeout", "team_added_to_org",
})


BUILD_EVENT = "buildbot_build"  # metadata of a build's channel message
RESULT_EVENT = "buildbot_result"  # metadata of the reply that gives a build's result


def tagged(message: dict[str, Any], event_type: str, build_id: str) -> dict[str, Any]:
    """The message with Slack message metadata naming the build, so the bot can find it
    again when it does not know whether Slack posted it."""
    return {**message, "metadata": {"event_type": event_type,
                                    "event_payload": {"build_id": build_id}}}


@dataclass(frozen=True)
class Found:
    """Whether a message the bot may have posted is there: ``known`` False when Slack
    could not be asked (no history scope, an error), so nobody can tell."""

    known: bool
    ts: str | None = None


@dataclass(frozen=True)
class Delivery:
    ok: bool
    channel: str | None = None
    ts: str | None = None
    error: str | None = None  # Slack's error word, or the exception's type name
    permanent: bool = False  # Slack will refuse this call however often it is made


class Notifier:
    """The bot's one voice in Slack."""

    def __init__(self, client: WebClient, *, backoff: float = BACKOFF,
                 metrics: Metrics | None = None) -> None:
        self.client = client
        self.backoff = backoff
        self.metrics = metrics or Metrics()

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

    def find(self, channel: str, event_type: str, build_id: str, *,
             thread_ts: str | None = None, oldest: float | None = None) -> Found:
        """Look for the bot's own message tagged for this build: in the thread of
        ``thread_ts``, or in the channel since ``oldest``."""
        pages = 0
        cursor: str | None = None
        while pages < 5:
            pages += 1
            try:
                if thread_ts:
                    resp = self.client.conversations_replies(
                        channel=channel, ts=thread_ts, include_all_metadata=True, limit=200,
                        cursor=cursor)
                else:
                    resp = self.client.conversations_history(
                        channel=channel, oldest=None if oldest is None else f"{oldest:.6f}",
                        include_all_metadata=True, limit=200, cursor=cursor)
            except (SlackApiError, SlackClientError, OSError) as exc:
                error = (str(exc.response.get("error")) if isinstance(exc, SlackApiError)
                         else type(exc).__name__)
                log.warning("could not look for build=%s in channel=%s error=%s", build_id,
                            channel, error)
                return Found(False)
            for message in resp.get("messages") or []:
                meta = message.get("metadata") or {}
                payload = meta.get("event_payload") or {}
                if meta.get("event_type") == event_type and payload.get("build_id") == build_id:
                    return Found(True, str(message.get("ts") or "") or None)
            cursor = (resp.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return Found(True)
        return Found(False)  # too much to read: cannot tell

    def respond(self, url: str | None, message: dict[str, Any]) -> bool:
        """An answer through a command's or click's ``response_url``."""
        started = time.monotonic()
        ok = respond(url, message, backoff=self.backoff)
        if url:
            self.metrics.slack_call("response_url", "ok" if ok else "error",
                                    time.monotonic() - started)
        return ok

    def _call(self, what: str, call: Any, channel: str) -> Delivery:
        started = time.monotonic()
        sent = self._send(what, call, channel)
        self.metrics.slack_call(what.split("(")[0], slack_outcome(sent.error),
                                time.monotonic() - started)
        return sent

    def _send(self, what: str, call: Any, channel: str) -> Delivery:
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
