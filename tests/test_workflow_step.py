"""The Workflow Builder step "Run a CodeArts build" (issue 29): Slack's
``function_executed`` event, signed as Slack sends it, into the real endpoint; the build
decided as /build typed by the person who ran the workflow, announced and followed as
usual, and the step completed once (``functions.completeSuccess`` / ``completeError``) on
the Slack stand-in, with a real database."""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import messages as msg
from bot.config import load_config
from bot.flow_workflow import CALLBACK_ID
from bot.lifecycle import RequestState
from bot.runtime import Runtime
from bot.settings import load_settings
from bot.store import FunctionRun
from bot.workflow import completion_for, request_id_for
from tests.fakes.codearts import FakeCodeArts
from tests.fakes.slack import FakeSlack
from tests.harness import (
    BACKEND_ID,
    BOT_TOKEN,
    CONFIG,
    DOCS_ID,
    OTHER_ID,
    SECRET,
    WIDE_LIMITS,
    Bot,
    Clock,
    auth_settings,
    running_bot,
)
from tests.slack_requests import SlackSender

TEMPLATE = "https://console.example.com/cloudbuild/job/{job_id}/build/{build_no}"
POLL = 15.0


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path, poll=POLL, build_link_template=TEMPLATE) as b:
        b.codearts.add_job(BACKEND_ID, duration=0)
        b.codearts.add_job(DOCS_ID, duration=0, outcome="FAILED")
        yield b


def inputs(job: str, params: str = "", *, user: str = "UALICE",
           channel: str = "CBUILDS") -> dict[str, Any]:
    return {"job": job, "parameters": params, "channel": channel,
            "interactivity": {"interactor": {"id": user, "secret": "s3cr3t"},
                              "interactivity_pointer": "1.2.abc"}}


def run_step(bot: Bot, step_inputs: dict[str, Any], *, times: int = 1) -> dict[str, Any]:
    """A workflow reaches the step: Slack sends the event (``times`` over, as a retry
    would); returns the event."""
    envelope = bot.slack.function_executed(step_inputs, callback_id=CALLBACK_ID)
    for _ in range(times):
        resp = bot.sender.event(envelope)
        assert resp.status_code == 200, resp.text
        bot.wait_idle()
    return envelope["event"]


def follow(bot: Bot) -> None:
    """A poll interval on, the watcher reads the build's end and reports it; the next
    round completes the step."""
    bot.clock.advance(POLL + 1)
    bot.runtime.watcher.run_once()
    bot.runtime.watcher.run_once()


def completion(bot: Bot, event: dict[str, Any]) -> Any:
    (done,) = bot.slack.completions(event["function_execution_id"])
    return done


def outputs_of(call: Any) -> dict[str, Any]:
    raw = call.params["outputs"]
    return json.loads(raw) if isinstance(raw, str) else raw


def run_calls(bot: Bot) -> list[Any]:
    return bot.codearts.requests_to("/v3/jobs/build", "POST")


# --- a build started by a workflow ---------------------------------------------------

def test_the_step_starts_announces_follows_and_completes_with_the_outputs(bot: Bot) -> None:
    event = run_step(bot, inputs("backend", "codeBranch=develop\ntarget=prod"))
    (run,) = run_calls(bot)
    body = run.body
    assert {"name": "codeBranch", "value": "develop"} in body["parameter"]
    assert {"name": "target", "value": "prod"} in body["parameter"]
    (announced,) = bot.slack.calls("chat.postMessage")
    assert announced["channel"] == "CBUILDS" and "<@UALICE> started *backend*" in \
        announced["text"]
    assert bot.slack.completions() == []  # not before the build ends
    follow(bot)
    done = completion(bot, event)
    assert done.method == "functions.completeSuccess"
    build = bot.store.get_build(request_id_for(event["function_execution_id"]))
    assert outputs_of(done) == {
        "build_number": build.build_no, "daily_build_number": build.daily_build_number,
        "result": "success",
        "link": TEMPLATE.format(job_id=BACKEND_ID, build_no=build.build_no)}
    # completed with the token Slack sent with the event, while it lives
    assert done.headers["authorization"] == f"Bearer {event['bot_access_token']}"
    follow(bot)
    assert len(bot.slack.completions()) == 1  # once


def test_a_failed_build_fails_the_step_with_its_result(bot: Bot) -> None:
    event = run_step(bot, inputs("docs"))
    follow(bot)
    done = completion(bot, event)
    assert done.method == "functions.completeError"
    assert "docs build" in done.params["error"] and "failed" in done.params["error"]


def test_an_event_slack_sends_again_starts_nothing_twice(bot: Bot) -> None:
    event = run_step(bot, inputs("backend"), times=3)
    assert len(run_calls(bot)) == 1
    assert len(bot.slack.calls("chat.postMessage")) == 1
    follow(bot)
    assert completion(bot, event).method == "functions.completeSuccess"


