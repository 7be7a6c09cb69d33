"""check-config and explain: what an operator sees and the exit codes, with no network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot import cli

JOB_ID = "f9d6c8466d614a9788e9a0acf6c15f46"
WEB_ID = "0123456789abcdef0123456789abcdef"  # its own task: two entries on one warn
GOOD = f"""
admins = ["UADMIN"]
[jobs.backend]
id = "{JOB_ID}"
description = "Backend CI"
users = ["UALICE"]
usergroups = ["SDEVS"]
channels = ["CBUILDS"]
[jobs.backend.params.codeBranch]
default = "master"
choices = ["master", "develop"]
[jobs.web]
id = "{WEB_ID}"
users = ["*"]
confirm = false
"""
ENV_VARS = ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "SLACK_API_URL", "PORT",
            "BUILDBOT_CONFIG", "DATABASE_URL", "CODEARTS_ENDPOINT", "CODEARTS_TOKEN",
            "IAM_ENDPOINT", "IAM_USER", "IAM_PASSWORD", "IAM_DOMAIN", "IAM_PROJECT",
            "CLOUD_SDK_AK", "CLOUD_SDK_SK", "CODEARTS_PROJECT_ID", "BUILD_POLL_SECONDS",
            "BUILD_LINK_TEMPLATE"]
SECRET = "xoxb-super-secret-value"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def good_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", SECRET)
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-also-secret")
    monkeypatch.setenv("CODEARTS_ENDPOINT", "https://cloudbuild.example.com")
    monkeypatch.setenv("CODEARTS_TOKEN", "token-secret")


def write(tmp_path: Path, text: str, name: str = "buildbot.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- check-config


def test_check_config_ok_prints_a_summary(good_env: None, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, GOOD)
    assert cli.check_config([]) == 0
    assert capsys.readouterr().out == (
        "OK: environment and buildbot.toml are valid; 2 job(s): backend, web.\n"
        "note: BUILD_LINK_TEMPLATE is not set, so build links are not previewed: set it to "
        "the console's link to a build, with {job_id} and {build_no}.\n")


def test_check_config_is_quiet_about_previews_when_links_can_be_read(
        good_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, GOOD)
    monkeypatch.setenv("BUILD_LINK_TEMPLATE", "https://console.example.com/{job_id}/{build_no}")
    assert cli.check_config([]) == 0
    assert "previewed" not in capsys.readouterr().out


def test_check_config_says_why_links_are_not_previewed(
        good_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, GOOD)
    monkeypatch.setenv("BUILD_LINK_TEMPLATE", "https://console.example.com/{job_id}")
    assert cli.check_config([]) == 0  # the bot still runs: only without previews
    assert "has no {build_no}" in capsys.readouterr().out


def test_check_config_uses_buildbot_config_env(good_env: None, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD, "jobs.toml")
    monkeypatch.setenv("BUILDBOT_CONFIG", str(path))
    assert cli.check_config([]) == 0
    assert f"environment and {path} are valid" in capsys.readouterr().out


def test_check_config_option_wins_over_env(good_env: None, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD, "other.toml")
    monkeypatch.setenv("BUILDBOT_CONFIG", str(tmp_path / "missing.toml"))
    assert cli.check_config(["--config", str(path)]) == 0
    assert "2 job(s)" in capsys.readouterr().out


def test_check_config_lists_every_problem_from_env_and_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", SECRET)
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-also-secret")
    write(tmp_path, 'typo = 1\n[jobs.a]\nid = "short"\n')
    assert cli.check_config([]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "4 configuration problem(s):"
    assert "- environment: CODEARTS_ENDPOINT is not set: " in out
    # the problems between variables are listed with the others, not after a second run
    assert "- environment: No CodeArts authentication is set" in out
    assert "- buildbot.toml: typo: unknown key" in out
    assert "- buildbot.toml: jobs.a.id: `short` is not a build task ID" in out
    assert SECRET not in out and "xapp-also-secret" not in out


def test_check_config_missing_file(good_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.check_config([]) == 1
    assert "- buildbot.toml: file not found" in capsys.readouterr().out


def test_check_config_never_prints_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", SECRET)
    monkeypatch.setenv("CODEARTS_ENDPOINT", "https://cloudbuild.example.com")
    monkeypatch.setenv("CODEARTS_TOKEN", "token-secret")
    monkeypatch.setenv("CLOUD_SDK_AK", "ak-secret")
    monkeypatch.setenv("CLOUD_SDK_SK", "sk-secret")
    write(tmp_path, GOOD)
    assert cli.check_config([]) == 1
    out = capsys.readouterr().out
    assert "Two CodeArts authentication methods" in out
    for secret in (SECRET, "token-secret", "ak-secret", "sk-secret"):
        assert secret not in out


def test_check_config_notes_jobs_nobody_can_run(good_env: None, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, f'[jobs.orphan]\nid = "{JOB_ID}"\n')
    assert cli.check_config([]) == 0
    assert "note: jobs.orphan has no users or usergroups and there are no admins" in (
        capsys.readouterr().out)


# ---------------------------------------------------------------- explain


def explain(tmp_path: Path, *args: str, config: str = GOOD) -> int:
    path = write(tmp_path, config, "jobs.toml")
    return cli.explain(["--config", str(path), *args])


def test_explain_allowed_prints_the_exact_body(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code = explain(tmp_path, "--user", "UALICE", "--channel", "CBUILDS",
                   "/build backend codeBranch=develop commit=ABCDEF1")
    out = capsys.readouterr().out
    assert code == 0
    head, body = out.split("POST /v3/jobs/build\n")
    assert head == f"Allowed: job backend ({JOB_ID}); confirm: yes (Run/Cancel buttons first)\n"
    assert json.loads(body) == {
        "job_id": JOB_ID, "parameter": [{"name": "codeBranch", "value": "develop"}],
        "scm": {"build_commit_id": "abcdef1"}}
    assert body == json.dumps(json.loads(body), indent=2) + "\n"


@pytest.mark.parametrize("commit", ["abc", "abc123", "ABC123", "0123456789abcdef" * 4])
def test_explain_accepts_any_commit_id_or_abbreviation(tmp_path: Path, commit: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = explain(tmp_path, "--user", "UALICE", "--channel", "CBUILDS",
                   f"/build backend codeBranch=master commit={commit}")
    out = capsys.readouterr().out
    assert code == 0, out
    body = json.loads(out.split("POST /v3/jobs/build\n")[1])
    assert body["scm"] == {"build_commit_id": commit.lower()}


@pytest.mark.parametrize("commit", ["a" * 65, "abc123g", "HEAD"])
def test_explain_refuses_a_commit_that_is_not_1_to_64_hex_digits(
        tmp_path: Path, commit: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = explain(tmp_path, "--user", "UALICE", "--channel", "CBUILDS",
                   f"/build backend codeBranch=master commit={commit}")
    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith("Denied:\n- `commit=")
    assert "is not a commit ID: give 1 to 64 hexadecimal digits, e.g. commit=1a2b3c4d." in out


@pytest.mark.parametrize("text", [["backend"], ["/build backend"], ["/build", "backend"],
                                  ["/BUILD backend"]])
def test_explain_leading_slash_build_is_optional(tmp_path: Path, text: list[str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert explain(tmp_path, "--user", "UALICE", "--channel", "CBUILDS", *text) == 0
    assert "Allowed: job backend" in capsys.readouterr().out


def test_explain_needs_no_environment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert explain(tmp_path, "--user", "UBOB", "--channel", "CX", "/build web") == 0
    assert "confirm: no" in capsys.readouterr().out


def test_explain_denied_lists_each_problem(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code = explain(tmp_path, "--user", "UALICE", "--channel", "CBUILDS",
                   "/build backend codeBranch=x extra=1")
    assert code == 1
    assert capsys.readouterr().out == (
        "Denied:\n"
        "- `codeBranch` must be one of master, develop, not `x`: pick one of those.\n"
        "- `extra` is not a parameter of `backend`: its only parameter is codeBranch.\n")


def test_explain_without_groups_says_membership_was_not_checked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Not "Denied" (nor "try again later"): what it would be if the user is in the group."""
    assert explain(tmp_path, "--user", "UBOB", "--channel", "CBUILDS", "/build backend") == 1
    out = capsys.readouterr().out
    assert out.startswith("Not decided: user-group membership not checked (no --groups). "
                          "UBOB is not allowed by name; a member of SDEVS would be.\n")
    assert "If UBOB is in SDEVS: allowed: job backend" in out and '"job_id"' in out
    assert "Denied" not in out and "try again later" not in out
    assert "note: pass --groups SDEVS" in out


