"""Socket Mode's health listener (HEALTH_PORT): ``/healthz``, ``/readyz`` and ``/metrics``
meaning what they mean in HTTP mode, with ``python -m bot`` run as operators run it.

The Slack stand-in has no WebSocket: it answers ``apps.connections.open`` with
``invalid_auth``, and the bot then stops with one line and exit code 2, as it does when
real Slack refuses an app-level token. So the process tests hold that answer back
(``accept_slowly``): meanwhile the bot has had its bot token accepted and is waiting for its
Socket Mode connection, which is when ``/readyz`` turns 200 ("Slack accepted the bot token
and the database answers", as in HTTP mode; it says nothing of the WebSocket). One test
then lets the refusal arrive and sees the listener close with the process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.settings import SettingsError, load_settings
from bot.standins.slack import FakeSlack
from tests.harness import BOT_TOKEN, CONFIG
from tests.test_process import ROOT, bot_process, clean_env, free_port
from tests.test_startup import one_line

APP_TOKEN = "xapp-1-A1-secret-app-token"
# How long the stand-in holds its answer to apps.connections.open: the bot's Slack client
# waits 10 s for an answer, and the checks made meanwhile take well under a second.
HOLD = 8.0
DEADLINE = 20.0  # for the process to start, answer, or end


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def socket_env(slack: FakeSlack, tmp_path: Path, **extra: str) -> dict[str, str]:
    """Socket Mode against the Slack stand-in; CodeArts is never called at start. PORT is
    set, to show Socket Mode does not listen on it; HEALTH_PORT and METRICS only if given."""
    jobs = tmp_path / "buildbot.toml"
    jobs.write_text(CONFIG)
    env = clean_env(SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_APP_TOKEN=APP_TOKEN,
                    SLACK_API_URL=slack.api_url, CODEARTS_ENDPOINT="http://127.0.0.1:9",
                    CODEARTS_TOKEN="tok-secret-value", BUILDBOT_CONFIG=str(jobs),
                    DATABASE_URL=f"sqlite:///{tmp_path}/x.db", PORT=str(free_port()))
    for name in ("HEALTH_PORT", "METRICS"):
        env.pop(name, None)
    return {**env, **extra}


def wait_until(what: str, check: Callable[[], Any], proc: subprocess.Popen[str]) -> Any:
    """Poll ``check`` until it returns something truthy; fail if the bot exits first."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"bot exited ({proc.returncode}) before {what}: "
                                 f"{proc.stdout.read() if proc.stdout else ''}")
        try:
            value = check()
        except httpx.TransportError:
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=2)


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on, read from /proc (Linux)."""
    fds = Path(f"/proc/{pid}/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc to see which ports a process listens on")
    inodes = set()
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


# ---------------------------------------------------------------- the process


def test_health_port_answers_as_in_http_mode_then_closes_with_the_process(
        slack: FakeSlack, tmp_path: Path) -> None:
    slack.accept_slowly("auth.test", 2.0)
    slack.accept_slowly("apps.connections.open", HOLD)
    health = free_port()
    env = socket_env(slack, tmp_path, HEALTH_PORT=str(health), METRICS="1")
    url = f"http://127.0.0.1:{health}"
    proc = bot_process(env)
    try:
        # the port opens before Slack has answered for the bot token
        assert wait_until("/healthz", lambda: get(url + "/healthz").status_code == 200, proc)
        ready = get(url + "/readyz")
        assert ready.status_code == 503
        assert ready.text == "starting: Slack has not accepted the bot token yet"
        assert slack.calls("auth.test") and not slack.calls("apps.connections.open")

        wait_until("/readyz 200", lambda: get(url + "/readyz").status_code == 200, proc)
        assert get(url + "/readyz").text == "ok"
        # the bot now waits for its Socket Mode connection, listening on HEALTH_PORT alone
        wait_until("apps.connections.open", lambda: slack.calls("apps.connections.open"), proc)
        assert listening_ports(proc.pid) == {health}

        metrics = get(url + "/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
        for name in ("buildbot_commands", "buildbot_builds_started", "buildbot_builds_followed",
                     "buildbot_slack_call_seconds", "buildbot_codearts_call_seconds"):
            assert name in families
        assert families["buildbot_builds_followed"].samples[0].value == 0

        # only the health checks: no Slack endpoint, no webhook, nothing else
        assert httpx.post(url + "/slack/events", content=b"{}", timeout=2).status_code == 404
        assert httpx.post(url + "/codearts/events", content=b"{}", timeout=2).status_code == 404
        assert get(url + "/").status_code == 404
        assert httpx.post(url + "/healthz", timeout=2).status_code == 404

        # the stand-in refuses the app-level token: the bot stops, and the port with it
        proc.wait(HOLD + DEADLINE)
    finally:
        out = stop(proc)
    assert proc.returncode == 2
    assert "Slack refused SLACK_APP_TOKEN (invalid_auth)" in out
    assert APP_TOKEN not in out and BOT_TOKEN not in out
    with pytest.raises(httpx.TransportError):
        get(url + "/healthz")


def test_metrics_are_off_unless_asked_for(slack: FakeSlack, tmp_path: Path) -> None:
    slack.accept_slowly("apps.connections.open", HOLD)
    health = free_port()
    url = f"http://127.0.0.1:{health}"
    proc = bot_process(socket_env(slack, tmp_path, HEALTH_PORT=str(health)))
    try:
        wait_until("/readyz 200", lambda: get(url + "/readyz").status_code == 200, proc)
        assert get(url + "/healthz").status_code == 200
        assert get(url + "/metrics").status_code == 404
    finally:
        stop(proc)
    assert proc.returncode == 0  # SIGTERM while waiting for the connection: a clean stop


def test_without_health_port_nothing_listens(slack: FakeSlack, tmp_path: Path) -> None:
    slack.accept_slowly("apps.connections.open", HOLD)
    proc = bot_process(socket_env(slack, tmp_path, METRICS="1"))
    try:
        # past auth.test and asking for its connection: HEALTH_PORT would be open by now
        wait_until("apps.connections.open", lambda: slack.calls("apps.connections.open"), proc)
        assert listening_ports(proc.pid) == set()
    finally:
        stop(proc)
    assert proc.returncode == 0


def test_health_port_in_use_is_one_line_and_exit_2(slack: FakeSlack, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "bot"], cwd=ROOT, text=True,
                             env=socket_env(slack, tmp_path, HEALTH_PORT=str(port),
                                            LOG_LEVEL="WARNING"),
                             capture_output=True, timeout=60, check=False)
    assert out.returncode == 2
    assert one_line(out).startswith(f"cannot listen on HEALTH_PORT {port} (")
    assert slack.all_calls() == []  # the port comes first


def test_health_port_in_http_mode_stops_the_bot(slack: FakeSlack, tmp_path: Path) -> None:
    env = socket_env(slack, tmp_path, HEALTH_PORT=str(free_port()),
                     SLACK_SIGNING_SECRET="test-signing-secret-0123456789")
    del env["SLACK_APP_TOKEN"]
    out = subprocess.run([sys.executable, "-m", "bot"], cwd=ROOT, env=env, text=True,
                         capture_output=True, timeout=60, check=False)
    assert out.returncode == 2
    line = one_line(out)
    assert line.startswith("HEALTH_PORT is invalid: it is for Socket Mode only")
    assert "served on PORT" in line
    assert slack.all_calls() == []


# ---------------------------------------------------------------- the setting


BASE = {"slack_bot_token": "xoxb-secret-1", "codearts_endpoint": "https://cb.example.com/",
        "codearts_token": "tok-3"}


@pytest.fixture
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith(("SLACK_", "CODEARTS_", "IAM_", "CLOUD_SDK_", "BUILD",
                                   "DATABASE_", "LOG_LEVEL", "HEALTH_PORT", "METRICS")):
            monkeypatch.delenv(key)


@pytest.mark.usefixtures("no_environment")
@pytest.mark.parametrize(("value", "port"), [
    (None, None), ("", None), ("  ", None), ("1", 1), ("8081", 8081), ("65535", 65535)])
def test_health_port_in_socket_mode(value: str | None, port: int | None) -> None:
    extra = {} if value is None else {"health_port": value}
    assert load_settings(**BASE, slack_app_token="xapp-1-x", **extra).health_port == port


@pytest.mark.usefixtures("no_environment")
@pytest.mark.parametrize(("extra", "problem"), [
    ({"slack_app_token": "xapp-1-x", "health_port": "0"},
     "HEALTH_PORT is invalid: Input should be greater than or equal to 1."),
    ({"slack_app_token": "xapp-1-x", "health_port": "65536"},
     "HEALTH_PORT is invalid: Input should be less than or equal to 65535."),
    ({"slack_app_token": "xapp-1-x", "health_port": "http"},
     "HEALTH_PORT is invalid: Input should be a valid integer"),
    ({"slack_signing_secret": "sign-secret-2", "health_port": "8081"},
     ("HEALTH_PORT is invalid: it is for Socket Mode only, and SLACK_APP_TOKEN is not set: in "
      "HTTP mode /healthz, /readyz and /metrics are served on PORT; unset HEALTH_PORT.")),
    ({"slack_app_token": "", "slack_signing_secret": "sign-secret-2", "health_port": "8081"},
     "HEALTH_PORT is invalid: it is for Socket Mode only"),
])
def test_a_bad_health_port_is_one_problem_naming_it(extra: dict[str, str],
                                                    problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**BASE, **extra)
    (only,) = caught.value.problems
    assert only.startswith(problem)


@pytest.mark.usefixtures("no_environment")
def test_health_port_problems_come_with_the_others() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**BASE, slack_signing_secret="sign-secret-2", health_port="8081",
                      log_level="verbose", port="0")
    names = sorted(p.split(" ", 1)[0] for p in caught.value.problems)
    assert names == ["HEALTH_PORT", "LOG_LEVEL", "PORT"]


@pytest.mark.usefixtures("no_environment")
def test_an_invalid_app_token_is_said_once_not_as_http_mode() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**BASE, slack_app_token="xoxb-2-secret", health_port="8081")
    (only,) = caught.value.problems
    assert only.startswith("SLACK_APP_TOKEN is invalid: it is a bot token")
