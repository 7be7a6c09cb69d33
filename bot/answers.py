"""What a click on one of our buttons is, and what the engine answers it with.

The Slack side (``flow``) reads a click from Slack's payload, hands it to the engine,
and renders the engine's ``Answer`` into the reply the clicker sees; the engine loads
the row, makes the move, audits and performs every other effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bot.codearts.errors import CodeArtsError
from bot.lifecycle import Request


@dataclass
class Click:
    value: str
    user_id: str
    team_id: str | None
    response_url: str | None


class Told(StrEnum):
    """What the clicker is told (the reply ``flow`` renders)."""

    NOTHING = "nothing"  # no reply: the move's effects said it, or the first click will
    MISSING = "missing"
    NOT_YOURS = "not_yours"
    ALREADY = "already"  # the request is already in ``reason`` (a state)
    EXPIRED = "expired"  # this click found the question past its time
    OVER_LIMIT = "over_limit"  # the hourly limit; ``detail`` says until when
    CANCELLED = "cancelled"
    APPROVAL_REFUSED = "approval_refused"  # an approval click that changed nothing
    APPROVAL_NOTED = "approval_noted"  # recorded; ``given`` of ``needed``
    WITHDRAWN = "withdrawn"
    QUEUE_REFUSED = "queue_refused"  # a Queue, Run anyway or Leave that changed nothing
    LEFT = "left"
    EDITABLE = "editable"  # the request's form may be opened
    NO_FORM = "no_form"  # a raw build task ID: nothing to edit in a form
    REPLACED = "replaced"  # an edited request's old question was cancelled
    STOP_FAILED = "stop_failed"  # CodeArts refused the stop (``error``)
    STOP_ASKED = "stop_asked"
    REFUSED_NOW = "refused_now"  # checked again before sending: ``problems`` say why not
    LOST = "lost"  # the decision's move was made by another click first (never rendered)


@dataclass(frozen=True)
class Answer:
    told: Told
    request: Request | None = None
    reason: str = ""  # why a click changed nothing (a refusal's reason, or a state)
    detail: str = ""
    given: int = 0
    needed: int = 0
    error: CodeArtsError | None = None
    problems: tuple[str, ...] = ()


NOTHING = Answer(Told.NOTHING)
