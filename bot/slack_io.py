"""Talking back to Slack: the Web API client and ``response_url`` posts.

Both retry 429s (honouring Retry-After), 5xx and connection errors through
slack_sdk's own retry handlers rather than by hand.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from typing import Any
from urllib.error import URLError
from urllib.parse import parse_qsl, urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError
from slack_sdk.http_retry import RetryHandler
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.webhook import WebhookClient

log = logging.getLogger(__name__)


class AnyServerErrorRetryHandler(ServerErrorRetryHandler):
    """slack_sdk's handler retries 500 and 503 only; a proxy's 502 or 504 is as passing."""

    def _can_retry(self, *, state: Any, request: Any, response: Any = None,
                   error: Exception | None = None) -> bool:
        return response is not None and 500 <= response.status_code <= 599


BACKOFF = 0.5  # seconds before the first retry of a connection error or 5xx, then doubling
MAX_RETRY_AFTER = 10.0  # a 429 asking for a longer wait ends the call instead


Limited = Callable[[str, str | None, float], None]  # (method, channel, Retry-After seconds)
NO_RETRY_AFTER = 30.0  # a 429 without a readable Retry-After pauses its method this long


def retry_after_in(headers: Any) -> float | None:
    """Slack's Retry-After in seconds, from headers whose names and values may come in any
    case and as lists; None when absent or unreadable."""
    if not isinstance(headers, dict):
        return None
    for name, value in headers.items():
        if str(name).lower() == "retry-after":
            value = value[0] if isinstance(value, list) and value else value
            try:
                return max(0.0, float(str(value).strip()))
            except ValueError:
                return None
    return None


def method_and_channel(request: Any) -> tuple[str, str | None]:
    """The Web API method a request calls (``.../api/chat.postMessage``) and the channel
    it names, if any (form fields or a JSON body)."""
    method = urlsplit(str(getattr(request, "url", ""))).path.rsplit("/", 1)[-1]
    params = getattr(request, "body_params", None)
    if not isinstance(params, dict):
        params = {}
        data = getattr(request, "data", None)
        if isinstance(data, bytes | str):
            text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
            try:
                loaded = json.loads(text)
                params = loaded if isinstance(loaded, dict) else {}
            except ValueError:
                params = dict(parse_qsl(text))
    channel = params.get("channel")
    return method, channel if isinstance(channel, str) else None


class BoundedRateLimitRetryHandler(RateLimitErrorRetryHandler):
    """Waits for a 429's Retry-After only when it is short: a call that could sleep for
    minutes would hold its thread, and the bot's bound on how long a live post lasts
    (after which recovery may take it over) would no longer hold. Every 429 is first told
    to ``limited`` (the Slack budget), which pauses that method for every caller."""

    def __init__(self, *, limited: Limited | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.limited = limited

    def _can_retry(self, *, state: Any, request: Any, response: Any = None,
                   error: Exception | None = None) -> bool:
        if response is None or response.status_code != 429:
            return False
        wait = retry_after_in(response.headers)
        if self.limited is not None:
            method, channel = method_and_channel(request)
            self.limited(method, channel, NO_RETRY_AFTER if wait is None else wait)
        return wait is None or wait <= MAX_RETRY_AFTER


class NotSentRetryHandler(ConnectionErrorRetryHandler):
    """Retries only a call that certainly never reached Slack (refused connection, unknown
    host). A reset or a dropped answer after sending may follow a message Slack already
    posted: that is left to the caller, who looks for it before posting again."""

    def _can_retry(self, *, state: Any, request: Any, response: Any = None,
                   error: Exception | None = None) -> bool:
        if not isinstance(error, URLError) or response is not None:
            return False
        return isinstance(error.reason, ConnectionRefusedError | socket.gaierror)


def retry_handlers(backoff: float = BACKOFF,
                   limited: Limited | None = None) -> list[RetryHandler]:
    """``backoff`` is a seam for tests; a 429 always waits for Slack's Retry-After (and is
    told to ``limited``, the Slack budget, first)."""
    interval = BackoffRetryIntervalCalculator(backoff_factor=backoff)
    return [NotSentRetryHandler(max_retry_count=2, interval_calculator=interval),
            BoundedRateLimitRetryHandler(max_retry_count=3, limited=limited),
            AnyServerErrorRetryHandler(max_retry_count=2, interval_calculator=interval)]


def make_web_client(token: str, base_url: str, *, timeout: int = 10,
                    backoff: float = BACKOFF, limited: Limited | None = None) -> WebClient:
    return WebClient(token=token, base_url=base_url, timeout=timeout,
                     retry_handlers=retry_handlers(backoff, limited))


def respond(url: str | None, message: dict[str, Any], *, timeout: int = 10,
            backoff: float = BACKOFF) -> bool:
    """Post to a response_url; False (logged) when it could not be delivered."""
    if not url:
        return False
    try:
        resp = WebhookClient(url, timeout=timeout,
                             retry_handlers=retry_handlers(backoff)).send_dict(message)
    except (SlackClientError, OSError, ValueError) as exc:
        log.warning("response_url post failed: %s", type(exc).__name__)
        return False
    if resp.status_code != 200:
        log.warning("response_url post refused status=%s body=%.200s", resp.status_code, resp.body)
        return False
    return True
