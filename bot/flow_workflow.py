"""The Workflow Builder step "Run a CodeArts build" on the Slack side (``app.function``):
Slack's ``function_executed`` event is read, decided exactly as ``/build`` typed by the
person who ran the workflow in the step's channel (the same parse and checks), and handed
to the engine, which records the run once and makes it an ordinary request
(bot.workflow completes the step when the build ends).

Who runs it is the ``interactivity`` input's interactor: Slack fills it with the person
who started the workflow, and a workflow's author cannot set it to someone else (a plain
user input could name anyone, an admin included). A step never asks Run / Cancel (nobody
is there to click): starting the workflow is the confirmation. A job that needs
approval still waits for it, and a job at its ``max_running`` still queues.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from bot import messages as msg
from bot.flow_types import FlowRoom, Outcome, Who

log = logging.getLogger(__name__)

CALLBACK_ID = "run_codearts_build"  # the function's callback_id in manifest.yml
MAX_INPUT = 4000  # characters of the parameters input read at most


class WorkflowFlow(FlowRoom):
    """``function_executed`` for our step: decide, then record and start through the engine."""

    def on_function(self, event: dict[str, Any], team_id: str | None) -> None:
        """After the ack: one run of the step."""
        execution_id = _str(event.get("function_execution_id"))
        if not execution_id:
            return
        inputs = _dict(event.get("inputs"))
        user = _str(_dict(_dict(inputs.get("interactivity")).get("interactor")).get("id"))
        channel = _str(inputs.get("channel"))
        job = _str(inputs.get("job")).strip()
        params = " ".join(_str(inputs.get("parameters"))[:MAX_INPUT].split())
        outcome, problems = self.decide(job, params, user, channel, team_id)
        error = msg.step_refused(problems) if problems else None
        request_id = self.engine.workflow.record(
            execution_id=execution_id, user_id=user or "-", channel_id=channel or "-",
            token=_str(event.get("bot_access_token")) or None, error=error)
        if request_id is None:  # Slack sent the event again: done already
            return
        approved = outcome.approved if outcome is not None else None
        if approved is None:
            self.engine.not_started(decision=outcome.decision if outcome else "invalid",
                                    user_id=user, channel_id=channel,
                                    job=job or None, detail=error)
            return
        log.info("workflow step %s user=%s channel=%s job=%s", execution_id, user, channel,
                 approved.job_name)
        self.engine.new_request(user_id=user, team_id=team_id, channel_id=channel,
                                text=f"{job} {params}".strip(), response_url=None,
                                approved=replace(approved, confirm=False),
                                request_id=request_id)

    def decide(self, job: str, params: str, user: str, channel: str,
               team_id: str | None) -> tuple[Outcome | None, list[str]]:
        """The checks of ``/build <job> <params>`` typed by ``user`` in ``channel``: the
        outcome, and the problems when it may not start."""
        if not user:
            return None, ["Slack did not say who ran the workflow: set the step's "
                          "\"Who runs it\" input to the person who used the workflow."]
        if not channel:
            return None, ["Choose the channel the build is announced in (the step's "
                          "\"Channel\" input)."]
        if not job or len(job.split()) != 1:
            return None, ["The step's \"Job\" input must be one job name from the jobs file "
                          "(as typed after /build)."]
        who = Who(user, channel, team_id, None, f"{job} {params}".strip())
        outcome = self.flow.evaluate(who, self.groups)
        if outcome.approved is not None:
            return outcome, []
        if outcome.asked is not None or outcome.decision == "help":
            return outcome, [f"\"{job}\" is a /build subcommand, not a job: the step's "
                             "\"Job\" input must be a job name."]
        if outcome.fields:
            return outcome, [p for _f, p in outcome.fields]
        return outcome, [outcome.detail or "This build may not be started here."]


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
