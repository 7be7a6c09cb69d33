"""Settings from the environment: fail fast, name the variable, never show a value."""

from __future__ import annotations

import pytest

from bot.settings import SettingsError, format_build_link, load_settings

BASE = {"slack_bot_token": "xoxb-secret-1", "codearts_endpoint": "https://cb.example.com/",
        "slack_signing_secret": "sign-secret-2"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith(("SLACK_", "CODEARTS_", "IAM_", "CLOUD_SDK_", "BUILD", "DATABASE_",
                           "LOG_LEVEL", "WATCHER_", "WORKER_", "HTTP_")):
            monkeypatch.delenv(key)


@pytest.mark.parametrize("extra,words", [
    ({}, ["No CodeArts authentication"]),
    ({"codearts_token": "tok-3", "iam_user": "u"}, ["Two CodeArts authentication methods"]),
    ({"codearts_token": "tok-3", "cloud_sdk_ak": "ak"}, ["Two CodeArts authentication methods"]),
    ({"iam_user": "u", "iam_password": "pw-4"},
     ["IAM_DOMAIN is not set", "IAM_PROJECT is not set"]),
    ({"cloud_sdk_ak": "ak", "cloud_sdk_sk": "sk-5"}, ["CODEARTS_PROJECT_ID is not set"]),
    ({"codearts_token": "tok-3", "codearts_endpoint": "cb.example.com"}, ["CODEARTS_ENDPOINT"]),
    ({"codearts_token": "tok-3", "port": "0"}, ["PORT is invalid"]),
    ({"codearts_token": "tok-3", "build_poll_seconds": "-1"}, ["BUILD_POLL_SECONDS is invalid"]),
    ({"codearts_token": "tok-3", "slack_signing_secret": None},
     ["SLACK_SIGNING_SECRET is not set"]),
])
def test_bad_settings_name_the_variable_and_hide_values(extra: dict, words: list[str]) -> None:
    values = {**BASE, **extra}
    values = {k: v for k, v in values.items() if v is not None}
    with pytest.raises(SettingsError) as caught:
        load_settings(**values)
    text = str(caught.value)
    for word in words:
        assert word in text
    for secret in ("xoxb-secret-1", "sign-secret-2", "tok-3", "pw-4", "sk-5"):
        assert secret not in text


@pytest.mark.parametrize("extra,method", [
    ({"codearts_token": "tok-3"}, "token"),
    ({"iam_user": "u", "iam_password": "p", "iam_domain": "d", "iam_project": "cn-north-4"}, "iam"),
    ({"cloud_sdk_ak": "a", "cloud_sdk_sk": "s", "codearts_project_id": "p"}, "aksk"),
])
def test_exactly_one_auth_method_is_chosen(extra: dict, method: str) -> None:
    settings = load_settings(**BASE, **extra)
    assert settings.auth_method == method
    assert settings.codearts_endpoint == "https://cb.example.com"
    assert "xoxb-secret-1" not in repr(settings) and "sign-secret-2" not in repr(settings)


def test_spaces_around_a_url_are_dropped() -> None:
    settings = load_settings(**{**BASE, "codearts_endpoint": " https://cb.example.com/\n"},
                             codearts_token="tok-3", slack_api_url="https://slack.example/api ",
                             database_url="  sqlite:///x.db\n")
    assert (settings.codearts_endpoint, settings.slack_api_url, settings.database_url) == (
        "https://cb.example.com", "https://slack.example/api/", "sqlite:///x.db")


def test_socket_mode_needs_no_signing_secret() -> None:
    settings = load_settings(slack_bot_token="xoxb-1", codearts_endpoint="https://x",
                             codearts_token="t", slack_app_token="xapp-1")
    assert settings.socket_mode


def test_settings_are_read_from_their_environment_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s",
                        "CODEARTS_ENDPOINT": "https://x", "CODEARTS_TOKEN": "t",
                        "SLACK_API_URL": "http://127.0.0.1:1/api", "PORT": "8080",
                        "BUILDBOT_CONFIG": "/etc/bb.toml", "DATABASE_URL": "sqlite:///x.db",
                        "BUILD_POLL_SECONDS": "30"}.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    assert (s.slack_api_url, s.port, str(s.buildbot_config), s.database_url,
            s.build_poll_seconds) == ("http://127.0.0.1:1/api/", 8080, "/etc/bb.toml",
                                      "sqlite:///x.db", 30.0)


