"""Settings from the environment: fail fast, name the variable, never show a value."""

from __future__ import annotations

import pytest

from bot.settings import SettingsError, load_settings

BASE = {"slack_bot_token": "xoxb-secret-1", "codearts_endpoint": "https://cb.example.com/",
        "slack_signing_secret": "sign-secret-2"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith(("SLACK_", "CODEARTS_", "IAM_", "CLOUD_SDK_", "BUILD", "DATABASE_")):
            monkeypatch.delenv(key)


@pytest.mark.parametrize("extra,words", [
    ({}, ["No CodeArts authentication"]),
    ({"codearts_token": "tok-3", "iam_user": "u"}, ["Two CodeArts authentication methods"]),
    ({"codearts_token": "tok-3", "cloud_sdk_ak": "ak"}, ["Two CodeArts authentication methods"]),
    ({"iam_user": "u", "iam_password": "pw-4"}, ["IAM_DOMAIN is not set", "IAM_PROJECT is not set"]),
    ({"cloud_sdk_ak": "ak", "cloud_sdk_sk": "sk-5"}, ["CODEARTS_PROJECT_ID is not set"]),
    ({"codearts_token": "tok-3", "codearts_endpoint": "cb.example.com"}, ["CODEARTS_ENDPOINT"]),
    ({"codearts_token": "tok-3", "port": "0"}, ["PORT is invalid"]),
    ({"codearts_token": "tok-3", "build_poll_seconds": "-1"}, ["BUILD_POLL_SECONDS is invalid"]),
    ({"codearts_token": "tok-3", "slack_signing_secret": None}, ["SLACK_SIGNING_SECRET is not set"]),
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


def test_socket_mode_needs_no_signing_secret() -> None:
    settings = load_settings(slack_bot_token="xoxb-1", codearts_endpoint="https://x",
                             codearts_token="t", slack_app_token="xapp-1")
    assert settings.socket_mode


def test_settings_are_read_from_their_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
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
