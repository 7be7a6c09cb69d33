"""Environment -> Settings: one typed model, validated once at start.

Each field is read from the environment variable of the same name in upper case
(``slack_bot_token`` from ``SLACK_BOT_TOKEN``); the README's configuration table lists
them. Secrets are ``SecretStr`` so a repr, a log line or a validation error never shows
their values.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

AuthMethod = Literal["token", "iam", "aksk"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LOG_LEVELS: tuple[LogLevel, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# What BUILD_LINK_TEMPLATE may use, each as a bare {name}.
LINK_PLACEHOLDERS = ("job_id", "build_no", "daily_build_number", "project_id")


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
    # Optional: how to link to a build in the console, filled by format_build_link.
    # Placeholders: {job_id} {build_no} {daily_build_number} {project_id}, checked at start.
    build_link_template: str | None = None
    # How long one replica holds a watch while checking it; a dead replica's
    # watches are taken over after this (default: max(60 s, 4 polls)).
    watch_lease_seconds: float | None = Field(default=None, gt=0, le=3600)
    intent_grace_seconds: float = Field(default=180.0, gt=0, le=3600)
    audit_keep_days: float = Field(default=90.0, gt=0, le=36500)
    metrics: bool = False  # serve /metrics (Prometheus text format) on the HTTP port
    # How many threads do slow work after the ack (confirmations, API calls).
    worker_threads: int = Field(default=8, ge=1, le=64)
    # How many threads the build watcher uses to poll CodeArts.
    watcher_threads: int = Field(default=8, ge=1, le=64)
    log_level: LogLevel = "INFO"
    # HTTP mode: seconds a connection may take to deliver a whole request (headers and
    # body), counted from its accept or its previous answer; slower ones are closed.
    http_request_timeout: float = Field(default=10.0, gt=0, le=300)
    # HTTP mode: open client connections at most; when all are taken, the one that has
    # waited longest for its request is closed to make room.
    http_max_connections: int = Field(default=1000, ge=10, le=50_000)

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

    @field_validator("build_link_template")
    @classmethod
    def _link_template(cls, v: str | None) -> str | None:
        problem = None if v is None else link_template_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, v: object) -> object:
        """Any letter case; a level is not a secret, so the message may repeat it."""
        level = v.strip().upper() if isinstance(v, str) else v
        if level not in LOG_LEVELS:
            raise ValueError(f"{v!r} is not a log level: use one of {', '.join(LOG_LEVELS)}")
        return level

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


def link_template_problem(template: str) -> str | None:
    """Why ``template`` cannot be a build link template, or None.

    Only the bare placeholders in ``LINK_PLACEHOLDERS`` are allowed: no positional
    ``{}``, no attribute or index access (``{job_id.__class__}``), no conversion or
    format spec. Literal braces are written ``{{`` and ``}}``.
    """
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        return f"it is not a valid template ({exc}): write {{{{ and }}}} for a literal brace"
    allowed = ", ".join("{" + name + "}" for name in LINK_PLACEHOLDERS)
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if name not in LINK_PLACEHOLDERS or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (
                f":{spec}" if spec else "") + "}"
            return f"{shown} is not a placeholder it may use: use only {allowed}"
    return None


def format_build_link(template: str, *, job_id: str, build_no: str, daily_build_number: str,
                      project_id: str) -> str:
    """Fill a build link template; each value is percent-encoded so it cannot break the URL
    (or the Slack link around it). Raises ValueError for a template ``Settings`` would refuse."""
    problem = link_template_problem(template)
    if problem:
        raise ValueError(f"BUILD_LINK_TEMPLATE: {problem}")
    values = {"job_id": job_id, "build_no": build_no, "daily_build_number": daily_build_number,
              "project_id": project_id}
    return template.format(**{k: quote(str(v), safe="") for k, v in values.items()})


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
