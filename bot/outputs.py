"""What a successful build produced, for its result reply: its packages and images, read
from CodeArts (``GET /v3/jobs/{job_id}/{build_no}/output-info``) just before the reply is
posted.

Best effort and bounded: the read takes at most ``OUTPUTS_BUDGET`` seconds, retries
included (the client's deadline). When it fails or CodeArts answers something unreadable
the reply goes out on time without the list, and one log line says why. Nothing is kept:
a report retried after a crash reads the outputs again (the report itself is posted once,
by the report's own intent and lease, see ``bot/reports.py``).
"""

from __future__ import annotations

import logging

from bot.codearts.answers import Outputs
from bot.codearts.client import OUTPUTS_BUDGET, CodeArtsClient
from bot.codearts.errors import CodeArtsError, describe
from bot.lifecycle import Build

log = logging.getLogger(__name__)


class BuildOutputs:
    """Reads what a build produced, for the success reply."""

    def __init__(self, *, api: CodeArtsClient, budget: float = OUTPUTS_BUDGET) -> None:
        self.api = api
        self.budget = budget

    def read(self, build: Build, result: str) -> Outputs | None:
        """The build's outputs when it succeeded; None when it did not, or when they
        could not be read (logged, in one line, with why)."""
        if result != "success" or self.budget <= 0:
            return None
        try:
            return self.api.build_outputs(build.job_id, build.build_no, budget=self.budget)
        except CodeArtsError as exc:
            told = describe(exc)
            rid = f" (request ID {told.request_id})" if told.request_id else ""
            log.warning("outputs of build=%s job=%s no=%s not read, reply sent without them: "
                        "%s%s", build.id, build.job_name, build.build_no, told.brief, rid)
        except Exception as exc:  # never holds the reply back
            log.warning("outputs of build=%s job=%s no=%s not read, reply sent without them: "
                        "an error inside buildbot (%s)", build.id, build.job_name,
                        build.build_no, type(exc).__name__)
        return None
