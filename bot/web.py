"""HTTP mode: a WSGI app (``/slack/events`` and ``/healthz``) served by waitress."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk.signature import SignatureVerifier

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # Slack's payloads are far smaller; refuse anything bigger


def make_wsgi(app: App, ready: threading.Event,
              signing_secret: str | None = None) -> Callable[..., Iterable[bytes]]:
    """Route Slack's requests to Bolt and answer health checks once the bot is ready.

    The signature is checked here, before Bolt parses the body, so a stranger's
    malformed body gets a 401 and never a traceback; a signed body Bolt still
    cannot read gets a 400.
    """
    slack = SlackRequestHandler(app, path="/slack/events")
    verifier = SignatureVerifier(signing_secret) if signing_secret else None

    def events(environ: dict[str, Any], start_response: Callable[..., Any],
               length: int) -> Iterable[bytes]:
        body = environ["wsgi.input"].read(length) if length else b""
        if verifier is not None and not _signed(verifier, body, environ):
            return _plain(start_response, "401 Unauthorized", "invalid request")
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            return slack(environ, start_response)
        except Exception as exc:  # Bolt could not read a signed body: nothing we can act on
            log.warning("unreadable Slack request refused (%s)", type(exc).__name__)
            return _plain(start_response, "400 Bad Request", "unreadable request")

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "")
        if path == "/healthz" and method in ("GET", "HEAD"):
            ok = ready.is_set()
            return _plain(start_response, "200 OK" if ok else "503 Service Unavailable",
                          "ok" if ok else "starting")
        if path == "/slack/events" and method == "POST":
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                return _plain(start_response, "413 Payload Too Large", "too large")
            return events(environ, start_response, length)
        return _plain(start_response, "404 Not Found", "not found")

    return wsgi


def _signed(verifier: SignatureVerifier, body: bytes, environ: dict[str, Any]) -> bool:
    timestamp = environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", "")
    signature = environ.get("HTTP_X_SLACK_SIGNATURE", "")
    if not timestamp.isdigit() or not signature:
        return False
    try:
        return bool(verifier.is_valid(body=body, timestamp=timestamp, signature=signature))
    except UnicodeDecodeError:  # slack_sdk decodes the body first; Slack only sends UTF-8
        return False


def _plain(start_response: Callable[..., Any], status: str, text: str) -> list[bytes]:
    data = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(data)))])
    return [data]


def make_server(wsgi: Callable[..., Iterable[bytes]], *, host: str, port: int,
                threads: int = 16) -> Any:
    """A waitress server bound now (port 0 picks a free port: ``server.effective_port``)."""
    from waitress.server import create_server  # type: ignore[import-untyped]

    return create_server(wsgi, host=host, port=port, threads=threads, connection_limit=1000,
                         channel_timeout=30, ident="buildbot", clear_untrusted_proxy_headers=True)
