"""What the Slack listeners hand around: who typed a command and where (``Who``), what a
command comes to before any side effect (``Outcome``), and readers of Slack's payloads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from bot.answers import Click
from bot.command import Parsed
from bot.policy import Approved, UserGroups

if TYPE_CHECKING:
    from bot.flow import Flow

Ack = Callable[..., Any]


@dataclass
class Outcome:
    """What a slash command (or Rebuild click) comes to, before any side effect."""

    reply: dict[str, Any] | None
    decision: str  # help, invalid, denied, approved
    approved: Approved | None = None
    detail: str | None = None
    job: str | None = None
    fields: list[tuple[str | None, str]] | None = None  # a denial's problems by field (form)
    asked: Parsed | None = None  # an allowed subcommand (status, stop, subscribe...)
    target: tuple[str, str] | None = None  # its job (name, build task ID)


@dataclass
class Who:
    user_id: str
    channel_id: str
    team_id: str | None
    response_url: str | None
    text: str
    received_at: float | None = None  # monotonic, when the command reached the bot
    trigger_id: str | None = None  # lets the bot open a modal (the form) for 3 s


class FlowRoom:
    """What a feature's room on the Slack side shares with its ``Flow``: the config, the
    engine, the reply and (read each time, as tests replace it) the user groups."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.config = flow.config
        self.engine = flow.engine
        self.respond = flow.respond

    @property
    def groups(self) -> UserGroups:
        return self.flow.groups


class Room(Protocol):
    """A feature's subcommands on the Slack side: ``check`` before the ack (no side effects),
    ``answer`` after it. ``Flow`` routes each type in ``COMMANDS`` to its room."""

    COMMANDS: ClassVar[tuple[type, ...]]

    def check(self, command: Any, who: Who, groups: UserGroups) -> Outcome: ...

    def answer(self, who: Who, outcome: Outcome) -> None: ...


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def read_who(payload: dict[str, Any]) -> Who:
    return Who(user_id=_str(payload.get("user_id")), channel_id=_str(payload.get("channel_id")),
               team_id=_str(payload.get("team_id")) or None,
               response_url=_str(payload.get("response_url")) or None,
               text=_str(payload.get("text")), trigger_id=_str(payload.get("trigger_id")) or None)


def read_click(body: dict[str, Any]) -> Click:
    actions = body.get("actions")
    action = _dict(actions[0]) if isinstance(actions, list) and actions else {}
    return Click(value=_str(action.get("value"))[:64],
                 user_id=_str(_dict(body.get("user")).get("id")),
                 team_id=_str(_dict(body.get("team")).get("id")) or None,
                 response_url=_str(body.get("response_url")) or None)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
