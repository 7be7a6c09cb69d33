"""``python -m bot`` killed with SIGKILL while Slack holds the answer to a post it has
already made: after a restart the build is announced once and its result posted once."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bot import messages as msg
from tests.fakes.codearts import FakeCodeArts
from tests.fakes.slack import FakeSlack
from tests.harness import BACKEND_ID, SECRET, run_value
from tests.slack_requests import SlackSender
from tests.test_process import bot_process, env_for, free_port, metric, wait_healthy, watcher_passes


def crash_env(stand_ins: tuple[FakeSlack, FakeCodeArts], tmp_path: Path,
              db_url: str) -> tuple[dict[str, str], str]:
    """The environment of a bot whose open intents are settled 1 s after it dies."""
    slack, codearts = stand_ins
    port = free_port()
    env = {**env_for(slack, codearts, tmp_path, db_url, port), "INTENT_GRACE_SECONDS": "1"}
    return env, f"http://127.0.0.1:{port}"


@contextmanager
def bot_at(env: dict[str, str], url: str, *,
           stop: int = signal.SIGTERM) -> Iterator[subprocess.Popen[str]]:
    """``python -m bot`` serving at ``url`` until the block ends, then sent ``stop``."""
    proc = bot_process(env)
    try:
        wait_healthy(url, proc)
        yield proc
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(stop)
        proc.wait(15)


def channel_posts(slack: FakeSlack) -> list[dict[str, Any]]:
    return [c for c in slack.calls("chat.postMessage")
            if c.get("channel") == "CBUILDS" and not c.get("thread_ts")]


def replies(slack: FakeSlack) -> list[dict[str, Any]]:
    return [c for c in slack.calls("chat.postMessage") if c.get("thread_ts")]


def done_updates(slack: FakeSlack) -> list[dict[str, Any]]:
    """Updates of the channel message to its result (progress updates come before)."""
    return [c for c in slack.calls("chat.update")
            if any(b.get("block_id") == "buildbot.done" for b in c.get("blocks") or [])]


def run_backend(slack: FakeSlack, url: str) -> None:
    sender = SlackSender(url + "/slack/events", SECRET)
    hook = slack.response_url()
    assert sender.command("backend", user="UALICE", channel="CBUILDS",
                          response_url=hook).status_code == 200
    (question,) = slack.wait_for(lambda: slack.responses(hook))
    sender.click(msg.RUN, run_value(question), user="UALICE", channel="CBUILDS",
                 response_url=hook)


def settle(slack: FakeSlack, *urls: str) -> None:
    """Let a few more polls and housekeeping rounds of the bots at ``urls`` happen: nothing
    more may arrive."""
    watcher_passes(slack, *urls)


@pytest.mark.parametrize("boundary", ["channel post", "thread reply"])
def test_killed_while_slack_holds_the_answer_to_a_post_then_restarted(
        stand_ins: tuple[FakeSlack, FakeCodeArts], tmp_path: Path, db_url: str,
        boundary: str) -> None:
    slack, codearts = stand_ins
    env, url = crash_env(stand_ins, tmp_path, db_url)
    with bot_at(env, url, stop=signal.SIGKILL):
        if boundary == "channel post":
            slack.accept_slowly("chat.postMessage", 60)  # posted; the answer never comes
            run_backend(slack, url)
            slack.wait_for(lambda: channel_posts(slack), 10)
        else:
            run_backend(slack, url)
            slack.wait_for(lambda: channel_posts(slack), 10)
            slack.accept_slowly("chat.postMessage", 60)
            slack.wait_for(lambda: replies(slack), 15)

    with bot_at(env, url):
        slack.wait_for(lambda: replies(slack), 20)
        slack.wait_for(lambda: slack.calls("chat.update"), 20)
        settle(slack, url)
        (post,) = channel_posts(slack)
        (reply,) = replies(slack)
        assert "succeeded" in reply["text"]
        assert reply["metadata"]["event_payload"]["build_id"] == \
            post["metadata"]["event_payload"]["build_id"]
        assert len(codearts.requests_to("/v3/jobs/build")) == 1
        dms = [c for c in slack.calls("chat.postMessage") if c.get("channel") == "UALICE"]
        assert dms == []  # Slack's history settled it: nobody was told twice


def test_killed_while_the_run_call_is_in_flight_then_restarted(
        stand_ins: tuple[FakeSlack, FakeCodeArts], tmp_path: Path, db_url: str) -> None:
    slack, codearts = stand_ins
    env, url = crash_env(stand_ins, tmp_path, db_url)
    with bot_at(env, url, stop=signal.SIGKILL):
        codearts.hang(60, path_prefix="/v3/jobs/build")  # CodeArts starts it; no answer
        run_backend(slack, url)
        slack.wait_for(lambda: codearts.builds(BACKEND_ID), 10)

    with bot_at(env, url):
        slack.wait_for(lambda: replies(slack), 20)
        settle(slack, url)
        assert len(channel_posts(slack)) == 1
        (reply,) = replies(slack)
        assert "succeeded" in reply["text"]
        assert len(codearts.requests_to("/v3/jobs/build")) == 1  # never sent again
        told = [r["text"] for r in slack.responses() if "CodeArts did start it" in r["text"]]
        assert len(told) == 1


def test_a_replica_stopped_past_its_lease_while_posting_does_not_post_twice(
        stand_ins: tuple[FakeSlack, FakeCodeArts], tmp_path: Path, db_url: str) -> None:
    slack, _codearts = stand_ins
    env_a, url_a = crash_env(stand_ins, tmp_path, db_url)
    port_b = free_port()
    env_b, url_b = {**env_a, "PORT": str(port_b)}, f"http://127.0.0.1:{port_b}"
    with bot_at(env_a, url_a, stop=signal.SIGKILL) as a:
        run_backend(slack, url_a)
        slack.wait_for(lambda: channel_posts(slack), 10)
        slack.accept_slowly("chat.postMessage", 6)  # A's thread reply is made, answered late
        slack.wait_for(lambda: replies(slack), 15)
        a.send_signal(signal.SIGSTOP)  # frozen mid-post, past its lease
        with bot_at(env_b, url_b, stop=signal.SIGKILL):
            slack.wait_for(lambda: done_updates(slack), 20)  # B took the report over
            a.send_signal(signal.SIGCONT)  # A wakes and carries on with its stale lease:
            # its thread reply is answered (the stand-in holds it 6 s), then its passes go on
            slack.wait_for(lambda: metric(url_a, "buildbot_slack_call_seconds_count",
                                          method="chat.postMessage", outcome="ok") == 2,
                           15, every=0.1)
            settle(slack, url_a, url_b)
            (reply,) = replies(slack)
            assert "succeeded" in reply["text"]
            assert len(done_updates(slack)) == 1
            assert slack.calls("chat.update")[-1] == done_updates(slack)[0]
            assert [c for c in slack.calls("chat.postMessage")
                    if c.get("channel") == "UALICE"] == []


def test_killed_while_the_parent_update_is_in_flight_then_restarted(
        stand_ins: tuple[FakeSlack, FakeCodeArts], tmp_path: Path, db_url: str) -> None:
    slack, _codearts = stand_ins
    env, url = crash_env(stand_ins, tmp_path, db_url)
    env["PROGRESS_UPDATE_SECONDS"] = "0"  # the one update made is the result's
    with bot_at(env, url, stop=signal.SIGKILL):
        slack.accept_slowly("chat.update", 60)  # the parent is updated; the answer never comes
        run_backend(slack, url)
        slack.wait_for(lambda: done_updates(slack), 15)

    with bot_at(env, url):
        slack.wait_for(lambda: len(done_updates(slack)) >= 2, 20)  # updated again
        settle(slack, url)
        (reply,) = replies(slack)  # the result itself is not posted twice
        assert "succeeded" in reply["text"]
        assert len(done_updates(slack)) == 2
