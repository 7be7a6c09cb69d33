"""``/build subscribe``, ``unsubscribe`` and ``subscriptions`` on the Slack side: builds
started outside Slack, announced in the channel.

Who may subscribe a channel to a job, or end it: whoever may run the job there (the checks
of a run, as for ``/build status``), admins included by those checks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from bot import messages as msg
from bot.command import SubsCommand, SubscribeCommand, SubscriptionsCommand, UnsubscribeCommand
from bot.flow_types import FlowRoom, Outcome, Who
from bot.policy import UserGroups
from bot.rules import JOB_ID_RE

if TYPE_CHECKING:
    pass


class SubsFlow(FlowRoom):
    """Subscriptions: their checks and (after the ack) their answers, audited by the engine."""

    COMMANDS: ClassVar[tuple[type, ...]] = (SubscribeCommand, UnsubscribeCommand,
                                            SubscriptionsCommand)

    def check(self, command: SubsCommand, who: Who, groups: UserGroups) -> Outcome:
        if isinstance(command, SubscriptionsCommand):
            return Outcome(None, "subscriptions", asked=command)
        allowed = self.flow.may_run(command.job, who.user_id, who.channel_id, groups)
        kind = "subscribe" if isinstance(command, SubscribeCommand) else "unsubscribe"
        if isinstance(allowed, list):
            unknown = self.flow.job_named(command.job) is None \
                and not JOB_ID_RE.fullmatch(command.job)
            if isinstance(command, UnsubscribeCommand) and unknown and any(
                    s.job_name == command.job for s in self.engine.subscriptions(who.channel_id)):
                # a job gone from the file: its subscription here can still be ended
                return Outcome(None, kind, job=command.job, asked=command,
                               target=(command.job, ""))
            if unknown:
                reply = msg.problems_message(allowed)  # no such job: like a typing mistake
            else:
                reply = msg.subscribe_refused(allowed)
            return Outcome(reply, "denied", job=command.job, detail=" ".join(allowed))
        return Outcome(None, kind, job=allowed[0], asked=command, target=allowed)

    def answer(self, who: Who, outcome: Outcome) -> None:
        """After the ack: list, end or make the channel's subscription (audited)."""
        command = outcome.asked
        if isinstance(command, SubscriptionsCommand):
            found = self.engine.subscriptions(who.channel_id)
            self.respond(who.response_url, msg.subscriptions_list(
                [(s.job_name, s.filter, s.created_by, s.created_at) for s in found]))
            return
        assert outcome.target is not None
        job_name, job_id = outcome.target
        if isinstance(command, UnsubscribeCommand):
            existed = self.engine.unsubscribe(channel_id=who.channel_id, job_name=job_name,
                                              user_id=who.user_id)
            self.respond(who.response_url,
                         msg.unsubscribed(job_name, user_id=who.user_id, existed=existed))
            return
        assert isinstance(command, SubscribeCommand)
        before = self.engine.subscribe(channel_id=who.channel_id, job_name=job_name,
                                       job_id=job_id, filter=command.filter,
                                       user_id=who.user_id)
        self.respond(who.response_url, msg.subscribed(
            job_name, command.filter, user_id=who.user_id, previous=before))
