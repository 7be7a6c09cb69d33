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
from bot.slack_budget import Priority, SlackBudget
from bot.slack_io import BACKOFF, NO_RETRY_AFTER, respond, retry_after_in

log = logging.getLogger(__name__)

# Slack error words that may pass if the same call is made again later. Any other
# ``ok: false`` answer is Slack's final word on that call.
PASSING_ERRORS = frozenset({
    "ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
    "request_timeout", "timeout", "team_added_to_org",
})


QUICK_TIMEOUT = 5  # seconds for a progress update
BUDGET_WAIT = 10.0  # the longest a call waits for its method's token (the live-call bound)
PROGRESS_429_WAIT = NO_RETRY_AFTER  # a 429 without a readable Retry-After waits this long


BUILD_EVENT = "buildbot_build"  # metadata of a build's channel message
RESULT_EVENT = "buildbot_result"  # metadata of the reply that gives a build's result
NOTIFY_EVENT = "buildbot_notify"  # metadata of a "Notify me" direct message


def tagged(message: dict[str, Any], event_type: str, build_id: str) -> dict[str, Any]:
    """The message with Slack message metadata naming the build, so the bot can find it
    again when it does not know whether Slack posted it."""
    return {**message, "metadata": {"event_type": event_type,
                                    "event_payload": {"build_id": build_id}}}


FIND_PAGES = 5  # pages of history read looking for a message before giving up


def _tagged_in(messages: list[dict[str, Any]], event_type: str,
               build_id: str) -> dict[str, Any] | None:
    """The first of ``messages`` whose metadata ``tagged`` it for this build, or None."""
    for message in messages:
        meta = message.get("metadata") or {}
        payload = meta.get("event_payload") or {}
        if meta.get("event_type") == event_type and payload.get("build_id") == build_id:
            return message
    return None


def _next_cursor(resp: Any) -> str | None:
    """Where the next page of a history or replies answer starts; None after the last."""
    return (resp.get("response_metadata") or {}).get("next_cursor") or None


def _error_word(exc: Exception) -> str:
    """Slack's error word for a refusal, or the exception's type name."""
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error"))
    return type(exc).__name__


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
    retry_after: float | None = None  # a 429's Retry-After, when the call did not wait it


