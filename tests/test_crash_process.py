"""``python -m bot`` killed with SIGKILL while Slack holds the answer to a post it has
already made: after a restart the build is announced once and its result posted once."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import messages as msg
from tests.fakes.codearts import FakeCodeArts
from tests.fakes.slack import FakeSlack
from tests.harness import BACKEND_ID, DOCS_ID, SECRET, run_value
from tests.slack_requests import SlackSender
from tests.test_process import bot_process, env_for, free_port, wait_healthy


@pytest.fixture
def stand_ins() -> Iterator[tuple[FakeSlack, FakeCodeArts]]:
    with FakeSlack() as slack, FakeCodeArts() as codearts:
        codearts.add_job(BACKEND_ID, duration=1.0)
        codearts.add_job(DOCS_ID)
        slack.usergroups["SDEVS"] = []
        yield slack, codearts


def channel_posts(slack: FakeSlack) -> list[dict[str, Any]]:
    return [c for c in slack.calls("chat.postMessage")
            if c.get("channel") == "CBUILDS" and not c.get("thread_ts")]


def replies(slack: FakeSlack) -> list[dict[str, Any]]:
    return [c for c in slack.calls("chat.postMessage") if c.get("thread_ts")]


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def run_backend(slack: FakeSlack, url: str) -> None:
    sender = SlackSender(url + "/slack/events", SECRET)
    hook = slack.response_url()
    assert sender.command("backend", user="UALICE", channel="CBUILDS",
                          response_url=hook).status_code == 200
    (question,) = slack.wait_for(lambda: slack.responses(hook))
    sender.click(msg.RUN, run_value(question), user="UALICE", channel="CBUILDS",
                 response_url=hook)


def settle(slack: FakeSlack, seconds: float = 1.5) -> None:
    """Let a few more polls and housekeeping rounds happen: nothing more may arrive."""
    time.sleep(seconds)


@pytest.mark.parametrize("boundary", ["channel post", "thread reply"])
def test_killed_while_slack_holds_the_answer_to_a_post_then_restarted(
        stand_ins: tuple[FakeSlack, FakeCodeArts], tmp_path: Path, db_url: str,
        boundary: str) -> None:
    slack, codearts = stand_ins
    port = free_port()
    env = {**env_for(slack, codearts, tmp_path, db_url, port), "INTENT_GRACE_SECONDS": "1"}
    url = f"http://127.0.0.1:{port}"
    proc = bot_process(env)
    try:
        wait_healthy(url, proc)
        if boundary == "channel post":
            slack.accept_slowly("chat.postMessage", 60)  # posted; the answer never comes
            run_backend(slack, url)
            slack.wait_for(lambda: channel_posts(slack), 10)
        else:
            run_backend(slack, url)
            slack.wait_for(lambda: channel_posts(slack), 10)
            slack.accept_slowly("chat.postMessage", 60)
            slack.wait_for(lambda: replies(slack), 15)
    finally:
        kill(proc)

    again = bot_process(env)
    try:
        wait_healthy(url, again)
        slack.wait_for(lambda: replies(slack), 20)
        slack.wait_for(lambda: slack.calls("chat.update"), 20)
        settle(slack)
        (post,) = channel_posts(slack)
        (reply,) = replies(slack)
        assert "succeeded" in reply["text"]
        assert reply["metadata"]["event_payload"]["build_id"] == \
            post["metadata"]["event_payload"]["build_id"]
        assert len(codearts.requests_to("/v3/jobs/build")) == 1
        dms = [c for c in slack.calls("chat.postMessage") if c.get("channel") == "UALICE"]
        assert dms == []  # Slack's history settled it: nobody was told twice
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(15)


def test_killed_while_the_run_call_is_in_flight_then_restarted(
        stand_ins: tuple[FakeSlack, FakeCodeArts], tmp_path: Path, db_url: str) -> None:
    slack, codearts = stand_ins
    port = free_port()
    env = {**env_for(slack, codearts, tmp_path, db_url, port), "INTENT_GRACE_SECONDS": "1"}
    url = f"http://127.0.0.1:{port}"
    proc = bot_process(env)
    try:
        wait_healthy(url, proc)
        codearts.hang(60, path_prefix="/v3/jobs/build")  # CodeArts starts it; no answer
        run_backend(slack, url)
        slack.wait_for(lambda: codearts.builds(BACKEND_ID), 10)
    finally:
        kill(proc)

    again = bot_process(env)
    try:
        wait_healthy(url, again)
        slack.wait_for(lambda: replies(slack), 20)
        settle(slack)
        (post,) = channel_posts(slack)
        (reply,) = replies(slack)
        assert "succeeded" in reply["text"]
        assert len(codearts.requests_to("/v3/jobs/build")) == 1  # never sent again
        told = [r["text"] for r in slack.responses() if "CodeArts did start it" in r["text"]]
        assert len(told) == 1
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(15)


def test_a_replica_stopped_past_its_lease_while_posting_does_not_post_twice(
        stand_ins: tuple[FakeSlack, FakeCodeArts], tmp_path: Path, db_url: str) -> None:
    slack, codearts = stand_ins
    port_a, port_b = free_port(), free_port()
    env_a = {**env_for(slack, codearts, tmp_path, db_url, port_a), "INTENT_GRACE_SECONDS": "1"}
    env_b = {**env_a, "PORT": str(port_b)}
    a = bot_process(env_a)
    b = None
    try:
        wait_healthy(f"http://127.0.0.1:{port_a}", a)
        run_backend(slack, f"http://127.0.0.1:{port_a}")
        slack.wait_for(lambda: channel_posts(slack), 10)
        slack.accept_slowly("chat.postMessage", 6)  # A's thread reply is made, answered late
        slack.wait_for(lambda: replies(slack), 15)
        a.send_signal(signal.SIGSTOP)  # frozen mid-post, past its lease
        b = bot_process(env_b)
        wait_healthy(f"http://127.0.0.1:{port_b}", b)
        slack.wait_for(lambda: slack.calls("chat.update"), 20)  # B took the report over
        a.send_signal(signal.SIGCONT)  # A wakes and carries on with its stale lease
        settle(slack, 8.0)
        (reply,) = replies(slack)
        assert "succeeded" in reply["text"]
        assert len(slack.calls("chat.update")) == 1
        assert [c for c in slack.calls("chat.postMessage") if c.get("channel") == "UALICE"] == []
    finally:
        a.send_signal(signal.SIGCONT)
        kill(a)
        if b is not None:
            kill(b)


def test_killed_while_the_parent_update_is_in_flight_then_restarted(
        stand_ins: tuple[FakeSlack, FakeCodeArts], tmp_path: Path, db_url: str) -> None:
    slack, codearts = stand_ins
    port = free_port()
    env = {**env_for(slack, codearts, tmp_path, db_url, port), "INTENT_GRACE_SECONDS": "1"}
    url = f"http://127.0.0.1:{port}"
    proc = bot_process(env)
    try:
        wait_healthy(url, proc)
        slack.accept_slowly("chat.update", 60)  # the parent is updated; the answer never comes
        run_backend(slack, url)
        slack.wait_for(lambda: slack.calls("chat.update"), 15)
    finally:
        kill(proc)

    again = bot_process(env)
    try:
        wait_healthy(url, again)
        slack.wait_for(lambda: len(slack.calls("chat.update")) >= 2, 20)  # updated again
        settle(slack)
        (reply,) = replies(slack)  # the result itself is not posted twice
        assert "succeeded" in reply["text"]
        assert len(slack.calls("chat.update")) == 2
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(15)
