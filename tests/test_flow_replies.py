"""What the listeners answer for ``/build help N`` and a Stop CodeArts refused: Flow and
the engine with plain stand-ins for their collaborators (no Slack, no CodeArts, no
database)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from bot.codearts.errors import (
    ApiError,
    BadResponseError,
    CodeArtsError,
    NotSentError,
    OutcomeUnknownError,
)
from bot.config import parse_config
from bot.engine import Engine
from bot.flow import Click, Flow, Who
from bot.policy import StaticUserGroups

JOB_ID = "f9d6c8466d614a9788e9a0acf6c15f46"


def config_text(jobs: int) -> str:
    return "\n".join(f'[jobs.job{i:03d}]\nid = "{JOB_ID}"\ndescription = "Job {i}"\n'
                     'users = ["UALICE"]\n' for i in range(jobs))


class Api:
    def __init__(self, error: CodeArtsError) -> None:
        self.error = error

    def stop_build(self, job_id: str, build_no: str) -> None:
        raise self.error


def make_flow(jobs: int, api: Any = None) -> tuple[Flow, list[tuple[str | None, dict]]]:
    said: list[tuple[str | None, dict]] = []
    build = SimpleNamespace(id="b1", channel_id="CBUILDS", job_id=JOB_ID, build_no="42",
                            job_name="job000", daily_build_number="20261123.7", origin=None)
    store = SimpleNamespace(get_build=lambda _id: build,
                            get_request=lambda _id: SimpleNamespace(command="job000"))
    config = parse_config(config_text(jobs), source="test.toml")
    notifier = SimpleNamespace(respond=lambda url, m: said.append((url, m)), metrics=None)
    engine = Engine(config=config, store=store, api=api, notifier=notifier)  # type: ignore[arg-type]
    engine.is_followed = lambda _build: True  # type: ignore[method-assign]
    flow = Flow(config=config, engine=engine, slack=None, groups=None,  # type: ignore[arg-type]
                worker=None)  # type: ignore[arg-type]
    flow.groups = StaticUserGroups({})  # type: ignore[assignment]
    return flow, said


def help_text(flow: Flow, text: str) -> str:
    outcome = flow.evaluate(Who("UALICE", "CBUILDS", None, None, text), StaticUserGroups({}))
    assert outcome.decision == "help" and outcome.reply is not None
    return "\n".join(b["text"]["text"] for b in outcome.reply["blocks"] if b["type"] == "section")


def test_help_page_number_reaches_the_listing() -> None:
    flow, _ = make_flow(100)
    first, second, third = (help_text(flow, t) for t in ("help", "help 2", "list 3"))
    assert "`job000`" in first and first.endswith("60 more jobs: type `/build help 2`")
    assert "`job040`" in second and "`job000`" not in second
    assert second.endswith("20 more jobs: type `/build help 3`")
    assert "`job099`" in third and "page 3 of 3" in third and "more job" not in third


@pytest.mark.parametrize(("error", "shown"), [
    (ApiError(400, "CB.<!channel>", "Build <@U999> has ended.", "req-1"),
     "`CB.&lt;!channel&gt;` Build &lt;@U999&gt; has ended.\nHTTP 400, request ID `req-1`"),
    (NotSentError("POST", "/v3/jobs/x/42/stop", 4, "connection refused"), "connection refused."),
    (OutcomeUnknownError("POST", "/v3/jobs/x/42/stop", "read timeout"), "read timeout."),
    (BadResponseError(400, "req-2", "<html>&"), "&lt;html&gt;&amp;"),
])
def test_stop_refused_by_codearts_is_escaped_without_the_run_hint(
        error: CodeArtsError, shown: str) -> None:
    flow, said = make_flow(1, Api(error))
    flow.status.stop_clicked(Click("b1", "UALICE", None, "https://hooks.slack/r"))
    ((url, reply),) = said
    text = reply["text"]
    assert url == "https://hooks.slack/r" and reply["replace_original"] is False
    assert shown in text and "job000 20261123.7" in text
    assert "<!channel>" not in text and "<@U999>" not in text and "<html>" not in text
    assert "Check the input" not in text and ".." not in text
    assert "nothing was started" not in text.lower()
