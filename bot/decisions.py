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
from bot.effects import (
    AskApproval,
    Audit,
    Count,
    Decision,
    Move,
    OfferQueue,
    Positions,
    Queued,
    Respond,
    Start,
    TellRequester,
    UpdateApproval,
)
from bot.lifecycle import (
    CONFIRM_MINUTES,
    ApprovalOutcome,
    ApprovalRule,
    Claim,
    ClaimReason,
    Request,
    RequestState,
)

# --- the requester's Run/Cancel question ------------------------------------------------


def run_claimed(claim: Claim, url: str | None, slots: object = None) -> Decision | None:
    """Run, once the store's claim on the pending request is made: sent (or asked for
    approval) when this click won it; nothing said while the first click handles it;
    Queue offered at the job's max_running. None: refused, and the caller says why."""
    request = claim.request
    if claim.ok:
        assert request is not None
        if request.state is RequestState.AWAITING:  # a second person approves
            return Decision(None, (AskApproval(request, request.response_url),))
        return Decision(None, (Start(request, url or request.response_url),))
    if claim.reason in (RequestState.SENDING, RequestState.STARTED, RequestState.AWAITING):
        return Decision()  # the first click is handling it and will replace the message
    if claim.reason is ClaimReason.FULL and request is not None:
        return Decision(None, (OfferQueue(request, url or request.response_url, slots),))
    return None


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
        Move(request.id, RequestState.AWAITING, RequestState.REJECTED, open_only=True),
        (Audit("rejected", request, user_id=by,
               detail=f"rejected {request.user_id}'s request"),
         Count("cancelled"), _closed(request, description, "rejected", (by,)),
         TellRequester(request, msg.approval_ended(request.job_name, "rejected", by=by))))


def withdraw(request: Request, description: str) -> Decision:
    """Withdraw: awaiting -> withdrawn, by the requester, while it is open."""
    return Decision(
        Move(request.id, RequestState.AWAITING, RequestState.WITHDRAWN,
             requester=request.user_id, open_only=True),
        (Audit("withdrawn", request), Count("cancelled"),
         _closed(request, description, "withdrawn", (request.user_id,))),
        Answer(Told.WITHDRAWN, request))


def approval_given(outcome: ApprovalOutcome, request: Request, current: Request,
                   approver: str, description: str, question: msg.Message) -> Decision:
    """An approval recorded (``current``: the request after it). START: the one that made
    it enough (the request is sending; the engine sends it next); QUEUED: enough, but the
    job is at its max_running; RECORDED: more are needed, the question shows who so far."""
    given, needed = len(current.approved_by), current.approvals_needed or 1
    by = " ".join(current.approved_by)
    if outcome is ApprovalOutcome.QUEUED:
        return Decision(None, (
            Audit("approved", request, user_id=approver,
                  detail=(f"approved {request.user_id}'s request; queued (the job is at its "
                          f"max_running); approved by {by}")),
            _closed(current, description, "queued", current.approved_by),
            Queued(current, current.response_url)))
    audit = Audit("approved" if outcome is ApprovalOutcome.START else "approval", request,
                  user_id=approver, detail=(f"approval {given} of {needed} of "
                                            f"{request.user_id}'s request; approved by {by}"))
    if outcome is ApprovalOutcome.START:
        return Decision(None, (audit,))
    return Decision(None, (audit, UpdateApproval(current, question)),
                    Answer(Told.APPROVAL_NOTED, current, given=given, needed=needed))


def approval_asked(request: Request, rule: ApprovalRule | None, channel: str,
                   url: str | None) -> Decision:
    """The approval question is posted (in ``channel``): audited, and the requester sees
    who must approve, where and until when, with a Withdraw button."""
    needed = request.approvals_needed or 1
    return Decision(None, (
        Audit("approval_asked", request, channel_id=channel, parameters=True,
              detail=f"needs {needed} approval(s)"),
        Respond(url, msg.awaiting_approval(
            request.id, request.job_name, approvers=rule.approvers if rule else (),
            groups=rule.groups if rule else (), needed=needed, expires_at=request.expires_at,
            channel=channel if channel != request.channel_id else None))))


def approval_not_posted(request: Request, channel: str, error: str | None,
                        url: str | None) -> Decision:
    """The approval question could not be posted: nobody could approve a question nobody
    sees, so the request fails (while it is open) and the requester is told."""
    return Decision(
        Move(request.id, RequestState.AWAITING, RequestState.FAILED, open_only=True,
             error=f"approval request not posted: {error}"),
        (Audit("approval_not_posted", request, channel_id=channel,
               detail=f"Slack said {error}"),
         Respond(url, msg.approval_ended(request.job_name, "failed",
                                         command=request.command))))


def expired_while_awaiting(request: Request, description: str) -> Decision:
    """A click found an approval request past its time: awaiting -> expired, told once."""
    told = approval_expired(request, description)
    return Decision(Move(request.id, RequestState.AWAITING, RequestState.EXPIRED),
                    told.effects)


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


# --- the queue (a job at its max_running) ------------------------------------------------


def queue_expired(request: Request, minutes: int) -> Decision:
    """A queued request past its ``queue_ttl`` (the move made by whoever found it)."""
    return Decision(None, (
        Count("expired"), Audit("queue_expired", request),
        TellRequester(request, msg.queue_ended(request.job_name, "expired",
                                               command=request.command, minutes=minutes)),
        Positions(request.job_name)))


def expired_while_queued(request: Request, minutes: int) -> Decision:
    """A click found a queued request past its time: queued -> expired, told once."""
    return Decision(Move(request.id, RequestState.QUEUED, RequestState.EXPIRED),
                    queue_expired(request, minutes).effects)


def leave_queue(request: Request, by: str) -> Decision:
    """Leave: queued -> withdrawn, by the requester, while it waits."""
    return Decision(
        Move(request.id, RequestState.QUEUED, RequestState.WITHDRAWN, requester=by,
             open_only=True),
        (Audit("left_queue", request, user_id=by), Positions(request.job_name)),
        Answer(Told.LEFT, request))


def queued_by_click(request: Request, by: str) -> Decision:
    """Queue, once the store's claim moved it pending -> queued: audited with what waits,
    the requester's place shown, and the queue released in case a slot freed."""
    return Decision(None, (Audit("queued", request, user_id=by, parameters=True),
                           Queued(request, request.response_url)))


def dequeued(request: Request) -> Decision:
    """The queue's turn (the store claimed it queued -> sending under the slot lock)."""
    return Decision(None, (Audit("dequeued", request, parameters=True),
                           Start(request, request.response_url)))


def run_anyway(request: Request, by: str, url: str | None) -> Decision:
    """An admin's own request, claimed past the job's max_running: it starts."""
    return Decision(None, (Audit("run_anyway", request, user_id=by,
                                 detail="started past the job's max_running"),
                           Start(request, url or request.response_url)))