# ---------------------------------------------------------------- LOG_LEVEL


@pytest.mark.parametrize(("given", "level"), [
    (None, "INFO"), ("debug", "DEBUG"), ("Warning", "WARNING"), (" error ", "ERROR"),
    ("CRITICAL", "CRITICAL"), ("info", "INFO"),
])
def test_log_level_is_any_case_and_defaults_to_info(given: str | None, level: str) -> None:
    extra = {} if given is None else {"log_level": given}
    assert load_settings(**BASE, codearts_token="tok-3", **extra).log_level == level


@pytest.mark.parametrize("given", ["verbose", "", "warn", "10"])
def test_a_bad_log_level_is_a_start_up_error_naming_it(given: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**BASE, codearts_token="tok-3", log_level=given)
    assert caught.value.problems == [
        (f"LOG_LEVEL is invalid: {given!r} is not a log level: use one of DEBUG, INFO, WARNING, "
         "ERROR, CRITICAL.")]


def test_log_level_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "debug")
    assert load_settings(**BASE, codearts_token="tok-3").log_level == "DEBUG"


# ---------------------------------------------------------------- BUILD_LINK_TEMPLATE

LINK = "https://console.example.com/cicd/project/{project_id}/build/{job_id}/{build_no}?d={daily_build_number}"


@pytest.mark.parametrize("template", [
    LINK, "https://x/{job_id}", "https://x/{{literal}}/{build_no}", "https://x/no-placeholder",
])
def test_a_link_template_with_known_placeholders_is_accepted(template: str) -> None:
    assert load_settings(**BASE, codearts_token="tok-3",
                         build_link_template=template).build_link_template == template


@pytest.mark.parametrize(("template", "bad"), [
    ("https://x/{job}", "{job}"),
    ("https://x/{}", "{}"),
    ("https://x/{0}", "{0}"),
    ("https://x/{job_id.__class__}", "{job_id.__class__}"),
    ("https://x/{job_id[0]}", "{job_id[0]}"),
    ("https://x/{job_id!r}", "{job_id!r}"),
    ("https://x/{build_no:>5}", "{build_no:>5}"),
    ("https://x/{job_id}/{JOB_ID}", "{JOB_ID}"),
])
def test_an_unknown_placeholder_is_a_start_up_error_naming_it(template: str, bad: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**BASE, codearts_token="tok-3", build_link_template=template)
    assert caught.value.problems == [
        (f"BUILD_LINK_TEMPLATE is invalid: {bad} is not a placeholder it may use: use only "
         "{job_id}, {build_no}, {daily_build_number}, {project_id}.")]


@pytest.mark.parametrize("template", ["https://x/{job_id", "https://x/job_id}", "https://x/{"])
def test_an_unbalanced_brace_is_a_start_up_error(template: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**BASE, codearts_token="tok-3", build_link_template=template)
    [problem] = caught.value.problems
    assert problem.startswith("BUILD_LINK_TEMPLATE is invalid: it is not a valid template (")
    assert problem.endswith("): write {{ and }} for a literal brace.")


def test_format_build_link_fills_every_placeholder() -> None:
    assert format_build_link(LINK, job_id="f9d6c8466d614a9788e9a0acf6c15f46", build_no="7",
                             daily_build_number="20250912.3", project_id="p1") == (
        "https://console.example.com/cicd/project/p1/build/f9d6c8466d614a9788e9a0acf6c15f46/7"
        "?d=20250912.3")


def test_format_build_link_percent_encodes_values() -> None:
    assert format_build_link("https://x/{daily_build_number}?p={project_id}", job_id="j",
                             build_no="1", daily_build_number="a b>|c", project_id="") == (
        "https://x/a%20b%3E%7Cc?p=")


