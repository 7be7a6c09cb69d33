"""``changes`` subscriptions (issue 28): what the end of a followed build means on its
branch. The previous **finished** build of the same job on the same branch decides (a
failure after a success: the branch broke; a success after a failure: it is fixed).

Results come from the job's history (the read that found the build ended, shared with
its other builds: no extra call); branches from the bot's own rows (each followed build's
record, read once when it was found; the ``codeBranch`` parameter of builds started from
Slack). The answer is settled once per build row, before anything is posted
(``settle_flip``), so a retry after a crash or on another replica posts the same; the
row is per channel, so each flip is said once per channel.
"""

from __future__ import annotations

from collections.abc import Callable

from bot.following import Following, history_state
from bot.lifecycle import (
    Build,
    Flip,
    PriorBuild,
    changes_result,
    decide_flip,
    result_of,
)
from bot.store import Store

MAX_WAIT = 600.0  # seconds a flip waits at most for an older build's to be said first


class Changes:
    """Decides (once) whether a ``changes`` build broke or fixed its branch."""

    def __init__(self, *, store: Store, following: Following,
                 clock: Callable[[], float]) -> None:
        self.store = store
        self.following = following
        self.clock = clock

    def waits(self, build: Build) -> bool:
        """Must this build's flip wait? Yes while an older ``changes`` build of the job in
        the same channel has ended (by the history) and is not reported yet: flips are
        said in the order of the builds (a bot that was down says "broke" before
        "fixed"). An older build still running never holds it up."""
        if build.finished_at is not None and self.clock() - build.finished_at > MAX_WAIT:
            return False  # an older one is stuck (Slack refusing it): not held any longer
        older = self.store.open_changes_below(job_id=build.job_id, channel_id=build.channel_id,
                                              build_no=build.build_no)
        if not older:
            return False
        history = self.following.job_history(build.job_id, fresh_after=0.0)
        for no in older:
            state = history_state(history.by_no.get(str(int(no))))
            if state is None or state.finished:  # ended, or the history cannot say
                return True
        return False

    def flip(self, build: Build) -> Flip:
        """The settled flip of this build (decided now if it was not yet). A history that
        cannot be read raises CodeArtsError: the report is tried again later."""
        if build.flip is not None:
            return Flip.from_json(build.flip)
        decided = self._decide(build)
        return Flip.from_json(self.store.settle_flip(id=build.id, flip=decided.to_json()))

    def _decide(self, build: Build) -> Flip:
        good = changes_result(build.result or "unknown")
        if good is None or not build.branch or not build.build_no.isdigit():
            return Flip()
        number = int(build.build_no)
        history = self.following.job_history(build.job_id, fresh_after=0.0,
                                             need=build.build_no)
        earlier = {no: line for no, line in history.by_no.items()
                   if no.isdigit() and int(no) < number}
        known = self.store.known_branches(job_id=build.job_id, build_nos=list(earlier))
        prior: list[PriorBuild] = []
        for no, line in earlier.items():
            state = history_state(line)
            branch, daily = known.get(no, (None, ""))
            if state is None or not state.finished or branch != build.branch:
                continue
            ok = changes_result(result_of(state))
            if ok is None:
                continue
            prior.append(PriorBuild(no=int(no), good=ok, name=daily or f"#{no}",
                                    ended_at=line.end_time.timestamp() if line.end_time
                                    else None))
        this = history.by_no.get(str(number))
        ended = this.end_time.timestamp() if this is not None and this.end_time else (
            build.finished_at or self.clock())
        return decide_flip(branch=build.branch, good=good, ended_at=ended, prior=prior)
