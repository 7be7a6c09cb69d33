"""``/build subscribe``, ``unsubscribe`` and ``subscriptions`` on the Slack side: builds
started outside Slack, announced in the channel.

Who may subscribe a channel to a job, or end it: whoever may run the job there (the checks
of a run, as for ``/build status``), admins included by those checks.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, ClassVar

from slack_sdk.errors import SlackApiError, SlackClientError

from bot import messages as msg
from bot.command import SubsCommand, SubscribeCommand, SubscriptionsCommand, UnsubscribeCommand
from bot.flow_types import FlowRoom, Outcome, Who
from bot.policy import UserGroups
from bot.rules import JOB_ID_RE
from bot.slack_budget import Priority

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

# Why a subscription may not post in a conversation, by what conversations.info says.
_NOT_A_CHANNEL = ("Subscriptions post in channels, not in direct messages or group direct "
                  "messages: type this in the channel that should get the announcements.")
_ALL_SCOPES = "channels:read, groups:read, im:read and mpim:read"
_NO_ANSWER = ("Slack did not say whether buildbot can post in this channel: nothing was "
              "subscribed; try again in a minute.")
_ERROR_CODE = re.compile(r"[a-z_]{1,60}")  # Slack's error codes (not an HTTP failure's text)


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
                [(s.job_name, s.filter, s.created_by, s.created_at, s.branch) for s in found]))
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
        problem = self.channel_problem(who.channel_id)
        if problem is not None:
            self.engine.not_started(decision="denied", user_id=who.user_id,
                                    channel_id=who.channel_id, job=job_name, detail=problem)
            self.respond(who.response_url, msg.subscribe_channel_refused(problem))
            return
        before = self.engine.subscribe(channel_id=who.channel_id, job_name=job_name,
                                       job_id=job_id, filter=command.filter,
                                       user_id=who.user_id, branch=command.branch)
        self.respond(who.response_url, msg.subscribed(
            job_name, command.filter, user_id=who.user_id, previous=before,
            branch=command.branch))

    def channel_problem(self, channel_id: str) -> str | None:
        """Why the bot may not announce builds in this conversation, asked of Slack
        (``conversations.info``); None when it may. Not a channel (a DM, a group DM), a
        channel the bot cannot see (a private one it was not invited to), an archived one,
        or no clear answer from Slack: refused."""
        budget = self.engine.notifier.budget
        if budget is not None and not budget.acquire("conversations.info", channel_id,
                                                     priority=Priority.ANSWER, max_wait=10.0):
            return _NO_ANSWER
        try:
            answer = self.flow.slack.conversations_info(channel=channel_id)
        except SlackApiError as exc:
            return _slack_refusal(exc.response.get("error") if exc.response else None,
                                  exc.response.get("needed") if exc.response else None)
        except (SlackClientError, OSError) as exc:
            log.warning("conversations.info failed channel=%s: %s", channel_id,
                        type(exc).__name__)
            return _NO_ANSWER
        return _channel_refusal(answer.get("channel"))


def _slack_refusal(error: Any, needed: Any) -> str:
    """Slack would not describe the channel: say why and what fixes it."""
    if error == "channel_not_found":
        return ("buildbot cannot see this channel, so it cannot post here: invite @buildbot "
                "to it first (`/invite @buildbot`), then subscribe again.")
    if error == "missing_scope":
        return (f"buildbot may not look this channel up (Slack wants the scope "
                f"{needed if isinstance(needed, str) else 'for it'}): ask whoever installed "
                f"the app to add {_ALL_SCOPES} (manifest.yml has them) and reinstall it.")
    if not isinstance(error, str) or not _ERROR_CODE.fullmatch(error):
        return _NO_ANSWER  # a 5xx or a page that is not Slack's answer
    return (f"Slack would not say whether buildbot can post in this channel ({error}): "
            "nothing was subscribed.")


def _channel_refusal(channel: Any) -> str | None:
    """None when announcements can go to this conversation, else why not."""
    if not isinstance(channel, dict):
        return "Slack did not describe this channel: nothing was subscribed."
    if channel.get("is_im") or channel.get("is_mpim"):
        return _NOT_A_CHANNEL
    name = f"#{channel['name']}" if isinstance(channel.get("name"), str) else "this channel"
    if channel.get("is_archived"):
        return f"{name} is archived: nothing can be posted in it."
    if channel.get("is_private") and not channel.get("is_member"):
        return (f"buildbot is not in {name}, so it cannot post there: invite @buildbot to "
                f"{name} first (`/invite @buildbot`), then subscribe again.")
    return None