def test_explain_without_groups_still_lists_what_membership_would_not_fix(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert explain(tmp_path, "--user", "UBOB", "--channel", "CBUILDS",
                   "/build backend codeBranch=x") == 1
    out = capsys.readouterr().out
    assert "If UBOB is in SDEVS, still denied:\n- `codeBranch` must be one of master" in out


def test_explain_with_groups_uses_them(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = explain(tmp_path, "--user", "UBOB", "--channel", "CBUILDS", "--groups", "SX, SDEVS",
                   "/build backend")
    assert code == 0
    assert "note:" not in capsys.readouterr().out


def test_explain_with_other_groups_is_a_plain_denial(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert explain(tmp_path, "--user", "UBOB", "--channel", "CBUILDS", "--groups", "",
                   "/build backend") == 1
    out = capsys.readouterr().out
    assert "You may not run `backend`" in out and "note:" not in out


def test_explain_no_note_when_membership_did_not_matter(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert explain(tmp_path, "--user", "UALICE", "--channel", "CX", "/build backend") == 1
    out = capsys.readouterr().out
    assert "cannot be run in this channel" in out and "note:" not in out


def test_explain_parse_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert explain(tmp_path, "--user", "UALICE", "--channel", "CBUILDS",
                   "/build backend master") == 1
    assert capsys.readouterr().out == (
        "The command cannot be read:\n- `master` has no `=`: write parameters as name=value, "
        "e.g. codeBranch=master\n")


def test_explain_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert explain(tmp_path, "--user", "U", "--channel", "C", "x", config="typo = 1") == 1
    assert capsys.readouterr().out.startswith("The jobs file is invalid:\n- ")


def test_explain_missing_default_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.explain(["--user", "U", "--channel", "C", "x"]) == 1
    assert "buildbot.toml: file not found" in capsys.readouterr().out


def test_explain_help_lists_runnable_jobs(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert explain(tmp_path, "--user", "UALICE", "--channel", "CBUILDS", "/build") == 0
    assert "Jobs this user may run here: backend, web" in capsys.readouterr().out


def test_explain_bad_usage_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.explain(["--channel", "C", "x"]) == 2
    assert "--user" in capsys.readouterr().err


# ---------------------------------------------------------------- guard rails

GUARDED = "max_per_user_per_hour = 4\n" + GOOD + f"""
[jobs.deploy]
id = "{JOB_ID}"
users = ["UALICE"]
approvers = ["UCAROL"]
approver_groups = ["SLEADS"]
approval_channel = "CAPPROVALS"
approval_ttl = "45m"
max_per_user_per_hour = 2
"""


def test_explain_says_who_must_approve_and_the_hourly_limit(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert explain(tmp_path, "--user", "UALICE", "--channel", "C1", "deploy",
                   config=GUARDED) == 0
    out = capsys.readouterr().out
    assert ("needs approval by 1 of: UCAROL, a member of SLEADS (never UALICE themselves), "
            "asked in CAPPROVALS; expires after 45 min without it") in out
    assert "per-user limit: 2 build(s) of deploy per hour for UALICE" in out
    assert json.loads(out.split("POST /v3/jobs/build\n")[1]) == {"job_id": JOB_ID}


def test_explain_uses_the_files_default_limit_and_exempts_admins(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert explain(tmp_path, "--user", "UBOB", "--channel", "C1", "web", config=GUARDED) == 0
    out = capsys.readouterr().out
    assert "per-user limit: 4 build(s) of web per hour for UBOB" in out
    assert "needs approval" not in out
    assert explain(tmp_path, "--user", "UADMIN", "--channel", "C1", "deploy",
                   config=GUARDED) == 0
    out = capsys.readouterr().out
    assert "per-user limit: none for UADMIN (admins are exempt)" in out
    assert "needs approval by 1 of" in out  # admins need approval too


def test_explain_a_raw_id_of_a_job_with_approvers_needs_the_same_approval(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert explain(tmp_path, "--user", "UADMIN", "--channel", "C1", JOB_ID,
                   config=GUARDED) == 0
    assert "needs approval by 1 of: UCAROL" in capsys.readouterr().out


def test_check_config_knows_the_guard_rail_keys(good_env: None, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, GUARDED)
    assert cli.check_config([]) == 0
    assert "note: jobs.deploy needs 1 approval(s) by UCAROL, SLEADS." in capsys.readouterr().out
    write(tmp_path, GUARDED.replace('approval_ttl = "45m"', 'approval_ttl = "2 days"')
          .replace("max_per_user_per_hour = 4", "max_per_user_per_hour = 0"))
    assert cli.check_config([]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "2 configuration problem(s):"
    assert "- buildbot.toml: max_per_user_per_hour: must be 1 or more" in out
    assert '- buildbot.toml: jobs.deploy.approval_ttl: "2 days" is not a duration' in out
