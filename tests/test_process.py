"""``python -m bot`` as operators run it: start-up, refusals at start, and a SIGKILL mid-build."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot import messages as msg
from tests.fakes.codearts import FakeCodeArts
from tests.fakes.slack import FakeSlack
from tests.harness import BACKEND_ID, BOT_TOKEN, CONFIG, SECRET, run_value
from tests.slack_requests import SlackSender

ROOT = Path(__file__).resolve().parent.parent
LAST_PASS = "buildbot_watcher_last_pass_timestamp_seconds"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("SLACK_", "CODEARTS_", "IAM_", "CLOUD_SDK_", "BUILD"))
            and k not in ("DATABASE_URL", "PORT", "LOG_LEVEL", "WORKER_THREADS", "WATCHER_THREADS")}
    return {**keep, **extra}


def bot_process(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bot"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_healthy(url: str, proc: subprocess.Popen[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"bot exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("bot did not become healthy")


def env_for(slack: FakeSlack, codearts: FakeCodeArts, tmp_path: Path, db_url: str,
            port: int) -> dict[str, str]:
    """A bot polling builds every 0.5 s, with /metrics on: tests read its watcher's passes."""
    cfg = tmp_path / "buildbot.toml"
    cfg.write_text(CONFIG)
    return clean_env(SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SECRET,
                     SLACK_API_URL=slack.api_url, CODEARTS_ENDPOINT=codearts.url,
                     CODEARTS_TOKEN=FakeCodeArts.token, DATABASE_URL=db_url,
                     BUILDBOT_CONFIG=str(cfg), PORT=str(port), BUILD_POLL_SECONDS="0.5",
                     WATCH_LEASE_SECONDS="2", METRICS="1")


def metric(url: str, name: str, **labels: str) -> float | None:
    """One sample of the bot's /metrics at ``url``; None when it is not there (yet) or the
    bot does not answer."""
    try:
        resp = httpx.get(url + "/metrics", timeout=2)
    except httpx.TransportError:
        return None
    if resp.status_code != 200:
        return None
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def watcher_passes(slack: FakeSlack, *urls: str, span: float = 1.5,
                   timeout: float = 30.0) -> None:
    """Wait until each bot at ``urls`` has kept its watcher going ``span`` s from now: a
    pass of it ended that late or later (its last-pass gauge), so the polls and the
    housekeeping rounds (one a second) in between have run, and whatever they would
    send has been sent. How process tests see that nothing more arrives."""
    after = time.time() + span
    for url in urls:
        slack.wait_for(lambda url=url: (metric(url, LAST_PASS) or 0.0) >= after, timeout,
                       every=0.1)


def test_sigkill_mid_build_then_restart_reports_the_result_once(
        stand_ins: tuple[FakeSlack, FakeCodeArts], tmp_path: Path, db_url: str) -> None:
    slack, codearts = stand_ins
    port = free_port()
    env = env_for(slack, codearts, tmp_path, db_url, port)
    url = f"http://127.0.0.1:{port}"
    proc = bot_process(env)
    try:
        wait_healthy(url, proc)
        sender = SlackSender(url + "/slack/events", SECRET)
        hook = slack.response_url()
        assert sender.command("backend", user="UALICE", channel="CBUILDS",
                              response_url=hook).status_code == 200
        (question,) = slack.wait_for(lambda: slack.responses(hook))
        sender.click(msg.RUN, run_value(question), user="UALICE", channel="CBUILDS",
                     response_url=hook)
        (_post,) = slack.wait_for(lambda: slack.calls("chat.postMessage"))
        ts_known = slack.wait_for(lambda: len(slack.responses(hook)) >= 2)
        assert ts_known
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert codearts.builds(BACKEND_ID)[0].status(codearts.clock()) == "RUNNING"

    again = bot_process(env)
    try:
        wait_healthy(url, again)
        replies = slack.wait_for(
            lambda: [c for c in slack.calls("chat.postMessage") if c.get("thread_ts")], 15)
        watcher_passes(slack, url)  # several more polls: nothing more may arrive
        replies = [c for c in slack.calls("chat.postMessage") if c.get("thread_ts")]
        assert len(replies) == 1 and "succeeded" in replies[0]["text"]
        assert len(codearts.requests_to("/v3/jobs/build")) == 1
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(10)


