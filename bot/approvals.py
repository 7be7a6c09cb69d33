"""Approval by a second person: the question in the approval channel, the Approve,
Reject and Withdraw clicks (each one claim in the store), and their effects."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bot import decisions
from bot import messages as msg
from bot.answers import NOTHING, Answer, Click, Told
from bot.clicks import Desk
from bot.config import BuildbotConfig
from bot.effects import Queued, UpdateApproval
from bot.lifecycle import (
    ApprovalOutcome,
    ApprovalRule,
    Build,
    Request,
    RequestState,
    approval_refusal,
)
from bot.limits import Limits
from bot.notifier import Notifier
from bot.policy import Denied, UserGroups, approval_rule
from bot.store import Store

log = logging.getLogger(__name__)


class Approvals(Desk):
    """Requests of jobs with approvers, from the question to its last word."""

    def __init__(self, *, config: BuildbotConfig, store: Store, notifier: Notifier,
                 clock: Callable[[], float], limits: Limits,
                 start: Callable[[Request, str | None], Denied | None]) -> None:
        super().__init__(config=config, store=store, notifier=notifier, clock=clock)
        self.limits = limits
        self.start = start  # the engine's one call to CodeArts

    def handlers(self) -> dict[type, Callable[[Any], object]]:
        return {**super().handlers(), Queued: lambda e: self.limits.perform((e,))}

    # --- approvals ---------------------------------------------------------------------
    # A request of a job with approvers waits (awaiting) after Run; the question is posted
    # in the approval channel and updated in place with each decision. The decisions
    # themselves are claims in the store (the clicks below); then their effects.

    def ask_approval(self, request: Request, response_url: str | None) -> None:
        """Post the approval question, keep where it is, and tell the requester who must
        approve. Where it cannot be posted the request fails: nothing starts, and the
        requester is told (nobody could approve a question nobody sees)."""
        rule = approval_rule(self.config, request.job_name)
        channel = rule.channel if rule is not None and rule.channel else request.channel_id
        sent = self.notifier.post(channel, self._approval_question(request, rule))
        if not sent.ok:
            log.warning("approval request of request=%s not posted channel=%s error=%s",
                        request.id, channel, sent.error)
            self.act(decisions.approval_not_posted(request, channel, sent.error, response_url))
            return
        if sent.ts:
            self.store.set_approval_message(id=request.id, channel=sent.channel or channel,
                                            ts=sent.ts)
        self.act(decisions.approval_asked(request, rule, channel, response_url))

    def _approval_question(self, request: Request, rule: ApprovalRule | None) -> msg.Message:
        return msg.approval_request(
            request_id=request.id, requester=request.user_id, job_name=request.job_name,
            description=self.description(request.job_name), body=request.body,
            approvers=rule.approvers if rule else (), groups=rule.groups if rule else (),
            needed=request.approvals_needed or 1, approved_by=request.approved_by,
            expires_at=request.expires_at)

    def _update_approval(self, request: Request, message: msg.Message) -> None:
        self.perform((UpdateApproval(request, message),))

    def _close_approval(self, request: Request, outcome: str, by: tuple[str, ...] = (),
                        build: Build | None = None) -> None:
        self._update_approval(request, msg.approval_closed(
            requester=request.user_id, job_name=request.job_name,
            description=self.description(request.job_name), body=request.body,
            outcome=outcome, by=by, daily=build.daily_build_number if build else "",
            build_no=build.build_no if build else ""))

    def start_approved(self, request: Request) -> Denied | None:
        """The approval that made it enough moved the request to sending: send it once
        (as a Run click would), then show the outcome in the approval message. The
        refusal, when the checks made again before sending now say no."""
        denied = self.start(request, request.response_url)
        if denied is not None:
            self._close_approval(request, "refused", request.approved_by)
            return denied
        build = self.store.get_build(request.id)
        current = self.store.get_request(request.id)
        outcome = ("started" if build is not None else
                   "not_started" if current is not None
                   and current.state is RequestState.FAILED else "checking")
        self._close_approval(request, outcome, request.approved_by, build)
        return None

    def approval_expired(self, request: Request) -> None:
        """Audit, show and tell an approval request this process expired (once)."""
        self.act(decisions.approval_expired(request, self.description(request.job_name)))

    # --- the door: approval clicks --------------------------------------------------------

    def approver_request(self, click: Click, what: str,
                         groups: UserGroups) -> Request | Answer:
        """The request an Approve or Reject click is about, when the clicker may decide it;
        otherwise the answer saying why not."""
        request = self.store.get_request(click.value)
        if request is None:
            return self.refused(click, None, Told.APPROVAL_REFUSED, "missing", what)
        rule = approval_rule(self.config, request.job_name)
        refusal = "not_approver" if rule is None else approval_refusal(
            rule, requester=request.user_id, user=click.user_id, members=groups.members)
        if refusal is not None:
            return self.refused(click, request, Told.APPROVAL_REFUSED, refusal, what)
        return request

    def _not_awaiting(self, request_id: str) -> str:
        """Why a request can no longer be decided; one past its time is expired here (and
        told, once) if the sweep has not done it yet."""
        current = self.store.get_request(request_id)
        if current is None:
            return "missing"
        if current.state is RequestState.AWAITING and current.expires_at <= self.clock():
            self.act(decisions.expired_while_awaiting(current,
                                                      self.description(current.job_name)))
            return RequestState.EXPIRED
        return current.state

    def approve(self, click: Click, groups: UserGroups) -> Answer:
        """Approve: one approval recorded, once per approver; the one that makes it enough
        starts (or queues) the build."""
        found = self.approver_request(click, "Approve", groups)
        if isinstance(found, Answer):
            return found
        request, now = found, self.clock()
        result = self.store.record_approval(id=request.id, approver=click.user_id, now=now,
                                            slots=self.limits.slots(request.job_name),
                                            queue_ttl=self.limits.queue_ttl(request.job_name))
        current = result.request or request
        if result.outcome in (ApprovalOutcome.QUEUED, ApprovalOutcome.START,
                              ApprovalOutcome.RECORDED):
            answer = self.act(decisions.approval_given(
                ApprovalOutcome(result.outcome), request, current, click.user_id,
                self.description(request.job_name), self._approval_question(
                    current, approval_rule(self.config, current.job_name))))
            if result.outcome is not ApprovalOutcome.START:
                return answer
            denied = self.start_approved(current)  # sent last: its answer decides the reply
            if denied is not None:  # the approver learns why it did not start
                return Answer(Told.REFUSED_NOW, current, problems=denied.problems)
            return NOTHING
        reason: str = result.outcome
        if result.outcome is ApprovalOutcome.EXPIRES_NOW:
            self.approval_expired(current)
            reason = RequestState.EXPIRED
        return self.refused(click, current, Told.APPROVAL_REFUSED, reason, "Approve")

    def reject(self, click: Click, groups: UserGroups) -> Answer:
        """Reject: awaiting -> rejected, by an approver, while it is open."""
        found = self.approver_request(click, "Reject", groups)
        if isinstance(found, Answer):
            return found
        answer = self.act(decisions.reject(found, click.user_id,
                                           self.description(found.job_name)))
        if answer.told is Told.LOST:
            return self.refused(click, found, Told.APPROVAL_REFUSED,
                                self._not_awaiting(found.id), "Reject")
        return answer

    def withdraw(self, click: Click) -> Answer:
        """Withdraw: awaiting -> withdrawn, by the requester, while it is open."""
        found = self.own_request(click, "Withdraw", Told.APPROVAL_REFUSED)
        if isinstance(found, Answer):
            return found
        answer = self.act(decisions.withdraw(found, self.description(found.job_name)))
        if answer.told is Told.LOST:
            return self.refused(click, found, Told.APPROVAL_REFUSED,
                                self._not_awaiting(found.id), "Withdraw")
        return answer
