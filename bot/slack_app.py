"""Bolt listeners: a few lines each, acknowledging first and calling the flow."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App, BoltResponse

from bot import forms
from bot import messages as msg
from bot.flow import Click, Flow
from bot.flow_workflow import CALLBACK_ID
from bot.gate import BUTTON_VALUES, ButtonGuard, WorkspaceGuard
from bot.home_view import HOME_RUN
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
               replay_guard: ReplayGuard | None = None,
               workspace: WorkspaceGuard | None = None) -> App:
    """The Bolt app; ``process_before_response`` so acks never wait on Bolt's own thread pool.
    ``replay_guard`` is the caller's, so it can read or move the guard's clock; so is
    ``workspace``, which learns the bot's workspace from ``auth.test`` (bot.gate)."""
    app = App(client=flow.slack, signing_secret=signing_secret or "",
              request_verification_enabled=signing_secret is not None,
              token_verification_enabled=token_verification,
              process_before_response=True, raise_error_for_unhandled_request=False,
              logger=_bolt_log)
    app.middleware(replay_guard or ReplayGuard())  # runs after Bolt has checked the signature
    app.middleware(workspace or WorkspaceGuard(later(flow)))  # another workspace: refused
    app.middleware(ButtonGuard(lambda: flow.config.jobs, later(flow)))  # forged values: refused

    @app.command("/build")
    def build_command(ack: Ack, command: dict[str, Any]) -> None:
        _guard(ack, flow.on_command, command)

    buttons = {msg.RUN: flow.run_clicked, msg.CANCEL: flow.cancel_clicked,
               msg.STOP: flow.status.stop_clicked, msg.REBUILD: flow.rebuild_clicked,
               msg.APPROVE: flow.approve_clicked, msg.REJECT: flow.reject_clicked,
               msg.WITHDRAW: flow.withdraw_clicked, msg.QUEUE: flow.queue_clicked,
               msg.RUN_ANYWAY: flow.run_anyway_clicked, msg.LEAVE: flow.leave_clicked}
    for action_id, handler in buttons.items():
        assert action_id in BUTTON_VALUES, f"say what {action_id}'s value may be in bot.gate"
        app.action(action_id)(_button_listener(flow, handler))
    _stop_listeners(app, flow)
    _notify_listeners(app, flow)

    _form_listeners(app, flow, signing_secret)
    _home_listeners(app, flow)
    _unfurl_listeners(app, flow)
    _workflow_listeners(app, flow)

    @app.error
    def unexpected(error: Exception, body: dict[str, Any]) -> BoltResponse:
        error_id = new_error_id()
        log.error("unexpected error id=%s type=%s", error_id, type(error).__name__,
                  exc_info=error)
        return BoltResponse(status=200, body=msg.internal_error(error_id)["text"])

    return app


def later(flow: Flow) -> Callable[[str | None, dict[str, Any]], None]:
    """A reply through a response_url, made after the ack (the flow's worker)."""
    return lambda url, message: flow.submit(flow.respond, url, message)


def _form_listeners(app: App, flow: Flow, signing_secret: str | None) -> None:
    """The build form (bot.forms): opened from help and from a confirmation's Edit
    parameters, updated when a job is picked, checked when submitted."""
    if signing_secret:
        flow.form.form_key = forms.form_key(signing_secret)

    @app.action(msg.EDIT)
    def edit(ack: Ack, body: dict[str, Any]) -> None:
        _guard(ack, lambda a, b: flow.form.on_form_click(a, b, flow.form.edit_clicked), body)

    @app.action(re.compile("^" + re.escape(msg.OPEN_FORM) + r"\.\d+$"))
    def open_form(ack: Ack, body: dict[str, Any]) -> None:
        channel = _str(_dict(body.get("channel")).get("id"))
        actions = body.get("actions")
        job = _str(_dict(actions[0] if isinstance(actions, list) and actions else {}
                         ).get("value"))
        _guard(ack, lambda a, b: flow.form.on_form_click(
            a, b, lambda click, trigger: flow.form.open_form_clicked(click, trigger, channel, job)),
            body)

    @app.action(forms.JOB_ACTION)
    def job_picked(ack: Ack, body: dict[str, Any]) -> None:
        _guard(ack, flow.form.on_form_job, body)

    @app.view(forms.CALLBACK)
    def submitted(ack: Ack, body: dict[str, Any]) -> None:
        _guard(ack, flow.form.on_form_submit, body)


def _home_listeners(app: App, flow: Flow) -> None:
    """The App Home (``app_home_opened``, its Run… buttons) and the global shortcut "Run a
    build" (bot.home, bot.flow_form). Approve and Reject on the Home are the approval
    message's own buttons, handled above."""

    @app.event("app_home_opened")
    def home_opened(ack: Ack, event: dict[str, Any], body: dict[str, Any]) -> None:
        ack()
        home = flow.home
        if home is None or _dict(event).get("tab") != "home":
            return
        user = _str(_dict(event).get("user"))
        flow.submit(home.opened, user, _str(body.get("team_id")) or None)

    @app.action(HOME_RUN)
    def home_run(ack: Ack, body: dict[str, Any]) -> None:
        _guard(ack, flow.form.on_home_run, body)

    @app.shortcut(forms.SHORTCUT)
    def run_build_shortcut(ack: Ack, body: dict[str, Any]) -> None:
        _guard(ack, flow.form.on_shortcut, body)


def _unfurl_listeners(app: App, flow: Flow) -> None:
    """Build link previews (bot.flow_unfurl): acknowledged at once, previewed after."""

    @app.event("link_shared")
    def link_shared(ack: Ack, event: dict[str, Any]) -> None:
        ack()
        flow.submit(flow.unfurl.on_link_shared, event)


def _workflow_listeners(app: App, flow: Flow) -> None:
    """The Workflow Builder step (bot.flow_workflow): Bolt acknowledges the
    ``function_executed`` event; the run is decided and recorded after."""

    @app.function(CALLBACK_ID)
    def run_build_step(body: dict[str, Any]) -> None:
        event = _dict(body.get("event"))
        team = _str(body.get("team_id")) or None
        flow.submit(flow.workflow.on_function, event, team)


def _stop_listeners(app: App, flow: Flow) -> None:
    """The Stop / Keep running question of ``/build stop``: Stop is checked again where the
    question was asked (the click's channel)."""

    @app.action(msg.STOP_CONFIRM)
    def stop_confirmed(ack: Ack, body: dict[str, Any]) -> None:
        channel = _str(_dict(body.get("channel")).get("id"))
        _guard(ack, lambda a, b: flow.on_click(
            a, b, lambda click: flow.status.stop_confirmed(click, channel)), body)

    app.action(msg.STOP_KEEP)(_button_listener(flow, flow.status.stop_kept))


def _notify_listeners(app: App, flow: Flow) -> None:
    """Notify me (on a running build's channel message) and I'm on it (on a failure
    reply): the click's channel is checked against the message's."""

    @app.action(msg.NOTIFY)
    def notify(ack: Ack, body: dict[str, Any]) -> None:
        channel = _str(_dict(body.get("channel")).get("id"))
        _guard(ack, lambda a, b: flow.on_click(
            a, b, lambda click: flow.notify_clicked(click, channel)), body)

    @app.action(msg.ON_IT)
    def on_it(ack: Ack, body: dict[str, Any]) -> None:
        channel = _str(_dict(body.get("channel")).get("id"))
        _guard(ack, lambda a, b: flow.on_click(
            a, b, lambda click: flow.on_it_clicked(click, channel)), body)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


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
