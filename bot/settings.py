"""Environment -> Settings: one typed model, validated once at start.

Each field is read from the environment variable of the same name in upper case
(``slack_bot_token`` from ``SLACK_BOT_TOKEN``); the README's configuration table lists
them. Secrets are ``SecretStr`` so a repr, a log line or a validation error never shows
their values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

AuthMethod = Literal["token", "iam", "aksk"]


class SettingsError(Exception):
    """The environment is missing or contradicts itself; the text names variables, never values."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class Settings(BaseSettings):
    """Everything the bot reads from its environment."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, hide_input_in_errors=True)

    slack_bot_token: SecretStr
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    port: int = Field(default=3000, ge=1, le=65535)
    buildbot_config: Path = Path("buildbot.toml")
    database_url: str = "sqlite:///buildbot.db"

    codearts_endpoint: str
    codearts_token: SecretStr | None = None
    iam_endpoint: str = "https://iam.myhuaweicloud.com"
    iam_user: str | None = None
    iam_password: SecretStr | None = None
    iam_domain: str | None = None
    iam_project: str | None = None
    cloud_sdk_ak: SecretStr | None = None
    cloud_sdk_sk: SecretStr | None = None
    codearts_project_id: str | None = None

    build_poll_seconds: float = Field(default=15.0, gt=0, le=3600)
    # Optional: how to link to a build in the console.
    # Placeholders: {job_id} {build_no} {daily_build_number} {project_id}.
    build_link_template: str | None = None
    # How long one replica holds a watch while checking it; a dead replica's
    # watches are taken over after this (default: max(60 s, 4 polls)).
    watch_lease_seconds: float | None = Field(default=None, gt=0, le=3600)
    # How many threads do slow work after the ack (confirmations, API calls).
    worker_threads: int = Field(default=8, ge=1, le=64)

    @field_validator("slack_api_url")
    @classmethod
    def _slash(cls, v: str) -> str:
        return v if v.endswith("/") else v + "/"

    @field_validator("codearts_endpoint", "iam_endpoint")
    @classmethod
    def _no_slash(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with https:// (or http:// for a local stand-in)")
        return v

    @model_validator(mode="after")
    def _one_auth_method(self) -> Settings:
        problems = _auth_problems(self)
        if problems:
            raise ValueError(" ".join(problems))
        return self

    @property
    def auth_method(self) -> AuthMethod:
        if self.codearts_token is not None:
            return "token"
        if self.iam_user is not None:
            return "iam"
        return "aksk"

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None


def _set(v: object) -> bool:
    if isinstance(v, SecretStr):
        return bool(v.get_secret_value())
    return bool(v)


def _auth_problems(s: Settings) -> list[str]:
    token = _set(s.codearts_token)
    iam_vars = {
        "IAM_USER": s.iam_user, "IAM_PASSWORD": s.iam_password,
        "IAM_DOMAIN": s.iam_domain, "IAM_PROJECT": s.iam_project,
    }
    aksk_vars = {"CLOUD_SDK_AK": s.cloud_sdk_ak, "CLOUD_SDK_SK": s.cloud_sdk_sk,
                 "CODEARTS_PROJECT_ID": s.codearts_project_id}
    iam = any(_set(v) for v in iam_vars.values())
    aksk = any(_set(v) for k, v in aksk_vars.items() if k != "CODEARTS_PROJECT_ID")
    chosen = [name for name, on in (("CODEARTS_TOKEN", token), ("IAM_USER/IAM_PASSWORD", iam),
                                    ("CLOUD_SDK_AK/CLOUD_SDK_SK", aksk)) if on]
    problems: list[str] = []
    if not chosen:
        problems.append("No CodeArts authentication is set: set CODEARTS_TOKEN, or IAM_USER, "
                        "IAM_PASSWORD, IAM_DOMAIN and IAM_PROJECT, or CLOUD_SDK_AK, "
                        "CLOUD_SDK_SK and CODEARTS_PROJECT_ID.")
    elif len(chosen) > 1:
        problems.append(f"Two CodeArts authentication methods are set ({' and '.join(chosen)}): "
                        "keep exactly one.")
    elif iam:
        problems += [f"{k} is not set (IAM password login needs it)."
                     for k, v in iam_vars.items() if not _set(v)]
    elif aksk:
        problems += [f"{k} is not set (AK/SK signing needs it)."
                     for k, v in aksk_vars.items() if not _set(v)]
    return problems


def load_settings(**overrides: object) -> Settings:
    """Build Settings from the environment (plus overrides); raise SettingsError naming variables."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError([_describe(err) for err in exc.errors()]) from None
    if not settings.socket_mode and not _set(settings.slack_signing_secret):
        raise SettingsError([("SLACK_SIGNING_SECRET is not set: HTTP mode needs it to verify "
                              "requests from Slack (or set SLACK_APP_TOKEN for Socket Mode).")])
    return settings


def _describe(err: object) -> str:
    loc = err["loc"]  # type: ignore[index]
    msg = str(err["msg"])  # type: ignore[index]
    if not loc:  # a model-level check: its message already names the variables
        return msg.removeprefix("Value error, ")
    name = str(loc[0]).upper()
    if err["type"] == "missing":  # type: ignore[index]
        return f"{name} is not set."
    return f"{name} is invalid: {msg.removeprefix('Value error, ')}."
