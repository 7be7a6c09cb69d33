"""One pure decision per kind of event on a stored request.

Each takes the loaded row (and what the event carries) and returns a ``Decision``: the
move to make, the effects to perform once it is won (in order), and the answer for
whoever acted. Nothing here does I/O or reads a clock; the engine (``Desk.act``) makes
the move through the store and performs the effects. A new event is a new function
here, a message in ``messages``, and one engine call that loads the row and acts.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot import messages as msg
from bot.answers import NOTHING, Answer, Told
from bot.effects import Audit, Count, Decision, Move, Respond, TellRequester, UpdateApproval
from bot.lifecycle import CONFIRM_MINUTES, Request, RequestState

# --- the requester's Run/Cancel question ------------------------------------------------


def cancel(request: Request) -> Decision:
    """Cancel: pending -> cancelled, by the requester."""
    return Decision(Move(request.id, RequestState.PENDING, RequestState.CANCELLED),
                    (Count("cancelled"), Audit("cancelled", request)),
                    Answer(Told.CANCELLED, request))


def cancel_lost(request: Request, state: RequestState | str) -> Answer:
    """What a Cancel that lost its move is told: nothing while the first Run is sending
    (it will replace the question), else the state the request is in."""
    if state in (RequestState.SENDING, RequestState.STARTED):
        return NOTHING
    return Answer(Told.ALREADY, request, state)


def replace_edited(old: Request) -> Decision:
    """An edited request's old question dies first, so its Run can never start a build."""
    return Decision(Move(old.id, RequestState.PENDING, RequestState.CANCELLED),
                    (Audit("cancelled", old, detail="replaced by an edited request"),),
                    Answer(Told.REPLACED, old))


def expired(request: Request) -> Decision:
    """A pending question the sweep expired (the store made the move): counted,
    audited, and the requester's question replaced with why."""
    return Decision(None, (Count("expired"), Audit("expired", request),
                           Respond(request.response_url,
                                   msg.expired(request.job_name, request.command,
                                               minutes=CONFIRM_MINUTES))))


def expired_by_click(request: Request) -> Decision:
    """A click that found the question past its time and expired it: it tells it."""
    return Decision(None, (Count("expired"), Audit("expired", request)),
                    Answer(Told.EXPIRED, request))


# --- approval by a second person -----------------------------------------------------------


def _closed(request: Request, description: str, outcome: str,
            by: Sequence[str] = ()) -> UpdateApproval:
    return UpdateApproval(request, msg.approval_closed(
        requester=request.user_id, job_name=request.job_name, description=description,
        body=request.body, outcome=outcome, by=tuple(by)))


def reject(request: Request, by: str, description: str) -> Decision:
    """Reject: awaiting -> rejected, by an approver, while it is open."""
    return Decision(
        Move(request.id, RequestState.AWAITING, RequestState.REJECTED),
        (Audit("rejected", request, user_id=by,
               detail=f"rejected {request.user_id}'s request"),
         Count("cancelled"), _closed(request, description, "rejected", (by,)),
         TellRequester(request, msg.approval_ended(request.job_name, "rejected", by=by))))


def withdraw(request: Request, description: str) -> Decision:
    """Withdraw: awaiting -> withdrawn, by the requester, while it is open."""
    return Decision(
        Move(request.id, RequestState.AWAITING, RequestState.WITHDRAWN,
             requester=request.user_id),
        (Audit("withdrawn", request), Count("cancelled"),
         _closed(request, description, "withdrawn", (request.user_id,))),
        Answer(Told.WITHDRAWN, request))


def approval_expired(request: Request, description: str) -> Decision:
    """An approval request past its time (the move is made by whoever found it)."""
    return Decision(None, (
        Count("expired"),
        Audit("approval_expired", request,
              detail="approved by " + (" ".join(request.approved_by) or "nobody")),
        _closed(request, description, "expired"),
        TellRequester(request, msg.approval_ended(request.job_name, "expired",
                                                  command=request.command))))


# --- just before sending ---------------------------------------------------------------


def refused_now(request: Request, problems: Sequence[str], url: str | None) -> Decision:
    """The checks of a run, made again just before sending, now say no: sending ->
    refused, nothing sent, and the requester told why (through ``url`` when given)."""
    why = " ".join(problems)
    return Decision(
        Move(request.id, RequestState.SENDING, RequestState.REFUSED, error=why),
        (Count("refused"), Audit("refused_when_sent", request, detail=why, parameters=True),
         TellRequester(request, msg.refused_now(request.job_name, problems), url)))
