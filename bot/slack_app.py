"""Bolt listeners: a few lines each, acknowledging first and calling the flow."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App, BoltResponse

from bot import messages as msg
from bot.flow import Click, Flow
from bot.lifecycle import new_error_id
from bot.replay import ReplayGuard

log = logging.getLogger(__name__)


class _NoTokenNotice(logging.Filter):
    """Bolt warns that SLACK_BOT_TOKEN is unused when we pass our own client: it is not."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


_bolt_log = logging.getLogger("slack_bolt")
_bolt_log.addFilter(_NoTokenNotice())


def create_app(flow: Flow, *, signing_secret: str | None, token_verification: bool = True,
               replay_guard: ReplayGuard | None = None) -> App:
    """The Bolt app; ``process_before_response`` so acks never wait on Bolt's own thread pool.
    ``replay_guard`` is the caller's, so it can read or move the guard's clock."""
    app = App(client=flow.slack, signing_secret=signing_secret or "",
              request_verification_enabled=signing_secret is not None,
              token_verification_enabled=token_verification,
              process_before_response=True, raise_error_for_unhandled_request=False,
              logger=_bolt_log)
    app.middleware(replay_guard or ReplayGuard())  # runs after Bolt has checked the signature

    @app.command("/build")
    def build_command(ack: Ack, command: dict[str, Any]) -> None:
        _guard(ack, flow.on_command, command)

    buttons = {msg.RUN: flow.run_clicked, msg.CANCEL: flow.cancel_clicked,
               msg.STOP: flow.stop_clicked, msg.REBUILD: flow.rebuild_clicked}
    for action_id, handler in buttons.items():
        app.action(action_id)(_button_listener(flow, handler))

    @app.error
    def unexpected(error: Exception, body: dict[str, Any]) -> BoltResponse:
        error_id = new_error_id()
        log.error("unexpected error id=%s type=%s", error_id, type(error).__name__,
                  exc_info=error)
        return BoltResponse(status=200, body=msg.internal_error(error_id)["text"])

    return app


def _button_listener(flow: Flow, handler: Callable[[Click], None]) -> Callable[..., None]:
    def clicked(ack: Ack, body: dict[str, Any]) -> None:
        _guard(ack, lambda a, b: flow.on_click(a, b, handler), body)

    return clicked


def _guard(ack: Ack, handler: Any, payload: dict[str, Any]) -> None:
    """Answer Slack whatever happens: an unexpected error becomes a message with an ID."""
    try:
        handler(ack, payload)
    except Exception:
        error_id = new_error_id()
        log.exception("listener failed id=%s", error_id)
        if ack.response is None:
            ack(msg.internal_error(error_id))
