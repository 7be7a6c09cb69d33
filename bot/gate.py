"""Two Bolt middlewares every signed request passes after the signature check and before
any listener: requests from another Slack workspace are refused (``WorkspaceGuard``), and
a button's value that is not one the bot could have put there is refused (``ButtonGuard``).

Both answer the way the request can be answered: a slash command gets an ephemeral reply
in its acknowledgement, a click an ephemeral reply through its ``response_url`` (after the
ack), a form submission a notice in the form; anything else (a pick in an open form, an
event) is acknowledged and ignored. Nothing else happens: no listener runs, nothing is
stored, nothing is sent to CodeArts.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from slack_bolt import BoltRequest, BoltResponse
from slack_sdk.errors import SlackClientError

from bot import forms
from bot import messages as msg
from bot.home_view import HOME_RUN

log = logging.getLogger(__name__)

Reply = Callable[[str | None, dict[str, Any]], None]  # (response_url, message), after the ack

# --- buttons ----------------------------------------------------------------------------

MAX_VALUE = 2000  # Slack's most characters in a button's value
REQUEST_ID = re.compile(r"[0-9a-f]{32}")  # a request's (and its build's) id: uuid4().hex
STOP_TARGET = re.compile(r"[0-9A-Za-z]{32}:[0-9]{1,18}")  # bot.status.stop_value

# What each button may carry: a pattern the whole value must match (ASCII only), or a
# check given the jobs file's job names. A button missing here is refused by create_app.
Rule = re.Pattern[str] | Callable[[str, Mapping[str, Any]], bool]
BUTTON_VALUES: dict[str, Rule] = {
    **dict.fromkeys((msg.RUN, msg.CANCEL, msg.EDIT, msg.STOP, msg.REBUILD, msg.APPROVE,
                     msg.REJECT, msg.WITHDRAW, msg.QUEUE, msg.RUN_ANYWAY, msg.LEAVE),
                    REQUEST_ID),
    msg.STOP_CONFIRM: STOP_TARGET, msg.STOP_KEEP: STOP_TARGET,
    msg.NOTIFY: REQUEST_ID, msg.ON_IT: REQUEST_ID,  # a build's id
}
OPEN_FORM_ACTION = re.compile(re.escape(msg.OPEN_FORM) + r"\.[0-9]{1,3}")  # + a job's name


def _job_name(value: str, jobs: Mapping[str, Any]) -> bool:
    return value in jobs


BUTTON_VALUES[HOME_RUN] = _job_name  # the App Home's Run… button (bot.home_view)


def rule_for(action_id: str) -> Rule | None:
    """What a button with this action_id may carry; None for an action that is not ours."""
    if OPEN_FORM_ACTION.fullmatch(action_id):
        return _job_name
    return BUTTON_VALUES.get(action_id)


def value_ok(rule: Rule, value: Any, jobs: Mapping[str, Any]) -> bool:
    """Whether a button's value is one the bot could have given it."""
    if not isinstance(value, str) or not value or len(value) > MAX_VALUE:
        return False
    if isinstance(rule, re.Pattern):
        return value.isascii() and rule.fullmatch(value) is not None
    return rule(value, jobs)


class ButtonGuard:
    """Refuses a click on one of our buttons whose value is not of the button's shape: it
    was forged or mangled (or names a job the file no longer has), so it is answered "That
    button is no longer valid", never with an error."""

    def __init__(self, jobs: Callable[[], Mapping[str, Any]], reply: Reply) -> None:
        self.jobs = jobs
        self.reply = reply

    def __call__(self, req: BoltRequest, resp: BoltResponse,
                 next: Callable[[], BoltResponse]) -> BoltResponse:
        body = req.body if isinstance(req.body, dict) else {}
        action = _clicked(body)
        rule = rule_for(action["action_id"]) if action is not None else None
        if action is None or rule is None or value_ok(rule, action.get("value"), self.jobs()):
            return next()
        user = _dict(body.get("user")).get("id")
        log.warning("forged button value refused action=%s user=%s", action["action_id"],
                    user if isinstance(user, str) else "?")
        url = body.get("response_url")
        self.reply(url if isinstance(url, str) else None, msg.button_not_valid())
        return BoltResponse(status=200, body="")


