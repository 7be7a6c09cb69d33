"""``python -m bot`` as a newcomer meets it: the command line, and every start-up mistake
reported at once, in plain words, with exit code 2 and never a traceback."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.standins.slack import FakeSlack
from tests.harness import BOT_TOKEN, CONFIG, SECRET
from tests.test_process import ROOT, bot_process, clean_env, free_port


def bot(*args: str, env: dict[str, str] | None = None,
        cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd,
                          env=clean_env() if env is None else env, text=True,
                          capture_output=True, timeout=60, check=False)


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    path = tmp_path / "buildbot.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def good_env(slack: FakeSlack, jobs: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    """A complete environment for HTTP mode; CodeArts is never called at start."""
    return clean_env(**{"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET,
                        "SLACK_API_URL": slack.api_url, "CODEARTS_ENDPOINT": "http://127.0.0.1:9",
                        "CODEARTS_TOKEN": "tok-secret-value", "BUILDBOT_CONFIG": str(jobs),
                        "DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "PORT": str(free_port()),
                        "LOG_LEVEL": "WARNING", **extra})


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    """The one reason under "buildbot cannot start:", which is the whole of stderr."""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0] == "buildbot cannot start:", out.stderr
    assert lines[1].startswith("  - ")
    assert "Traceback" not in out.stderr + out.stdout
    return lines[1][len("  - "):]


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_lists_the_subcommands(flag: str) -> None:
    out = bot(flag)
    assert out.returncode == 0
    assert out.stdout.startswith("usage: python -m bot")
    for word in ("run", "demo", "check-config", "explain", "--version", "--config"):
        assert word in out.stdout


def test_each_subcommand_has_help() -> None:
    for command in ("run", "demo", "check-config", "explain"):
        out = bot(command, "--help")
        assert out.returncode == 0 and f"usage: python -m bot {command}" in out.stdout


def test_version() -> None:
    from importlib import metadata

    out = bot("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"buildbot {metadata.version('buildbot')}"


@pytest.mark.parametrize("args", [["bogus"], ["--bogus"], ["run", "--bogus"], ["help"],
                                  ["explain", "--user", "U1"]])
def test_bad_usage_is_exit_2_and_never_starts_the_bot(args: list[str], slack: FakeSlack,
                                                      jobs: Path, tmp_path: Path) -> None:
    out = bot(*args, env=good_env(slack, jobs, tmp_path))
    assert out.returncode == 2
    assert "usage: python -m bot" in out.stderr and "Traceback" not in out.stderr
    assert slack.all_calls() == []  # Slack was never asked anything


@pytest.mark.parametrize("args", [["--config", "{path}"], ["run", "--config", "{path}"]])
def test_config_option_works_for_running_the_bot(args: list[str], slack: FakeSlack, jobs: Path,
                                                 tmp_path: Path) -> None:
    missing = tmp_path / "elsewhere.toml"
    out = bot(*[a.format(path=missing) for a in args], env=good_env(slack, jobs, tmp_path))
    assert out.returncode == 2
    assert f"{missing}: file not found" in one_line(out)


def test_config_option_wins_over_buildbot_config(slack: FakeSlack, jobs: Path,
                                                 tmp_path: Path) -> None:
    env = good_env(slack, jobs, tmp_path, BUILDBOT_CONFIG=str(tmp_path / "missing.toml"))
    out = bot("check-config", "--config", str(jobs), env=env)
    assert out.returncode == 0 and f"environment and {jobs} are valid" in out.stdout


# ---------------------------------------------------------------- the environment, all at once


def test_every_problem_of_the_environment_and_the_file_in_one_message(tmp_path: Path) -> None:
    out = bot(env=clean_env(), cwd=tmp_path)  # nothing set, no buildbot.toml here
    assert out.returncode == 2
    assert out.stderr.startswith("buildbot cannot start:\n")
    assert len([line for line in out.stderr.splitlines() if line.startswith("  - ")]) == 5
    for words in ("SLACK_BOT_TOKEN is not set", "CODEARTS_ENDPOINT is not set",
                  "No CodeArts authentication is set", "SLACK_SIGNING_SECRET is not set",
                  "buildbot.toml: file not found"):
        assert words in out.stderr
    assert "Traceback" not in out.stderr


def test_double_auth_and_a_bad_database_url_together_with_a_hint(slack: FakeSlack, jobs: Path,
                                                                tmp_path: Path) -> None:
    env = good_env(slack, jobs, tmp_path, CLOUD_SDK_AK="ak", CLOUD_SDK_SK="sk-secret",
                   DATABASE_URL="buildbot.db")
    out = bot(env=env)
    assert out.returncode == 2
    assert "Two CodeArts authentication methods are set" in out.stderr
    assert "DATABASE_URL is invalid" in out.stderr and "sqlite:///buildbot.db" in out.stderr
    assert slack.all_calls() == []
    for secret in ("tok-secret-value", "sk-secret", BOT_TOKEN):
        assert secret not in out.stderr + out.stdout


@pytest.mark.parametrize(("name", "value"), [
    ("SLACK_BOT_TOKEN", "xoxb-…"),
    ("SLACK_BOT_TOKEN", "xoxb-..."),
    ("SLACK_SIGNING_SECRET", "“a1b2c3”"),
    ("CODEARTS_TOKEN", "MII…"),
    ("CODEARTS_ENDPOINT", "https://cloudbuild-ext.…myhuaweicloud.com"),
    ("DATABASE_URL", "postgresql://bot@db…/buildbot"),
    ("SLACK_API_URL", "https://sl\u0430ck.com/api/"),  # a Cyrillic a
    ("IAM_ENDPOINT", "https://iam.example.com/v3 /"),
])
def test_a_pasted_placeholder_is_one_line_naming_the_variable(name: str, value: str,
                                                              slack: FakeSlack, jobs: Path,
                                                              tmp_path: Path) -> None:
    out = bot(env=good_env(slack, jobs, tmp_path, **{name: value}))
    assert out.returncode == 2
    line = one_line(out)
    assert line.startswith(f"{name} is invalid: ")
    assert value not in line
    assert slack.all_calls() == []  # checked before any network call


@pytest.mark.parametrize(("extra", "words"), [
    ({"SLACK_BOT_TOKEN": "xapp-1-A1-secret", "SLACK_APP_TOKEN": "xoxb-1-secret"},
     "SLACK_BOT_TOKEN and SLACK_APP_TOKEN are swapped"),
    ({"SLACK_BOT_TOKEN": "xapp-1-A1-secret"}, "SLACK_BOT_TOKEN is invalid: it is an app-level "
     "token (xapp-...)"),
    ({"SLACK_BOT_TOKEN": "xoxp-1-secret"}, "SLACK_BOT_TOKEN is invalid: it is a user token"),
    ({"SLACK_BOT_TOKEN": "secret-token"}, "SLACK_BOT_TOKEN is invalid: a bot token starts with "
     "xoxb-"),
    ({"SLACK_APP_TOKEN": "xoxb-2-secret"}, "SLACK_APP_TOKEN is invalid: it is a bot token"),
    ({"SLACK_APP_TOKEN": "secret-app"}, "SLACK_APP_TOKEN is invalid: an app-level token starts "
     "with xapp-"),
])
def test_token_shapes_are_checked_locally(extra: dict[str, str], words: str, slack: FakeSlack,
                                          jobs: Path, tmp_path: Path) -> None:
    out = bot(env=good_env(slack, jobs, tmp_path, **extra))
    assert out.returncode == 2
    line = one_line(out)
    assert words in line
    assert "secret" not in line.replace("SLACK_SIGNING_SECRET", "")
    assert slack.all_calls() == []


def test_a_bad_log_level_is_an_error(slack: FakeSlack, jobs: Path, tmp_path: Path) -> None:
    out = bot(env=good_env(slack, jobs, tmp_path, LOG_LEVEL="verbose"))
    assert out.returncode == 2
    assert "LOG_LEVEL is invalid: 'verbose' is not a log level" in one_line(out)


def test_an_empty_jobs_file_is_a_warning(slack: FakeSlack, jobs: Path, tmp_path: Path) -> None:
    jobs.write_text("# nothing yet\n")
    out = bot("check-config", env=good_env(slack, jobs, tmp_path))
    assert out.returncode == 0, out.stdout
    assert "0 job(s)" in out.stdout and f"warning: {jobs} has no jobs" in out.stdout


def test_explain_without_groups_says_membership_was_not_checked(jobs: Path) -> None:
    out = bot("explain", "--config", str(jobs), "--user", "UBOB", "--channel", "CBUILDS",
              "/build backend")
    assert out.returncode == 1
    assert "user-group membership not checked" in out.stdout
    assert not out.stdout.startswith("Denied")


# ---------------------------------------------------------------- HTTP mode: the port first


def test_http_port_opens_before_slack_accepts_the_token(slack: FakeSlack, jobs: Path,
                                                        tmp_path: Path) -> None:
    slack.accept_slowly("auth.test", 3.0)
    env = good_env(slack, jobs, tmp_path)
    url = f"http://127.0.0.1:{env['PORT']}"
    proc = bot_process(env)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                health = httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert health.status_code == 200
        ready = httpx.get(url + "/readyz", timeout=1)
        assert ready.status_code == 503 and ready.text.startswith("starting")
        assert slack.calls("auth.test")  # asked, not answered yet
        while time.monotonic() < deadline and httpx.get(url + "/readyz",
                                                        timeout=1).status_code != 200:
            time.sleep(0.1)
        assert httpx.get(url + "/readyz", timeout=1).status_code == 200
    finally:
        proc.terminate()
        proc.wait(15)
    assert proc.returncode == 0


def test_slack_refusing_the_token_is_one_line_and_exit_2(slack: FakeSlack, jobs: Path,
                                                         tmp_path: Path) -> None:
    slack.error("auth.test", "invalid_auth")
    out = bot(env=good_env(slack, jobs, tmp_path))
    assert out.returncode == 2
    line = one_line(out)
    assert line.startswith("Slack refused SLACK_BOT_TOKEN (invalid_auth): ")
    assert BOT_TOKEN not in out.stderr


def test_a_port_in_use_is_one_line_and_exit_2(slack: FakeSlack, jobs: Path,
                                              tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = bot(env=good_env(slack, jobs, tmp_path, PORT=str(port)))
    assert out.returncode == 2
    assert f"cannot listen on PORT {port}" in one_line(out)
    assert slack.calls("auth.test") == []  # the port comes first