class Notifier:
    """The bot's one voice in Slack."""

    def __init__(self, client: WebClient, *, backoff: float = BACKOFF,
                 metrics: Metrics | None = None, budget: SlackBudget | None = None,
                 budget_wait: float = BUDGET_WAIT) -> None:
        """``budget``: the Slack rate-limit budget every call takes a token from (none:
        calls are not paced, as in tests of other things); ``budget_wait``: the longest a
        call waits for its token (a seam for tests)."""
        self.client = client
        self.backoff = backoff
        self.metrics = metrics or Metrics()
        self.budget = budget
        self.budget_wait = budget_wait
        self._quick_client: WebClient | None = None

    def post(self, channel: str, message: dict[str, Any], *, thread_ts: str | None = None,
             priority: Priority | None = None) -> Delivery:
        """A channel message (an announcement, unless said otherwise), or a reply in
        ``thread_ts``'s thread (a result, unless said otherwise)."""
        urgency = priority if priority is not None else (  # (ANSWER is 0: not `or`)
            Priority.RESULT if thread_ts else Priority.ANNOUNCE)
        return self._call("chat.postMessage", lambda: self.client.chat_postMessage(
            channel=channel, thread_ts=thread_ts, **message), channel, urgency)

    def update(self, channel: str, ts: str, message: dict[str, Any], *,
               priority: Priority = Priority.RESULT) -> Delivery:
        return self._call("chat.update", lambda: self.client.chat_update(
            channel=channel, ts=ts, **message), channel, priority)

    def update_now(self, channel: str, ts: str, message: dict[str, Any]) -> Delivery:
        """An update that never waits: one try, no retry, a short timeout. A 429 comes back
        at once with Slack's Retry-After (the caller puts the next try off), so a
        progress update never holds up a worker thread or anybody's result."""
        started = time.monotonic()
        if self.budget is not None and not self.budget.take("chat.update", channel):
            # nothing to spare after answers, results and announcements: put off
            return Delivery(False, error="budget", retry_after=None)
        try:
            self._quick().chat_update(channel=channel, ts=ts, **message)
            sent = Delivery(True, channel=channel, ts=ts)
        except SlackApiError as exc:
            sent = self._progress_refused(exc, channel)
        except (SlackClientError, OSError) as exc:
            log.info("progress update failed channel=%s error=%s", channel, type(exc).__name__)
            sent = Delivery(False, error=type(exc).__name__)
        self.metrics.slack_call("chat.update", slack_outcome(sent.error),
                                time.monotonic() - started)
        return sent

    def _progress_refused(self, exc: SlackApiError, channel: str) -> Delivery:
        """Slack refused a progress update: a 429 pauses chat.update for every caller (the
        budget) and comes back with how long to wait; any other refusal with whether it
        is final."""
        error = str(exc.response.get("error") or "unknown_error")
        status = getattr(exc.response, "status_code", 200)
        limited = status == 429 or error in ("ratelimited", "rate_limited")
        wait = retry_after_in(getattr(exc.response, "headers", None)) if limited else None
        if limited:
            wait = PROGRESS_429_WAIT if wait is None else wait
            if self.budget is not None:  # everyone's updates wait it out
                self.budget.pause("chat.update", channel, wait)
        permanent = error not in PASSING_ERRORS and not (status >= 500 or status == 429)
        log.info("progress update refused channel=%s error=%s retry_after=%s", channel,
                 error, wait)
        return Delivery(False, error=error, permanent=permanent, retry_after=wait)

    def _quick(self) -> WebClient:
        """A client like ours with no retry handlers (so nothing sleeps) and a short timeout."""
        if self._quick_client is None:
            c = self.client
            self._quick_client = WebClient(token=c.token, base_url=c.base_url,
                                           timeout=min(int(c.timeout), QUICK_TIMEOUT),
                                           retry_handlers=[])
        return self._quick_client

    def direct(self, user_id: str, message: dict[str, Any]) -> Delivery:
        """A direct message from the bot (the app's Messages tab)."""
        return self._call("chat.postMessage(dm)", lambda: self.client.chat_postMessage(
            channel=user_id, **message), user_id, Priority.RESULT)

    def open_dm(self, user_id: str) -> Delivery:
        """The bot's direct-message conversation with ``user_id`` (``conversations.open``):
        ``channel`` carries its id, so the bot can read it back (``find``) before sending
        a message again whose answer was lost."""
        def send() -> dict[str, Any]:
            resp = self.client.conversations_open(users=user_id)
            return {"channel": (resp.get("channel") or {}).get("id")}
        sent = self._call("conversations.open", send, user_id, Priority.RESULT)
        if sent.ok and not sent.channel:
            return Delivery(False, error="no_channel")
        return sent

    def permalink(self, channel: str, ts: str, *,
                  priority: Priority = Priority.RESULT) -> str | None:
        """A link to a message (``chat.getPermalink``); None when Slack will not say. The
        App Home asks as a person's answer, Notify me as a build's result."""
        def send() -> dict[str, Any]:  # the link rides in the Delivery's ``ts``
            resp = self.client.chat_getPermalink(channel=channel, message_ts=ts)
            return {"channel": channel, "ts": resp.get("permalink")}
        got = self._call("chat.getPermalink", send, channel, priority)
        link = got.ts if got.ok else None
        return link if isinstance(link, str) and link.startswith("https://") else None

    def ephemeral(self, channel: str, user_id: str, message: dict[str, Any]) -> Delivery:
        """A message only ``user_id`` sees in ``channel`` (when there is no response_url)."""
        shown = {k: v for k, v in message.items() if k in ("text", "blocks")}
        return self._call("chat.postEphemeral", lambda: self.client.chat_postEphemeral(
            channel=channel, user=user_id, **shown), channel, Priority.ANSWER)

    def unfurl(self, channel: str, ts: str, unfurls: dict[str, dict[str, Any]], *,
               unfurl_id: str | None = None, source: str | None = None) -> Delivery:
        """Previews of links someone pasted (``chat.unfurl``): by the message's channel and
        ts, or by Slack's ``unfurl_id`` and ``source`` when the event gave them (a link
        still in the composer has no ts)."""
        by_id = bool(unfurl_id and source)
        return self._call("chat.unfurl", lambda: self.client.chat_unfurl(
            unfurls=unfurls, channel=None if by_id else channel, ts=None if by_id else ts,
            unfurl_id=unfurl_id if by_id else None, source=source if by_id else None),
            channel, Priority.ANSWER)

    def complete_function(self, execution_id: str, *, outputs: dict[str, Any] | None,
                          error: str | None, token: str | None) -> Delivery:
        """Complete a Workflow Builder step: ``functions.completeSuccess`` with ``outputs``,
        or ``functions.completeError`` with ``error``. ``token``: the one Slack sent with the
        step's event, while it lives; else the bot's own."""
        client = self.client if not token else WebClient(
            token=token, base_url=self.client.base_url, timeout=self.client.timeout,
            retry_handlers=self.client.retry_handlers)
        if error is not None:
            return self._call("functions.completeError", lambda: client.functions_completeError(
                function_execution_id=execution_id, error=error), "functions", Priority.RESULT)
        return self._call("functions.completeSuccess", lambda: client.functions_completeSuccess(
            function_execution_id=execution_id, outputs=outputs or {}), "functions",
            Priority.RESULT)

    def open_view(self, trigger_id: str, view: dict[str, Any]) -> Delivery:
        """A modal, opened with a command's or click's ``trigger_id`` (it lives 3 s).
        ``ts`` carries the view's id."""
        return self._view("views.open", lambda: self.client.views_open(
            trigger_id=trigger_id, view=view))

    def update_view(self, view_id: str, view: dict[str, Any], *,
                    view_hash: str | None = None) -> Delivery:
        """Replace an open modal; with ``view_hash``, only if nobody changed it since."""
        return self._view("views.update", lambda: self.client.views_update(
            view_id=view_id, view=view, hash=view_hash))

    def publish_home(self, user_id: str, view: dict[str, Any], *,
                     priority: Priority = Priority.ANSWER) -> Delivery:
        """A person's App Home (``views.publish``): ``ANSWER`` when they just opened it,
        ``ANNOUNCE`` when it is refreshed after a change (it waits behind results)."""
        def send() -> dict[str, Any]:
            resp = self.client.views_publish(user_id=user_id, view=view)
            return {"ts": (resp.get("view") or {}).get("id")}
        return self._call("views.publish", send, "view", priority)

    def _view(self, what: str, call: Any) -> Delivery:
        def send() -> dict[str, Any]:
            resp = call()
            return {"ts": (resp.get("view") or {}).get("id")}
        return self._call(what, send, "view", Priority.ANSWER)

    def find(self, channel: str, event_type: str, build_id: str, *,
             thread_ts: str | None = None, oldest: float | None = None) -> Found:
        """Look for the bot's own message tagged for this build: in the thread of
        ``thread_ts``, or in the channel since ``oldest``."""
        cursor: str | None = None
        for _ in range(FIND_PAGES):
            try:
                resp = self._page(channel, cursor, thread_ts=thread_ts, oldest=oldest)
            except (SlackApiError, SlackClientError, OSError) as exc:
                log.warning("could not look for build=%s in channel=%s error=%s", build_id,
                            channel, _error_word(exc))
                return Found(False)
            message = _tagged_in(resp.get("messages") or [], event_type, build_id)
            if message is not None:
                return Found(True, str(message.get("ts") or "") or None)
            cursor = _next_cursor(resp)
            if not cursor:
                return Found(True)
        return Found(False)  # too much to read: cannot tell

    def _page(self, channel: str, cursor: str | None, *, thread_ts: str | None,
              oldest: float | None) -> Any:
        """One page of the thread of ``thread_ts``, or of the channel since ``oldest``, with
        the messages' metadata."""
        method = "conversations.replies" if thread_ts else "conversations.history"
        if self.budget is not None and not self.budget.acquire(
                method, channel, priority=Priority.RESULT, max_wait=self.budget_wait):
            raise SlackClientError(f"{method}: no budget left within {self.budget_wait} s")
        if thread_ts:
            return self.client.conversations_replies(
                channel=channel, ts=thread_ts, include_all_metadata=True, limit=200,
                cursor=cursor)
        return self.client.conversations_history(
            channel=channel, oldest=None if oldest is None else f"{oldest:.6f}",
            include_all_metadata=True, limit=200, cursor=cursor)

    def respond(self, url: str | None, message: dict[str, Any]) -> bool:
        """An answer through a command's or click's ``response_url``."""
        started = time.monotonic()
        ok = respond(url, message, backoff=self.backoff)
        if url:
            self.metrics.slack_call("response_url", "ok" if ok else "error",
                                    time.monotonic() - started)
        return ok

    def _call(self, what: str, call: Any, channel: str, priority: Priority) -> Delivery:
        started = time.monotonic()
        method = what.split("(")[0]
        if self.budget is not None and not self.budget.acquire(
                method, channel, priority=priority, max_wait=self.budget_wait):
            log.warning("%s not sent channel=%s: no budget left within %.0f s", what,
                        channel, self.budget_wait)
            sent = Delivery(False, error="ratelimited")  # passing: tried again later
            self.metrics.slack_call(method, slack_outcome(sent.error),
                                    time.monotonic() - started)
            return sent
        sent = self._send(what, call, channel)
        self.metrics.slack_call(method, slack_outcome(sent.error),
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
