"""The pure decisions: each event on a stored request comes to a move and a list of
typed effects, read here without Slack, CodeArts or a database. The engine's side (the
move made with one conditional UPDATE, the effects performed in order) is covered end
to end by the flow, approval and queue tests."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot import decisions as d
from bot.answers import Told
from bot.effects import (
    AskApproval,
    Audit,
    Count,
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
    ApprovalOutcome,
    ApprovalRule,
    Claim,
    ClaimReason,
    Request,
    RequestState,
    allowed,
)

REQUEST = Request(id="r" * 32, state=RequestState.PENDING, created_at=0.0, expires_at=600.0,
                  updated_at=0.0, user_id="UALICE", team_id="T1", channel_id="CBUILDS",
                  job_name="backend", job_id="f" * 32, command="backend target=prod",
                  body={"job_id": "f" * 32, "parameter": [{"name": "target", "value": "prod"}]},
                  response_url="https://hooks.slack/r", approved_by=("UCAROL",))


RULE = ApprovalRule(approvers=("UCAROL",), groups=(), needed=1, channel="CAPPROVALS",
                    ttl=1800.0)


def kinds(decision: d.Decision) -> list[str]:
    return [type(e).__name__ for e in decision.effects]


ALL = [
    d.cancel(REQUEST), d.replace_edited(REQUEST), d.expired(REQUEST),
    d.expired_by_click(REQUEST), d.reject(REQUEST, "UCAROL", "Backend CI"),
    d.withdraw(REQUEST, ""), d.approval_expired(REQUEST, ""),
    d.expired_while_awaiting(REQUEST, ""),
    d.approval_asked(REQUEST, RULE, "CAPPROVALS", None),
    d.approval_not_posted(REQUEST, "CAPPROVALS", "channel_not_found", None),
    d.refused_now(REQUEST, ["`target` can only be `staging`"], None),
    d.queue_expired(REQUEST, 30), d.expired_while_queued(REQUEST, 30),
    d.leave_queue(REQUEST, "UALICE"), d.dequeued(REQUEST), d.run_anyway(REQUEST, "UADMIN", None),
    d.queued_by_click(REQUEST, "UALICE"),
    *(d.approval_given(o, REQUEST, REQUEST, "UCAROL", "", {"text": "q"})
      for o in (ApprovalOutcome.START, ApprovalOutcome.QUEUED, ApprovalOutcome.RECORDED)),
]


@pytest.mark.parametrize("decision", ALL)
def test_every_move_is_one_the_lifecycle_allows(decision: d.Decision) -> None:
    if decision.move is not None:
        assert allowed(decision.move.old, decision.move.new)
        assert decision.move.id == REQUEST.id


@pytest.mark.parametrize("decision", ALL)
def test_every_decision_audits_what_it_did(decision: d.Decision) -> None:
    """A decision that moves or tells also leaves its audit row (the log of who did what)."""
    audits = [e for e in decision.effects if isinstance(e, Audit)]
    assert len(audits) == 1 and audits[0].request is REQUEST


def test_cancel_moves_pending_to_cancelled_then_counts_and_audits() -> None:
    decision = d.cancel(REQUEST)
    assert decision.move == Move(REQUEST.id, RequestState.PENDING, RequestState.CANCELLED)
    assert decision.effects == (Count("cancelled"), Audit("cancelled", REQUEST))
    assert decision.answer.told is Told.CANCELLED


@pytest.mark.parametrize(("state", "told"), [
    (RequestState.SENDING, Told.NOTHING), (RequestState.STARTED, Told.NOTHING),
    (RequestState.EXPIRED, Told.ALREADY), (RequestState.REFUSED, Told.ALREADY)])
def test_a_cancel_that_lost_says_why_unless_the_run_will(state: RequestState,
                                                          told: Told) -> None:
    assert d.cancel_lost(REQUEST, state).told is told


def test_reject_closes_the_approval_and_tells_the_requester() -> None:
    decision = d.reject(REQUEST, "UCAROL", "Backend CI")
    assert decision.move == Move(REQUEST.id, RequestState.AWAITING, RequestState.REJECTED,
                                 open_only=True)
    assert kinds(decision) == ["Audit", "Count", "UpdateApproval", "TellRequester"]
    closed = next(e for e in decision.effects if isinstance(e, UpdateApproval))
    assert "Rejected by <@UCAROL>" in closed.message["text"]
    audit = decision.effects[0]
    assert isinstance(audit, Audit) and audit.user_id == "UCAROL"


def test_withdraw_is_the_requesters_own_move() -> None:
    decision = d.withdraw(REQUEST, "")
    assert decision.move is not None and decision.move.requester == "UALICE"
    assert decision.answer.told is Told.WITHDRAWN


def test_refused_when_sent_ends_refused_with_the_reason() -> None:
    decision = d.refused_now(REQUEST, ["no longer allowed"], "https://hooks.slack/x")
    assert decision.move == Move(REQUEST.id, RequestState.SENDING, RequestState.REFUSED,
                                 error="no longer allowed")
    tell = decision.effects[-1]
    assert isinstance(tell, TellRequester) and tell.url == "https://hooks.slack/x"
    assert "no longer allowed" in tell.message["text"]
    assert not any(isinstance(e, Start) for e in decision.effects)  # nothing is sent


def test_the_queues_turn_audits_before_the_run_call() -> None:
    assert kinds(d.dequeued(REQUEST)) == ["Audit", "Start"]
    start = d.dequeued(REQUEST).effects[-1]
    assert isinstance(start, Start) and start.url == REQUEST.response_url


def test_run_anyway_answers_where_it_was_clicked_else_where_it_was_asked() -> None:
    assert d.run_anyway(REQUEST, "UADMIN", "https://hooks.slack/c").effects[-1] == \
        Start(REQUEST, "https://hooks.slack/c")
    assert d.run_anyway(REQUEST, "UADMIN", None).effects[-1] == \
        Start(REQUEST, REQUEST.response_url)


def test_leaving_or_expiring_the_queue_updates_everyones_place() -> None:
    for decision in (d.leave_queue(REQUEST, "UALICE"), d.queue_expired(REQUEST, 30)):
        assert decision.effects[-1] == Positions("backend")


def test_an_expired_question_is_told_through_its_own_response_url() -> None:
    respond = d.expired(REQUEST).effects[-1]
    assert isinstance(respond, Respond) and respond.url == REQUEST.response_url
    assert "expired after 10 minutes" in respond.message["text"]


def test_an_approval_not_posted_fails_only_while_open() -> None:
    decision = d.approval_not_posted(replace(REQUEST, state=RequestState.AWAITING),
                                     "CAPPROVALS", "not_in_channel", None)
    assert decision.move is not None and decision.move.open_only
    assert decision.move.error == "approval request not posted: not_in_channel"


def test_a_won_run_claim_sends_or_asks_for_approval() -> None:
    sending = replace(REQUEST, state=RequestState.SENDING)
    awaiting = replace(REQUEST, state=RequestState.AWAITING)
    won = d.run_claimed(Claim(True, ClaimReason.CLAIMED, sending), "https://hooks.slack/c")
    assert won is not None and won.effects == (Start(sending, "https://hooks.slack/c"),)
    asked = d.run_claimed(Claim(True, ClaimReason.CLAIMED, awaiting), None)
    assert asked is not None
    assert asked.effects == (AskApproval(awaiting, awaiting.response_url),)


def test_a_lost_run_claim_says_nothing_offers_queue_or_is_refused() -> None:
    first = d.run_claimed(Claim(False, RequestState.SENDING, REQUEST), None)
    assert first is not None and first.effects == () and first.answer.told is Told.NOTHING
    full = d.run_claimed(Claim(False, ClaimReason.FULL, REQUEST), None, slots="s")
    assert full is not None and full.effects == (OfferQueue(REQUEST, REQUEST.response_url, "s"),)
    assert d.run_claimed(Claim(False, ClaimReason.NOT_YOURS, REQUEST), None) is None


def test_an_approval_that_finds_the_job_full_queues_and_closes_the_question() -> None:
    decision = d.approval_given(ApprovalOutcome.QUEUED, REQUEST, REQUEST, "UCAROL", "",
                                {"text": "q"})
    assert kinds(decision) == ["Audit", "UpdateApproval", "Queued"]
    assert decision.effects[-1] == Queued(REQUEST, REQUEST.response_url)


def test_an_approval_short_of_enough_shows_who_so_far() -> None:
    two = replace(REQUEST, approvals_needed=2)
    decision = d.approval_given(ApprovalOutcome.RECORDED, two, two, "UCAROL", "",
                                {"text": "question"})
    assert decision.answer.told is Told.APPROVAL_NOTED
    assert (decision.answer.given, decision.answer.needed) == (1, 2)
    assert decision.effects[-1] == UpdateApproval(two, {"text": "question"})