# --- refused: decided as /build in that channel --------------------------------------

@pytest.mark.parametrize(("step_inputs", "words"), [
    (inputs("backend", user="UBOB"), "You may not run"),  # not in the job's users
    (inputs("backend", channel="CRANDOM"), "cannot be run in this channel"),
    (inputs("backend", "target=qa"), "target"),  # not one of its choices
    (inputs("nosuchjob"), "nosuchjob"),
    (inputs("status"), "subcommand"),
    (inputs("backend docs"), "one job name"),
    (inputs("backend", user=""), "who ran the workflow"),
])
def test_a_refused_step_fails_with_the_reason_and_starts_nothing(
        bot: Bot, step_inputs: dict[str, Any], words: str) -> None:
    event = run_step(bot, step_inputs)
    bot.runtime.watcher.run_once()
    done = completion(bot, event)
    assert done.method == "functions.completeError"
    assert done.params["error"].startswith("Nothing was started.")
    assert words in done.params["error"], done.params["error"]
    assert run_calls(bot) == [] and bot.slack.calls("chat.postMessage") == []


def test_the_step_never_asks_run_or_cancel(bot: Bot) -> None:
    """backend asks Run/Cancel when typed; a workflow has nobody to click: it starts."""
    run_step(bot, inputs("backend"))
    assert len(run_calls(bot)) == 1
    assert bot.slack.responses() == []


# --- exactly once across restarts ----------------------------------------------------

def test_a_completion_whose_answer_was_lost_is_made_again_and_taken_as_done(
        db_url: str, tmp_path: Path) -> None:
    """Slack took the completion but its answer never came: the next round makes the
    call again, Slack says the step is complete already, and that is the end of it."""
    with running_bot(db_url, tmp_path, poll=POLL, slack_timeout=1) as bot:
        bot.codearts.add_job(BACKEND_ID, duration=0)
        lost_answer(bot)


def lost_answer(bot: Bot) -> None:
    event = run_step(bot, inputs("backend"))
    bot.slack.accept_slowly("functions.completeSuccess", 2.0)  # past the client's timeout
    follow(bot)
    assert len(bot.slack.completions()) == 1  # taken by Slack, answer lost
    run = bot.store.get_function_run(event["function_execution_id"])
    assert run.state == "open"  # let go: tried again next round
    bot.runtime.watcher.run_once()
    run = bot.store.get_function_run(event["function_execution_id"])
    assert run.state == "done" and run.token is None
    assert len(bot.slack.completions()) == 1
    refused = [c for c in bot.slack.all_calls() if c.method.startswith("functions.")
               and c.error == "execution_not_in_running_state"]
    assert len(refused) == 1


def test_a_process_that_died_between_intent_and_call_is_taken_over_once(bot: Bot) -> None:
    """The build ended and a process claimed the completion, then died before calling
    Slack: after the grace the claim is taken over and the step completed once."""
    event = run_step(bot, inputs("backend"))
    bot.clock.advance(POLL + 1)
    bot.runtime.watcher.run_once()  # the result is reported...
    execution = event["function_execution_id"]
    run = bot.store.get_function_run(execution)
    assert bot.store.claim_completion(run, now=bot.clock(), grace=120.0,
                                      outcome={"outputs": {"build_number": "1"}})
    # ... and the process that claimed it is gone: nobody completes it within the grace
    bot.runtime.watcher.run_once()
    assert bot.slack.completions() == []
    bot.clock.advance(bot.runtime.engine.intent_grace + 1)
    bot.runtime.watcher.run_once()
    done = completion(bot, event)
    assert outputs_of(done) == {"build_number": "1"}  # the outcome the intent recorded
    bot.runtime.watcher.run_once()
    assert len(bot.slack.completions()) == 1
    assert bot.store.get_function_run(execution).state == "done"


def test_a_run_recorded_but_never_started_fails_after_the_grace(bot: Bot) -> None:
    """The process died after recording the run and before making its request: the step
    says so (once) instead of hanging."""
    execution = "Fx9999999999"
    bot.slack.executions[execution] = "running"
    assert bot.runtime.engine.workflow.record(
        execution_id=execution, user_id="UALICE", channel_id="CBUILDS", token=None,
        error=None) == request_id_for(execution)
    bot.runtime.watcher.run_once()
    assert bot.slack.completions() == []  # within the grace: it may still be starting
    bot.clock.advance(bot.runtime.engine.intent_grace + 1)
    bot.runtime.watcher.run_once()
    (done,) = bot.slack.completions(execution)
    assert done.method == "functions.completeError" and "run the workflow again" in \
        done.params["error"]
    assert "authorization" in done.headers  # no event token: the bot's own


