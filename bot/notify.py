""""Notify me" (issue 28): a running build's channel message carries a Notify me button;
whoever clicks it gets one direct message when the build ends (a second click undoes it).

The click toggles the clicker's row in the store (``bot.store.notify``) and answers them
alone. When the build's report is finished (and on every watcher pass, for rows whose
sender died or that were asked while the result was being posted), each row is claimed by
one process with a conditional UPDATE, its DM conversation recorded before the post, and
marked sent after: a retry looks in that conversation (the DM carries metadata naming the
build) before posting again, so a restart or a second replica neither loses nor doubles it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bot import messages as msg
from bot.answers import Click
from bot.clicks import Desk
from bot.config import BuildbotConfig
from bot.lifecycle import MAX_AGE, Build, WatchState
from bot.notifier import NOTIFY_EVENT, Delivery, Notifier, tagged
from bot.slack_budget import Priority
from bot.store import Store
from bot.store.notify import NotifyRow, Toggle

log = logging.getLogger(__name__)

LOOK_BACK = 300.0  # a DM conversation is searched this far before the click (clocks differ)
MAX_TRIES = 8  # claims of one DM before it is given up (a passing refusal each time)
RETRY_FIRST = 30.0  # seconds before a passing refusal is tried again, doubling
RETRY_MAX = 900.0


def click_answer(build: Build | None, channel: str, toggled: Toggle | None,
                 *, wanted: bool = False) -> msg.Message:
    """What the clicker is told (pure): ``toggled`` None when the click changed nothing
    because the build is gone, in another channel, or has ended."""
    if build is None:
        return msg.notify_refused("That build is no longer followed by buildbot.")
    if channel and channel not in (build.channel_id, build.message_channel):
        return msg.notify_refused("That button belongs to a message in another channel.")
    name = (build.job_name, build.daily_build_number, build.build_no)
    if toggled is None or toggled is Toggle.SENDING:
        return msg.notify_ended(*name, on_its_way=wanted or toggled is Toggle.SENDING)
    return msg.notify_on(*name) if toggled is Toggle.ON else msg.notify_off(*name)


class NotifyMe(Desk):
    """The Notify me clicks and the direct messages they asked for."""

    def __init__(self, *, config: BuildbotConfig, store: Store, notifier: Notifier,
                 clock: Callable[[], float], link: Callable[[Build], str | None],
                 where: Callable[[Build], tuple[str | None, str | None]],
                 stale_after: float, alive: Callable[[], bool] = lambda: True,
                 max_age: float = MAX_AGE) -> None:
        super().__init__(config=config, store=store, notifier=notifier, clock=clock)
        self.link = link
        self.where = where  # the build's channel message: (channel, ts)
        self.stale_after = stale_after  # a live claim lasts at most this long
        self.alive = alive
        self.max_age = max_age

    # --- the click -------------------------------------------------------------------

    def clicked(self, click: Click, channel: str) -> msg.Message:
        """Toggle the clicker's DM for this build (while it runs), and say so."""
        build = self.store.get_build(click.value)
        if build is None or (channel and channel not in (build.channel_id,
                                                         build.message_channel)):
            log.info("notify click refused build=%s user=%s", click.value, click.user_id)
            return click_answer(build, channel, None)
        if build.watch is WatchState.DONE:
            return click_answer(build, channel, None,
                                wanted=self.store.notify_wanted(build.id, click.user_id))
        toggled = self.store.toggle_notify(build_id=build.id, user_id=click.user_id,
                                           now=self.clock())
        if toggled is not Toggle.SENDING:
            self.store.audit(decision=f"notify_{toggled.value}", now=self.clock(),
                             request_id=build.id, user_id=click.user_id,
                             channel_id=channel or build.channel_id, job=build.job_name,
                             daily_build_number=build.daily_build_number,
                             build_no=build.build_no)
        # asked while the build was ending: the watcher's next pass sends it (send_due)
        return click_answer(build, channel, toggled)

    # --- the direct messages ---------------------------------------------------------

    def due(self, *, limit: int = 50, build_id: str | None = None) -> list[NotifyRow]:
        return self.store.notify_due(now=self.clock(), stale_after=self.stale_after,
                                     build_id=build_id, limit=limit)

    def send_due(self, build_id: str | None = None) -> int:
        """Send every DM that may be sent now (of one build, when given): how many were
        sent."""
        links: dict[str, str | None] = {}
        return sum(self.send_one(row, links) for row in self.due(build_id=build_id))

    def send(self, row: NotifyRow) -> None:
        """``send_one``, as a watcher task."""
        self.send_one(row)

    def send_one(self, row: NotifyRow, links: dict[str, str | None] | None = None) -> bool:
        """One DM, once: claimed, looked for (a retry), posted, marked. True when sent."""
        if not self.alive():
            return False  # another process may have taken this process's claims over
        build = self.store.get_build(row.build_id)
        if build is None:
            return False
        tries = self.store.claim_notify(row, now=self.clock(), stale_after=self.stale_after)
        if tries is None:
            return False  # another caller (or replica) has it
        channel = row.dm_channel
        if channel is not None:  # claimed before: it may have been posted
            found = self.notifier.find(channel, NOTIFY_EVENT, build.id,
                                       oldest=row.asked_at - LOOK_BACK)
            if found.known and found.ts:
                log.info("found the DM of build=%s to user=%s; not sending it again",
                         build.id, row.user_id)
                return self._sent(row, tries, build, Delivery(True, channel, found.ts))
            if not found.known:
                return self._refused(row, tries, build, Delivery(False, error="unreadable"))
        else:
            opened = self.notifier.open_dm(row.user_id)
            if not opened.ok or not opened.channel:
                return self._refused(row, tries, build, opened)
            channel = opened.channel
            if not self.store.set_notify_channel(row, tries=tries, channel=channel):
                return False
        message = msg.notify_dm(
            job_name=build.job_name, daily=build.daily_build_number, build_no=build.build_no,
            result=build.result or "unknown", duration_ms=build.duration_ms,
            thread=self._thread_link(build, links if links is not None else {}),
            link=self.link(build), channel=build.message_channel or build.channel_id)
        sent = self.notifier.post(channel, tagged(message, NOTIFY_EVENT, build.id),
                                  priority=Priority.RESULT)
        if sent.ok:
            return self._sent(row, tries, build, sent)
        return self._refused(row, tries, build, sent)

    def _thread_link(self, build: Build, links: dict[str, str | None]) -> str | None:
        """The link to the build's thread (one chat.getPermalink per build and pass)."""
        if build.id not in links:
            channel, ts = self.where(build)
            links[build.id] = self.notifier.permalink(channel, ts) if channel and ts else None
        return links[build.id]

    def _sent(self, row: NotifyRow, tries: int, build: Build, sent: Delivery) -> bool:
        if not self.store.notify_sent(row, tries=tries, ts=sent.ts):
            return False
        self.store.audit(decision="notified", now=self.clock(), request_id=build.id,
                         user_id=row.user_id, channel_id=sent.channel, job=build.job_name,
                         detail=build.result, daily_build_number=build.daily_build_number,
                         build_no=build.build_no)
        return True

    def _refused(self, row: NotifyRow, tries: int, build: Build, sent: Delivery) -> bool:
        """Slack would not take it: given up on a final refusal (or after ``MAX_TRIES``
        claims, or a day), else tried again later, looking first."""
        error = sent.error or "unknown"
        if sent.permanent or tries >= MAX_TRIES or self.clock() - row.asked_at > self.max_age:
            log.warning("DM of build=%s to user=%s not sent: %s (given up)", build.id,
                        row.user_id, error)
            if self.store.notify_failed(row, tries=tries, error=error):
                self.store.audit(decision="notify_refused", now=self.clock(),
                                 request_id=build.id, user_id=row.user_id,
                                 job=build.job_name, detail=f"Slack said {error}",
                                 build_no=build.build_no)
            return False
        wait = min(RETRY_FIRST * 2 ** (tries - 1), RETRY_MAX)
        log.info("DM of build=%s to user=%s not sent: %s; again in %.0f s", build.id,
                 row.user_id, error, wait)
        self.store.notify_later(row, tries=tries, retry_at=self.clock() + wait)
        return False
