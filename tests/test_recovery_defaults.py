"""Recovery with the settings users get: ``python -m bot`` with ``INTENT_GRACE_SECONDS``
and ``WATCH_LEASE_SECONDS`` at their defaults (builds are polled every 0.5 s only so
that the result comes quickly). A started build is announced within 60 s of the
restart, or of the database's return, once, with one result: the dead process's
heartbeat stops, so what it left open is settled without waiting out a grace."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fakes.codearts import FakeCodeArts
from tests.fakes.slack import FakeSlack
from tests.harness import BACKEND_ID
from tests.test_crash_process import bot_at, channel_posts, replies, run_backend
from tests.test_process import env_for, free_port, metric, watcher_passes

TARGET = 60.0  # seconds from the restart (or the database's return) to the announcement
DATABASE_ERRORS = "buildbot_database_errors_total"


def default_env(stand_ins: tuple[FakeSlack, FakeCodeArts], tmp_path: Path,
                db_url: str) -> tuple[dict[str, str], str]:
    slack, codearts = stand_ins
    port = free_port()
    env = env_for(slack, codearts, tmp_path, db_url, port)
    for name in ("WATCH_LEASE_SECONDS", "INTENT_GRACE_SECONDS"):
        env.pop(name, None)  # the defaults
    return env, f"http://127.0.0.1:{port}"


def seconds_until(slack: FakeSlack, predicate: Callable[[], Any], timeout: float) -> float:
    started = time.monotonic()
    slack.wait_for(predicate, timeout)
    return time.monotonic() - started


def one_build_one_result(slack: FakeSlack, codearts: FakeCodeArts, url: str) -> None:
    slack.wait_for(lambda: replies(slack), 20)
    watcher_passes(slack, url)  # a few more polls and housekeeping rounds: nothing more may arrive
    assert len(channel_posts(slack)) == 1
    (reply,) = replies(slack)
    assert "succeeded" in reply["text"]
    assert len(codearts.requests_to("/v3/jobs/build")) == 1  # never sent again
    assert [c for c in slack.calls("chat.postMessage") if c.get("channel") == "UALICE"] == []


def test_killed_while_the_run_call_is_in_flight(
        stand_ins: tuple[FakeSlack, FakeCodeArts], tmp_path: Path, db_url: str) -> None:
    slack, codearts = stand_ins
    env, url = default_env(stand_ins, tmp_path, db_url)
    with bot_at(env, url, stop=signal.SIGKILL):
        codearts.hang(60, path_prefix="/v3/jobs/build")  # CodeArts starts it; no answer
        run_backend(slack, url)
        slack.wait_for(lambda: codearts.builds(BACKEND_ID), 10)

    with bot_at(env, url):
        took = seconds_until(slack, lambda: channel_posts(slack), TARGET)
        assert took < TARGET
        one_build_one_result(slack, codearts, url)
        told = [r["text"] for r in slack.responses() if "CodeArts did start it" in r["text"]]
        assert len(told) == 1


def test_killed_after_slack_took_the_announcement(
        stand_ins: tuple[FakeSlack, FakeCodeArts], tmp_path: Path, db_url: str) -> None:
    slack, codearts = stand_ins
    env, url = default_env(stand_ins, tmp_path, db_url)
    with bot_at(env, url, stop=signal.SIGKILL):
        slack.accept_slowly("chat.postMessage", 60)  # posted; the answer never comes
        run_backend(slack, url)
        slack.wait_for(lambda: channel_posts(slack), 10)

    with bot_at(env, url):
        # found in the channel (not posted again), then followed: the result is in its thread
        took = seconds_until(slack, lambda: replies(slack), TARGET)
        assert took < TARGET
        one_build_one_result(slack, codearts, url)


def test_five_429s_on_the_announcement(
        stand_ins: tuple[FakeSlack, FakeCodeArts], tmp_path: Path, db_url: str) -> None:
    slack, codearts = stand_ins
    env, url = default_env(stand_ins, tmp_path, db_url)
    with bot_at(env, url):
        slack.fail("chat.postMessage", status=429, retry_after=1, count=5)
        run_backend(slack, url)
        took = seconds_until(slack, lambda: channel_posts(slack), TARGET)
        assert took < TARGET
        one_build_one_result(slack, codearts, url)


def test_the_database_cut_right_after_the_run_answer(
        stand_ins: tuple[FakeSlack, FakeCodeArts], tmp_path: Path, pg_url: str) -> None:
    import sqlalchemy as sa

    from tests.test_http_server import TcpProxy

    slack, codearts = stand_ins
    target = sa.engine.make_url(pg_url)
    proxy = TcpProxy((target.host or "127.0.0.1", target.port or 5432))
    proxied = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    env, url = default_env(stand_ins, tmp_path, proxied)
    try:
        with bot_at(env, url):
            codearts.hang(1.0, path_prefix="/v3/jobs/build")  # CodeArts takes a second
            run_backend(slack, url)
            slack.wait_for(lambda: codearts.builds(BACKEND_ID), 10)
            proxy.cut()  # the database goes away before the answer comes back
            slack.wait_for(lambda: any("*was started*" in r["text"]
                                       for r in slack.responses()), 20)
            # the database stays away a little while: 12 failed watcher passes (about 2 s;
            # /metrics answers without it, counting the errors)
            away = (metric(url, DATABASE_ERRORS) or 0.0) + 12
            slack.wait_for(lambda: (metric(url, DATABASE_ERRORS) or 0.0) >= away, 20, every=0.1)
            proxy.restore()
            took = seconds_until(slack, lambda: channel_posts(slack), TARGET)
            assert took < TARGET
            one_build_one_result(slack, codearts, url)
    finally:
        proxy.close()


def test_a_replica_takes_over_a_dead_one_at_once(
        stand_ins: tuple[FakeSlack, FakeCodeArts], tmp_path: Path, db_url: str) -> None:
    """Two replicas; the one that made the run call dies with it in flight. The other,
    already running, settles it within 60 s (its heartbeat went quiet), not after the
    grace."""
    slack, codearts = stand_ins
    env_a, url_a = default_env(stand_ins, tmp_path, db_url)
    port_b = free_port()
    env_b, url_b = {**env_a, "PORT": str(port_b)}, f"http://127.0.0.1:{port_b}"
    with bot_at(env_b, url_b):
        with bot_at(env_a, url_a, stop=signal.SIGKILL):
            codearts.hang(60, path_prefix="/v3/jobs/build")
            run_backend(slack, url_a)
            slack.wait_for(lambda: codearts.builds(BACKEND_ID), 10)
        took = seconds_until(slack, lambda: channel_posts(slack), TARGET)
        assert took < TARGET
        one_build_one_result(slack, codearts, url_b)
