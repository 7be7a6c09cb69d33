"""Where one build stands, for a preview of a pasted link to it (bot.flow_unfurl): the
bot's own record when it has one, what CodeArts says otherwise (or while it runs), and
the step it is on. Reads only; CodeArts' answers are untrusted and an unreadable one
gives no preview rather than an error."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.codearts.client import CodeArtsClient
from bot.codearts.errors import CodeArtsError
from bot.lifecycle import ORIGIN_SUBSCRIPTION, Build, duration_of, progress_line, result_of
from bot.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildFacts:
    """What a preview shows of a build: ``result`` None while it runs (``progress`` then
    says for how long and on which step); ``started_by`` the Slack user who started it
    from Slack, None for a build started elsewhere; ``ours`` the bot's record, if any."""

    ours: Build | None
    daily: str
    result: str | None
    duration_ms: int | None
    progress: str | None
    started_by: str | None


def read_build(api: CodeArtsClient, store: Store, job_id: str, build_no: str, *,
               now: float) -> BuildFacts | None:
    """The facts of one build of ``job_id``; None when CodeArts does not know it or could
    not be asked (no preview then: the link stays a plain link)."""
    ours = store.builds_by_number(job_id=job_id, build_nos=[build_no]).get(build_no)
    started_by = ours.user_id if ours is not None and ours.origin != ORIGIN_SUBSCRIPTION \
        else None
    if ours is not None and ours.result is not None:  # ended, as the bot reported it
        return BuildFacts(ours, ours.daily_build_number, ours.result, ours.duration_ms, None,
                          started_by)
    try:
        state = api.build_state(job_id, build_no)
    except CodeArtsError as exc:
        log.info("no preview of job=%s build=%s: %s", job_id, build_no, type(exc).__name__)
        return None
    daily = (ours.daily_build_number if ours else "") or state.daily_build_number or ""
    if state.finished:
        return BuildFacts(ours, daily, result_of(state), duration_of(state), None, started_by)
    if state.start_time is not None:
        elapsed = now - state.start_time.timestamp()
    else:
        elapsed = now - ours.created_at if ours is not None else 0.0
    try:
        steps = api.build_steps(job_id, build_no)
    except CodeArtsError:  # best effort: the time alone
        steps = None
    return BuildFacts(ours, daily, None, None, progress_line(max(0.0, elapsed), steps),
                      started_by)