# --- the stand-in refuses what Slack refuses -----------------------------------------

def test_the_stand_in_refuses_unknown_and_second_completions(bot: Bot) -> None:
    client = WebClient(token="xoxb-test", base_url=bot.slack.api_url)
    with pytest.raises(SlackApiError) as unknown:
        client.functions_completeSuccess(function_execution_id="Fx0", outputs={"a": "b"})
    assert unknown.value.response["error"] == "function_execution_not_found"
    event = bot.slack.function_executed(inputs("backend"), callback_id=CALLBACK_ID)["event"]
    execution = event["function_execution_id"]
    client.functions_completeError(function_execution_id=execution, error="no")
    for again in (lambda: client.functions_completeError(function_execution_id=execution,
                                                         error="no"),
                  lambda: client.functions_completeSuccess(function_execution_id=execution,
                                                           outputs={"a": "b"})):
        with pytest.raises(SlackApiError) as twice:
            again()
        assert twice.value.response["error"] == "execution_not_in_running_state"
    assert len(bot.slack.completions(execution)) == 1


@contextmanager
def bot_on(slack: FakeSlack, codearts: FakeCodeArts, clock: Clock, db_url: str,
           tmp_path: Path) -> Iterator[Bot]:
    """One bot process (its Runtime and HTTP endpoint) on shared stand-ins and database:
    a second one after the first is closed is the bot restarted."""
    from bot.runtime import client_from_settings

    cfg = tmp_path / "buildbot.toml"
    cfg.write_text(CONFIG)
    loaded = load_settings(
        slack_bot_token=BOT_TOKEN, slack_signing_secret=SECRET, slack_api_url=slack.api_url,
        codearts_endpoint=codearts.url, database_url=db_url, buildbot_config=cfg,
        build_poll_seconds=POLL, worker_threads=2, slack_rate_limits=WIDE_LIMITS,
        build_link_template=TEMPLATE, **auth_settings("token", codearts))
    runtime = Runtime(loaded, load_config(cfg), api=client_from_settings(loaded, backoff=0.0),
                      clock=clock, watch=False, slack_backoff=0.0, slack_budget_wait=0.5)
    port = runtime.bind_http(host="127.0.0.1", port=0)
    thread = threading.Thread(target=runtime.server.run, daemon=True)
    thread.start()
    sender = SlackSender(f"http://127.0.0.1:{port}/slack/events", SECRET)
    try:
        yield Bot(runtime, slack, codearts, sender, clock, f"http://127.0.0.1:{port}")
    finally:
        sender.close()
        with suppress(OSError):
            runtime.close()


def test_a_restart_between_the_builds_end_and_the_completion_completes_once(
        db_url: str, tmp_path: Path) -> None:
    clock = Clock()
    with FakeSlack() as slack, FakeCodeArts(clock=clock.monotonic) as codearts:
        codearts.add_job(BACKEND_ID, duration=0)
        with bot_on(slack, codearts, clock, db_url, tmp_path) as first:
            event = run_step(first, inputs("backend"))
            clock.advance(POLL + 1)
            first.runtime.watcher.run_once()  # the build's end read and reported...
            build = first.store.get_build(request_id_for(event["function_execution_id"]))
            assert build.result == "success"
            assert slack.completions() == []  # ... and the process stops before completing
        with bot_on(slack, codearts, clock, db_url, tmp_path) as second:
            second.runtime.watcher.run_once()
            second.runtime.watcher.run_once()
            done = completion(second, event)
            assert done.method == "functions.completeSuccess"
            assert outputs_of(done)["build_number"] == build.build_no
        assert len(slack.completions()) == 1
        assert len(slack.calls("chat.postMessage")) == 2  # announced, result: once each


