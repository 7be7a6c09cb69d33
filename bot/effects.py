"""What a decision asks the engine to do, as data.

A decision (``bot.decisions``) is pure: from a loaded row and the event, it returns the
move to make (``Move``: one conditional UPDATE in the store) and the effects to perform
once that move is won, in order. The engine (``Desk.perform``) is the only place that
performs them; the rule that an intent is recorded before each side effect stays with
the moves, which the store makes before any effect runs.

Each effect is small and typed, so a test can read a decision without a Slack or a
database, and a new feature adds an effect here and one branch in ``perform``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.answers import NOTHING, Answer
from bot.lifecycle import Request, RequestState

Message = dict[str, Any]


@dataclass(frozen=True)
class Move:
    """request ``id``: ``old`` -> ``new``, only if it is still in ``old`` (and, with
    ``open_only``, only while it has not expired; with ``requester``, only if it is
    theirs)."""

    id: str
    old: RequestState
    new: RequestState
    error: str | None = None
    requester: str | None = None  # only if the request is this user's
    open_only: bool = False  # from awaiting or queued: only before it expires


@dataclass(frozen=True)
class Audit:
    """One row of the audit log (``now`` is the engine's clock when it is written)."""

    decision: str
    request: Request
    user_id: str | None = None  # who acted; the requester when None
    channel_id: str | None = None  # where; the request's channel when None
    detail: str | None = None
    parameters: bool = False  # with the request's body


@dataclass(frozen=True)
class Count:
    """One more of ``buildbot_commands`` with this outcome."""

    outcome: str


@dataclass(frozen=True)
class Respond:
    """A reply through a response_url (nothing when there is none)."""

    url: str | None
    message: Message


@dataclass(frozen=True)
class TellRequester:
    """To the requester: through ``url`` (else the request's own response_url), or as a
    direct message when that has gone stale."""

    request: Request
    message: Message
    url: str | None = None


@dataclass(frozen=True)
class UpdateApproval:
    """The approval message of a request, replaced in place (where it was posted)."""

    request: Request
    message: Message


@dataclass(frozen=True)
class Start:
    """The run call for a request this decision moved to sending (``Starts.start``: the
    checks made again, the intent, the call, the build recorded and announced)."""

    request: Request
    url: str | None


@dataclass(frozen=True)
class Positions:
    """Each queued requester of the job is shown their place in line (best effort)."""

    job_name: str


@dataclass(frozen=True)
class AskApproval:
    """Post the approval question of a request now awaiting approval (``Approvals``)."""

    request: Request
    url: str | None


@dataclass(frozen=True)
class OfferQueue:
    """The job is at its max_running: the requester is offered Queue (``Limits``)."""

    request: Request
    url: str | None
    slots: Any = None  # the slot count the claim was made with (``policy.Slots``)


@dataclass(frozen=True)
class Queued:
    """The requester is shown their place in line, then the queue is released at once
    in case a slot freed meanwhile (``Limits``)."""

    request: Request
    url: str | None


Effect = (Audit | Count | Respond | TellRequester | UpdateApproval | Start | Positions
          | AskApproval | OfferQueue | Queued)


@dataclass(frozen=True)
class Decision:
    """What one event comes to: the move (None: no move, only effects), the effects to
    perform once the move is won, and the answer for whoever acted."""

    move: Move | None = None
    effects: tuple[Effect, ...] = ()
    answer: Answer = NOTHING
