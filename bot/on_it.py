""""I'm on it" (issue 28): a failure reply (a failed build's thread reply, a followed
build's failure post) carries an I'm on it button. The first click takes it and the reply
says "@bob is on it"; a click by someone else answers them alone "@bob is already on it";
a second click by the taker releases it. When a later build of the job on the same branch
succeeds, the claim closes before that build's result is posted, so its messages can say
who was on it (``Store.claim_closed_by``).

The failure reply is remembered when it is posted (``remember``), with what it says, so
the click edits it (``chat.update``) from the store, never from what the click carries.
Taking and releasing are conditional UPDATEs (``bot.store.on_it``): one taker, however
many clicks and replicas; the edit shows the claim as the store has it after the move.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from bot import messages as msg
from bot.answers import Click
from bot.clicks import Desk
from bot.config import BuildbotConfig
from bot.lifecycle import Build, branch_of_body
from bot.notifier import RESULT_EVENT, Delivery, Notifier, tagged
from bot.slack_budget import Priority
from bot.store import Store
from bot.store.on_it import FailureReply, Took

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class OnItDecision:
    """What a click comes to: the reply edited (to show ``taker``, or nobody) when
    ``edit``, and the clicker's own answer (None: the edit says it)."""

    edit: bool
    answer: msg.Message | None


def decide_on_it(took: Took, row: FailureReply | None, user_id: str) -> OnItDecision:
    """Pure: what an I'm on it click that did ``took`` says and edits."""
    if row is None or took is Took.MISSING:
        return OnItDecision(False, msg.on_it_refused(
            "buildbot no longer knows this failure; your click changed nothing."))
    if took is Took.TAKEN:
        return OnItDecision(True, None)
    if took is Took.RELEASED:
        return OnItDecision(True, msg.on_it_released(row.job_name))
    if took is Took.CLOSED:
        return OnItDecision(False, msg.on_it_closed(row.job_name, row.closed_by or "?"))
    return OnItDecision(False, msg.already_on_it(row.taker or user_id))


class OnIt(Desk):
    """I'm on it: failure replies remembered, clicks decided, claims closed."""

    def __init__(self, *, config: BuildbotConfig, store: Store, notifier: Notifier,
                 clock: Callable[[], float], stale_after: float) -> None:
        """``stale_after``: a click's own edit is done by then; a change its reply does
        not show after that is edited again by the watcher (``edit_lost``)."""
        super().__init__(config=config, store=store, notifier=notifier, clock=clock)
        self.stale_after = stale_after

    def branch_of(self, build: Build) -> str | None:
        """The branch a build ran on, where the bot knows it: the one its row keeps (a
        followed build's record, or the ``codeBranch`` its run sent), else, for a row
        recorded before rows kept it, the ``codeBranch`` its request sent."""
        if build.branch:
            return build.branch
        request = self.store.get_request(build.id)
        return branch_of_body(request.body) if request is not None else None

    # --- the reply -------------------------------------------------------------------

    def remember(self, build: Build, reply: msg.Message, sent: Delivery) -> None:
        """A result reply Slack took: a failure's is remembered for I'm on it."""
        if not msg.failed(build.result or "") or not sent.channel or not sent.ts:
            return
        shown = {k: v for k, v in reply.items() if k in ("text", "blocks")}
        self.store.remember_failure_reply(
            build_id=build.id, job_id=build.job_id, job_name=build.job_name,
            build_no=build.build_no, daily_build_number=build.daily_build_number,
            branch=self.branch_of(build), channel=sent.channel, ts=sent.ts, reply=shown,
            now=self.clock())

    # --- the click ---------------------------------------------------------------------

    def clicked(self, click: Click, channel: str) -> msg.Message | None:
        """Take or release the failure for the clicker, edit the reply, and say what
        the edit does not."""
        row = self.store.failure_reply(click.value)
        if row is not None and channel and channel != row.channel:
            log.info("on-it click refused build=%s user=%s: another channel", click.value,
                     click.user_id)
            return msg.on_it_refused("That button belongs to a message in another channel.")
        took = Took.MISSING if row is None else self.store.take_or_release(
            build_id=row.build_id, user_id=click.user_id, now=self.clock())
        decision = decide_on_it(took, row, click.user_id)
        if row is not None and took in (Took.TAKEN, Took.RELEASED):
            self.store.audit(decision=f"on_it_{took.value}", now=self.clock(),
                             request_id=row.build_id, user_id=click.user_id,
                             channel_id=row.channel, job=row.job_name,
                             daily_build_number=row.daily_build_number,
                             build_no=row.build_no)
        if decision.edit and row is not None:
            self.edit(row)
        return decision.answer

    def edit(self, row: FailureReply) -> None:
        """The reply shows who is on it as the store has it now (a later click's edit
        never shows an older state than its own move)."""
        current = self.store.failure_reply(row.build_id) or row
        edited = msg.with_taker(current.reply, current.taker)
        sent = self.notifier.update(current.channel, current.ts,
                                    tagged(edited, RESULT_EVENT, row.build_id),
                                    priority=Priority.ANSWER)
        if sent.ok or sent.permanent:  # a final refusal (the reply deleted) is not retried
            self.store.reply_shows(build_id=row.build_id, taker=current.taker)
        if not sent.ok:
            log.warning("failure reply of build=%s not edited: %s", row.build_id, sent.error)

    def lost_edits(self, *, limit: int = 20) -> list[FailureReply]:
        """The failure replies whose taker changed more than ``stale_after`` ago and that
        do not show it (a crash or a busy Slack lost the edit)."""
        return self.store.replies_to_edit(before=self.clock() - self.stale_after,
                                          limit=limit)

    def edit_lost(self) -> int:
        """Edit each of ``lost_edits`` again: how many."""
        due = self.lost_edits()
        for row in due:
            self.edit(row)
        return len(due)

    # --- a success closes the claims before it ------------------------------------------

    def succeeded(self, build: Build) -> None:
        """A build ended, before its result is posted: a success closes the open claims of
        the failures of its job on its branch before it (again on a retry: idempotent), so
        its messages can say who was on it (``Store.claim_closed_by``)."""
        if build.result != "success":
            return
        closed = self.store.close_claims(job_id=build.job_id, branch=self.branch_of(build),
                                         build_no=build.build_no, now=self.clock())
        if closed:
            log.info("build=%s of job=%s succeeded: %d failure(s) closed", build.id,
                     build.job_name, closed)