def test_the_steps_token_is_never_logged_and_is_erased_once_complete(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    event = run_step(bot, inputs("backend"))
    follow(bot)
    completion(bot, event)
    assert event["bot_access_token"] not in caplog.text
    run = bot.store.get_function_run(event["function_execution_id"])
    assert run.state == "done" and run.token is None
    assert event["bot_access_token"] not in repr(run)


# --- a job that needs approval: the step waits for it ---------------------------------

GUARDED = CONFIG + f"""
[jobs.deploy]
id = "{OTHER_ID}"
users = ["UALICE"]
channels = ["CBUILDS"]
approvers = ["UCAROL"]
approval_channel = "CAPPROVALS"
"""


@pytest.mark.parametrize(("decision", "completed"), [
    (msg.APPROVE, "functions.completeSuccess"), (msg.REJECT, "functions.completeError")])
def test_a_step_for_a_job_with_approvers_waits_for_the_decision(
        db_url: str, tmp_path: Path, decision: str, completed: str) -> None:
    with running_bot(db_url, tmp_path, poll=POLL, config=GUARDED) as bot:
        bot.codearts.add_job(OTHER_ID, duration=0)
        event = run_step(bot, inputs("deploy"))
        rid = request_id_for(event["function_execution_id"])
        assert bot.store.get_request(rid).state == "awaiting" and run_calls(bot) == []
        (asked,) = [p for p in bot.slack.calls("chat.postMessage")
                    if p["channel"] == "CAPPROVALS"]
        assert "<@UALICE>" in asked["text"]  # the approvers are asked, for the interactor
        follow(bot)
        assert bot.slack.completions() == []  # waiting for the approver, not failed
        assert bot.click(decision, rid, user="UCAROL", channel="CAPPROVALS",
                         message_ts="1.1").status_code == 200
        bot.wait_idle()
        follow(bot)
        done = completion(bot, event)
        assert done.method == completed
        if decision == msg.REJECT:
            assert "rejected by an approver" in done.params["error"]
            assert run_calls(bot) == []
        else:
            assert len(run_calls(bot)) == 1 and outputs_of(done)["result"] == "success"


# --- the decision, alone ---------------------------------------------------------------

def _run(**kw: Any) -> FunctionRun:
    values: dict[str, Any] = {
        "id": "Fx1", "created_at": 1000.0, "user_id": "UALICE", "channel_id": "CBUILDS",
        "request_id": "r" * 32, "state": "open", "error": None, "token": None,
        "claimed_at": None, "outcome": None}
    return FunctionRun(**{**values, **kw})


def test_completion_for_each_state_of_the_request_and_its_build(bot: Bot) -> None:
    """Pure: the run, its request and its build in; the completion (or wait) out."""
    event = run_step(bot, inputs("backend"))
    rid = request_id_for(event["function_execution_id"])
    request, build = bot.store.get_request(rid), bot.store.get_build(rid)
    assert request is not None and build is not None and build.result is None

    def link(b: Any) -> str:
        return "L"

    def decide(run: FunctionRun, req: Any, b: Any, now: float = 1001.0) -> Any:
        return completion_for(run, req, b, now=now, grace=120.0, link=link)

    assert decide(_run(error="Nothing was started. • no"), None, None) == {
        "error": "Nothing was started. • no"}
    assert decide(_run(), request, build) is None  # running: wait
    assert decide(_run(), request, replace(build, result="success")) == {"outputs": {
        "build_number": build.build_no, "daily_build_number": build.daily_build_number,
        "result": "success", "link": "L"}}
    failed = decide(_run(), request, replace(build, result="aborted", duration_ms=61_000))
    assert "was stopped in 1 min 1 s" in failed["error"]
    for state, words in ((RequestState.EXPIRED, "expired"),
                         (RequestState.REJECTED, "rejected"),
                         (RequestState.FAILED, "refused by CodeArts")):
        assert words in decide(_run(), replace(request, state=state), None)["error"]
    for state in (RequestState.PENDING, RequestState.AWAITING, RequestState.QUEUED,
                  RequestState.SENDING, RequestState.UNKNOWN):
        assert decide(_run(), replace(request, state=state), None) is None
    assert decide(_run(), None, None, now=1100.0) is None  # being recorded
    assert "run the workflow again" in decide(_run(), None, None, now=1121.0)["error"]


# --- python -m bot killed with SIGKILL mid-completion, then restarted -----------------

def test_killed_while_slack_holds_the_completions_answer_then_restarted(
        stand_ins: tuple[FakeSlack, FakeCodeArts], tmp_path: Path, db_url: str) -> None:
    """The process completed the step (Slack took it) and was killed before the answer
    came: the restarted bot takes the claim over, calls again, hears that the step is
    complete already, and stops. One completion; one build; one result."""
    from tests.test_crash_process import bot_at, crash_env, replies, settle

    slack, codearts = stand_ins
    env, url = crash_env(stand_ins, tmp_path, db_url)
    with bot_at(env, url, stop=signal.SIGKILL):
        slack.accept_slowly("functions.completeSuccess", 60)  # taken; the answer never comes
        envelope = slack.function_executed(inputs("backend"), callback_id=CALLBACK_ID)
        sender = SlackSender(url + "/slack/events", SECRET)
        assert sender.event(envelope).status_code == 200
        slack.wait_for(lambda: slack.completions(), 30)
    execution = envelope["event"]["function_execution_id"]
    with bot_at(env, url):
        slack.wait_for(lambda: [c for c in slack.all_calls()
                                if c.error == "execution_not_in_running_state"], 30)
        settle(slack, url)
    (done,) = slack.completions()
    assert done.params["function_execution_id"] == execution
    assert done.method == "functions.completeSuccess"
    assert len(codearts.requests_to("/v3/jobs/build")) == 1
    assert len(replies(slack)) == 1 and "succeeded" in replies(slack)[0]["text"]