def _clicked(body: dict[str, Any]) -> dict[str, Any] | None:
    """The action of a click (``block_actions``) with a string action_id, else None."""
    actions = body.get("actions") if body.get("type") == "block_actions" else None
    action = actions[0] if isinstance(actions, list) and actions else None
    if isinstance(action, dict) and isinstance(action.get("action_id"), str):
        return action
    return None


# --- workspaces -------------------------------------------------------------------------

MAX_TEAMS_LOGGED = 1000  # distinct other workspaces remembered for logging once


class WorkspaceGuard:
    """Refuses requests from any Slack workspace but the one the bot token belongs to,
    which ``auth.test`` tells at start (``learn``). A request that comes before that answer
    (HTTP mode serves while it is asked) asks ``auth.test`` itself, once; if Slack does
    not answer, the request is turned away as "busy". Each other workspace is logged
    once, not once per request."""

    def __init__(self, reply: Reply) -> None:
        self.team_id: str | None = None
        self.reply = reply
        self._logged: set[str] = set()
        self._lock = threading.Lock()  # guards _logged
        self._asking = threading.Lock()  # one auth.test at a time

    def learn(self, auth_test: Any) -> None:
        """Keep the workspace of ``auth.test``'s answer (a dict or slack_sdk's response)."""
        try:
            team = auth_test.get("team_id")
        except AttributeError:
            team = None
        if isinstance(team, str) and team:
            self.team_id = team
            log.info("serving Slack workspace %s", team)

    def __call__(self, req: BoltRequest, resp: BoltResponse,
                 next: Callable[[], BoltResponse]) -> BoltResponse:
        body = req.body if isinstance(req.body, dict) else {}
        if self.team_id is None and not self._ask(req):
            return BoltResponse(status=200, body=msg.busy() if "command" in body else "")
        stranger = self._stranger(teams_of(body))
        if stranger is None:
            return next()
        self._log_once(stranger, body)
        return self._refusal(body)

    def _stranger(self, teams: list[str]) -> str | None:
        """The first workspace named that is not ours (``(none)`` when none is named);
        None when every one named is ours."""
        if not teams:
            return "(none)"
        return next((t for t in teams if t != self.team_id), None)

    def _ask(self, req: BoltRequest) -> bool:
        """Learn the workspace from ``auth.test`` now (a request came before the answer at
        start); False when Slack would not say."""
        with self._asking:
            if self.team_id is None:
                try:
                    self.learn(req.context.client.auth_test())
                except (SlackClientError, OSError, AttributeError) as exc:
                    log.warning("auth.test failed, request turned away: %s",
                                type(exc).__name__)
        return self.team_id is not None

    def _log_once(self, team: str, body: dict[str, Any]) -> None:
        with self._lock:
            if team in self._logged or len(self._logged) > MAX_TEAMS_LOGGED:
                return
            self._logged.add(team)
            full = len(self._logged) > MAX_TEAMS_LOGGED
        kind = "command" if "command" in body else body.get("type")
        log.warning("refused a request from another Slack workspace team=%.40r kind=%.40r "
                    "(this bot serves %s; said once per workspace%s)", team, kind,
                    self.team_id, "; no more workspaces will be logged" if full else "")

    def _refusal(self, body: dict[str, Any]) -> BoltResponse:
        refusal = msg.other_workspace()
        if "command" in body:
            return BoltResponse(status=200, body=refusal)
        if body.get("type") == "view_submission":
            return BoltResponse(status=200, body={
                "response_action": "update",
                "view": forms.notice_view("Not accepted", [refusal["text"]])})
        url = body.get("response_url")
        if body.get("type") == "block_actions" and isinstance(url, str):
            self.reply(url, refusal)
        return BoltResponse(status=200, body="")


def teams_of(body: dict[str, Any]) -> list[str]:
    """Every workspace a request names: a command's (or an event's) ``team_id``, an
    interaction's ``team.id`` and its user's ``team_id``. A field present but not a
    string counts as a workspace that is not ours."""
    found: list[Any] = []
    if "team_id" in body:
        found.append(body["team_id"])
    if "team" in body:
        found.append(_dict(body["team"]).get("id"))
    user = body.get("user")
    if isinstance(user, dict) and "team_id" in user:
        found.append(user["team_id"])
    return [t if isinstance(t, str) and t else "(none)" for t in found]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