def test_format_build_link_refuses_a_template_settings_would_refuse() -> None:
    with pytest.raises(ValueError, match=r"BUILD_LINK_TEMPLATE: \{job\} is not a placeholder"):
        format_build_link("https://x/{job}", job_id="j", build_no="1", daily_build_number="",
                          project_id="")


# ---------------------------------------------------------------- WATCHER_THREADS


@pytest.mark.parametrize(("given", "threads"), [(None, 8), ("1", 1), ("64", 64)])
def test_watcher_threads_default_to_8(given: str | None, threads: int) -> None:
    extra = {} if given is None else {"watcher_threads": given}
    assert load_settings(**BASE, codearts_token="tok-3", **extra).watcher_threads == threads


@pytest.mark.parametrize("given", ["0", "65", "many"])
def test_watcher_threads_outside_1_to_64_is_a_start_up_error(given: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**BASE, codearts_token="tok-3", watcher_threads=given)
    [problem] = caught.value.problems
    assert problem.startswith("WATCHER_THREADS is invalid: ")


# ---------------------------------------------------------------- HTTP server limits


def test_http_limits_default_to_10_s_and_1000_connections() -> None:
    s = load_settings(**BASE, codearts_token="tok-3")
    assert (s.http_request_timeout, s.http_max_connections) == (10.0, 1000)


def test_http_limits_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_REQUEST_TIMEOUT", "2.5")
    monkeypatch.setenv("HTTP_MAX_CONNECTIONS", "200")
    s = load_settings(**BASE, codearts_token="tok-3")
    assert (s.http_request_timeout, s.http_max_connections) == (2.5, 200)


@pytest.mark.parametrize(("name", "given"), [
    ("http_request_timeout", "0"), ("http_request_timeout", "-1"),
    ("http_request_timeout", "301"), ("http_request_timeout", "soon"),
    ("http_max_connections", "9"), ("http_max_connections", "50001"),
    ("http_max_connections", "1.5"),
])
def test_http_limits_out_of_range_are_a_start_up_error(name: str, given: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**BASE, codearts_token="tok-3", **{name: given})
    [problem] = caught.value.problems
    assert problem.startswith(f"{name.upper()} is invalid: ")


# ---------------------------------------------------------------- pasted values, token shapes


@pytest.mark.parametrize("token", ["xoxb-1-2-abc", "xoxe.xoxb-1-abc"])
def test_bot_tokens_of_both_shapes_are_accepted(token: str) -> None:
    assert load_settings(**{**BASE, "slack_bot_token": token}, codearts_token="tok-3")


def test_an_empty_app_token_means_http_mode() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**{**BASE, "slack_signing_secret": ""}, codearts_token="tok-3",
                      slack_app_token="")
    assert any(p.startswith("SLACK_SIGNING_SECRET is not set") for p in caught.value.problems)
    assert not load_settings(**BASE, codearts_token="tok-3", slack_app_token="").socket_mode


def test_an_ellipsis_in_free_text_is_a_placeholder_but_other_characters_are_not() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**BASE, iam_user="…", iam_password="p", iam_domain="d", iam_project="p")
    assert caught.value.problems == [
        "IAM_USER is invalid: it contains '…' (HORIZONTAL ELLIPSIS), which no real value has: it "
        "looks pasted from an example; put the real value in."]
    assert load_settings(**BASE, iam_user="ü-user", iam_password="pässword", iam_domain="d",
                         iam_project="p").auth_method == "iam"


def test_every_problem_is_listed_at_once_even_when_a_field_fails() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(slack_bot_token="xoxb-…", codearts_endpoint="https://x",
                      database_url="buildbot.db", log_level="verbose")
    words = [p.split(" ", 1)[0] for p in caught.value.problems]
    assert words == ["SLACK_BOT_TOKEN", "DATABASE_URL", "LOG_LEVEL", "No", "SLACK_SIGNING_SECRET"]