def test_bad_jobs_file_stops_the_bot_naming_file_job_and_field(tmp_path: Path) -> None:
    cfg = tmp_path / "buildbot.toml"
    cfg.write_text('[jobs.backend]\nid = "short"\nuser = ["U1"]\n')
    env = clean_env(SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SECRET,
                    CODEARTS_ENDPOINT="http://127.0.0.1:9", CODEARTS_TOKEN="tok-secret-value",
                    BUILDBOT_CONFIG=str(cfg), DATABASE_URL=f"sqlite:///{tmp_path}/x.db")
    out = subprocess.run([sys.executable, "-m", "bot"], cwd=ROOT, env=env, text=True,
                         capture_output=True, timeout=60, check=False)
    assert out.returncode == 2
    assert "buildbot.toml" in out.stderr and "jobs.backend.id" in out.stderr
    assert "jobs.backend.user" in out.stderr  # the typo is an error, not a dropped rule
    assert "tok-secret-value" not in out.stderr + out.stdout and BOT_TOKEN not in out.stderr


@pytest.mark.parametrize("env,words", [
    ({}, ["SLACK_BOT_TOKEN", "CODEARTS_ENDPOINT"]),
    ({"SLACK_BOT_TOKEN": BOT_TOKEN, "CODEARTS_ENDPOINT": "http://x", "SLACK_SIGNING_SECRET": "s"},
     ["No CodeArts authentication"]),
    ({"SLACK_BOT_TOKEN": BOT_TOKEN, "CODEARTS_ENDPOINT": "http://x", "SLACK_SIGNING_SECRET": "s",
      "CODEARTS_TOKEN": "tok-secret-value", "CLOUD_SDK_AK": "ak", "CLOUD_SDK_SK": "sk-secret"},
     ["Two CodeArts authentication methods"]),
    ({"SLACK_BOT_TOKEN": BOT_TOKEN, "CODEARTS_ENDPOINT": "http://x",
      "CODEARTS_TOKEN": "tok-secret-value"}, ["SLACK_SIGNING_SECRET"]),
    ({"SLACK_BOT_TOKEN": BOT_TOKEN, "CODEARTS_ENDPOINT": "http://x", "SLACK_SIGNING_SECRET": "s",
      "CODEARTS_TOKEN": "tok-secret-value", "LOG_LEVEL": "verbose",
      "BUILD_LINK_TEMPLATE": "https://x/{job}"},
     ["LOG_LEVEL is invalid: 'verbose' is not a log level",
      "BUILD_LINK_TEMPLATE is invalid: {job} is not a placeholder"]),
])
def test_missing_or_contradictory_settings_stop_the_bot(env: dict[str, str],
                                                        words: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "bot"], cwd=ROOT, env=clean_env(**env),
                         text=True, capture_output=True, timeout=60, check=False)
    assert out.returncode == 2
    for word in words:
        assert word in out.stderr
    for secret in ("tok-secret-value", "sk-secret", BOT_TOKEN):
        assert secret not in out.stderr + out.stdout


def test_app_token_switches_to_socket_mode(tmp_path: Path) -> None:
    """With SLACK_APP_TOKEN the bot opens a Socket Mode connection (the stand-in refuses it)."""
    cfg = tmp_path / "buildbot.toml"
    cfg.write_text(CONFIG)
    with FakeSlack() as slack:
        env = clean_env(SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_APP_TOKEN="xapp-secret-app-token",
                        SLACK_API_URL=slack.api_url, CODEARTS_ENDPOINT="http://127.0.0.1:9",
                        CODEARTS_TOKEN="tok-secret-value", BUILDBOT_CONFIG=str(cfg),
                        DATABASE_URL=f"sqlite:///{tmp_path}/x.db")
        out = subprocess.run([sys.executable, "-m", "bot"], cwd=ROOT, env=env, text=True,
                             capture_output=True, timeout=60, check=False)
        opened = [c for c in slack.all_calls() if c.method == "apps.connections.open"]
    assert out.returncode == 2 and "SLACK_APP_TOKEN (invalid_auth)" in out.stderr
    assert opened and opened[0].headers["authorization"] == "Bearer xapp-secret-app-token"
    assert "xapp-secret-app-token" not in out.stderr + out.stdout
