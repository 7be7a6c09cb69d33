"""What the engine and its feature collaborators share: the store, the notifier, the
jobs file and the clock, and the one step every button takes first: load the clicked
request and check who clicked (a click that changes nothing is logged, audited when it
was someone else's, and answered with why)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from bot import messages as msg
from bot.answers import Answer, Click, Told
from bot.config import BuildbotConfig
from bot.lifecycle import Request
from bot.notifier import Notifier
from bot.store import Store

log = logging.getLogger(__name__)

# refusals audited as a click on someone else's request (or not theirs to decide)
_AUDITED_REFUSALS = frozenset({"not_yours", "not_admin", "self", "not_approver",
                               "not_requester"})


class Desk:
    """The collaborators every feature works with, and the checks of a click."""

    def __init__(self, *, config: BuildbotConfig, store: Store, notifier: Notifier,
                 clock: Callable[[], float]) -> None:
        self.config = config
        self.store = store
        self.notifier = notifier
        self.metrics = notifier.metrics
        self.clock = clock

    def description(self, job_name: str) -> str:
        job = self.config.jobs.get(job_name)
        return job.description if job is not None else ""

    def refused(self, click: Click, request: Request | None, told: Told, reason: str,
                what: str, *, quiet: bool = False) -> Answer:
        """A click that changed nothing: logged, audited when it was someone else's (or
        not theirs to decide), and answered with ``reason``."""
        log.info("%s click refused request=%s user=%s reason=%s", what, click.value,
                 click.user_id, reason)
        if request is not None and reason in _AUDITED_REFUSALS and not quiet:
            detail = f"{what} on {request.user_id}'s request"
            self.store.audit(decision="refused_click", now=self.clock(), request_id=request.id,
                             user_id=click.user_id, channel_id=request.channel_id,
                             job=request.job_name,
                             detail=detail if told is Told.NOT_YOURS else f"{detail}: {reason}")
        if request is None and told is Told.NOT_YOURS:
            return Answer(Told.MISSING)
        return Answer(told, request, reason)

    def own_request(self, click: Click, what: str, told: Told, *,
                    quiet: bool = False) -> Request | Answer:
        """The request a requester's button is about, when the clicker is its requester;
        otherwise the answer saying why not."""
        request = self.store.get_request(click.value)
        if request is None:
            return self.refused(click, None, told, "missing", what)
        if request.user_id != click.user_id:
            mine = "not_requester" if told is Told.APPROVAL_REFUSED else "not_yours"
            return self.refused(click, request, told, mine, what, quiet=quiet)
        return request

    def expired_now(self, request: Request) -> Answer:
        """This click found the question past its time and expired it: it tells it."""
        self.metrics.commands.labels("expired").inc()
        self.store.audit(decision="expired", now=self.clock(), request_id=request.id,
                         user_id=request.user_id, channel_id=request.channel_id,
                         job=request.job_name)
        return Answer(Told.EXPIRED, request)

    def tell_requester(self, request: Request, message: msg.Message) -> None:
        """Through the click's response_url (it replaces the "waiting" message); after
        its 30 minutes, as a direct message."""
        if not self.notifier.respond(request.response_url, message):
            self.notifier.direct(request.user_id, {"text": message["text"]})
