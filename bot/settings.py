"""Environment -> Settings: one typed model, validated once at start.

Each field is read from the environment variable of the same name in upper case
(``slack_bot_token`` from ``SLACK_BOT_TOKEN``); the README's configuration table lists
them. Secrets are ``SecretStr`` so a repr, a log line or a validation error never shows
their values.
"""

from __future__ import annotations

import os
import string
import unicodedata
from pathlib import Path
from typing import Literal, NamedTuple
from urllib.parse import quote

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.slack_budget import parse_limits

AuthMethod = Literal["token", "iam", "aksk"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LOG_LEVELS: tuple[LogLevel, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# What BUILD_LINK_TEMPLATE may use, each as a bare {name}.
LINK_PLACEHOLDERS = ("job_id", "build_no", "daily_build_number", "project_id")
# Values that are never anything but printable ASCII without spaces: a character outside that
# (an ellipsis, a curly quote, a space) was pasted from an example or a document.
TOKENS = ("slack_bot_token", "slack_app_token", "slack_signing_secret", "codearts_token",
          "cloud_sdk_ak", "cloud_sdk_sk", "codearts_project_id", "codearts_webhook_secret")
WEBHOOK_SECRET_MIN = 16  # characters of CODEARTS_WEBHOOK_SECRET at least
URLS = ("slack_api_url", "codearts_endpoint", "iam_endpoint", "database_url")
# Free text: only the ellipsis of a placeholder ("IAM_USER=…") is refused.
TEXTS = ("iam_user", "iam_password", "iam_domain", "iam_project", "build_link_template")
# Slack's token prefixes (a rotating bot token starts "xoxe.xoxb-").
BOT_TOKEN_PREFIXES = ("xoxb-", "xoxe.xoxb-")
SLACK_TOKENS = ("slack_bot_token", "slack_app_token")  # their prefixes are checked too
APP_TOKEN_PREFIX = "xapp-"
# Set but empty, these mean unset: SLACK_APP_TOKEN= is HTTP mode, CODEARTS_WEBHOOK_SECRET= no
# webhook.
EMPTY_MEANS_UNSET = ("slack_app_token", "codearts_webhook_secret")
DATABASE_HINT = "e.g. sqlite:///buildbot.db (a file here) or postgresql://user@host/db"
# Said after "X is not set", to say where the value comes from.
MISSING_HINTS = {
    "SLACK_BOT_TOKEN": ("copy the Bot User OAuth Token (xoxb-...) from your Slack app's "
                        "OAuth & Permissions page"),
    "CODEARTS_ENDPOINT": ("the CodeArts Build endpoint of your region, e.g. "
                          "https://cloudbuild-ext.cn-north-4.myhuaweicloud.com"),
}


class SettingsError(Exception):
    """The environment is missing or contradicts itself; the text names variables, never values."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class Settings(BaseSettings):
    """Everything the bot reads from its environment."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False,
                                      hide_input_in_errors=True)

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
    # Live progress: at most one update of a running build's channel message per this
    # many seconds (0: the message is not updated while the build runs).
    progress_update_seconds: float = Field(default=10.0, ge=0, le=3600)
    # Lines of the log shown under a failed or stopped build's result (0: none).
    log_tail_lines: int = Field(default=30, ge=0, le=200)
    intent_grace_seconds: float = Field(default=120.0, gt=0, le=3600)
    audit_keep_days: float = Field(default=90.0, gt=0, le=36500)
    metrics: bool = False  # serve /metrics (Prometheus text format) on the HTTP port
    # How many threads do slow work after the ack (confirmations, API calls).
    worker_threads: int = Field(default=8, ge=1, le=64)
    # How many threads the build watcher uses to poll CodeArts.
    watcher_threads: int = Field(default=8, ge=1, le=64)
    # Slack's rate limits the bot paces its calls by, calls a minute per method (for
    # chat.postMessage, per channel), over Slack's documented values: for example
    # "chat.update=40,chat.postMessage=30". Replicas split them.
    slack_rate_limits: str | None = None
    log_level: LogLevel = "INFO"
    # HTTP mode: seconds a connection may take to deliver a whole request (headers and
    # body), counted from its accept or its previous answer; slower ones are closed.
    http_request_timeout: float = Field(default=10.0, gt=0, le=300)
    # HTTP mode: open client connections at most; when all are taken, the one that has
    # waited longest for its request is closed to make room.
    http_max_connections: int = Field(default=1000, ge=10, le=50_000)
    # HTTP mode: turns on POST /codearts/events (CodeArts' generic webhook, a nudge to poll
    # now); calls must carry it in the X-Buildbot-Secret header. Unset or empty: off (404).
    codearts_webhook_secret: SecretStr | None = None
    # Socket Mode: serve /healthz, /readyz and (with METRICS) /metrics on this port. Unset or
    # empty: off. HTTP mode serves them on PORT, so there it is refused.
    health_port: int | None = Field(default=None, ge=1, le=65535)

    @field_validator("health_port", mode="before")
    @classmethod
    def _health_port(cls, v: object, info: ValidationInfo) -> object:
        if isinstance(v, str) and not v.strip():
            return None
        # slack_app_token is absent from info.data when it was invalid: said once, for it
        if v is not None and "slack_app_token" in info.data \
                and info.data["slack_app_token"] is None:
            raise ValueError("it is for Socket Mode only, and SLACK_APP_TOKEN is not set: in "
                             "HTTP mode /healthz, /readyz and /metrics are served on PORT; "
                             "unset HEALTH_PORT")
        return v

    @field_validator(*TOKENS, *URLS, *TEXTS, mode="before")
    @classmethod
    def _pasted(cls, v: object, info: ValidationInfo) -> object:
        """No placeholder or stray character; checked before anything is sent anywhere."""
        text = v.get_secret_value() if isinstance(v, SecretStr) else v
        name = info.field_name or ""
        if text == "" and name in EMPTY_MEANS_UNSET:
            return None
        if not isinstance(text, str):
            return v
        if name in URLS:  # spaces around a URL are dropped; inside one they are an error
            v = text = text.strip()
        problem = _text_problem(name, text)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("codearts_webhook_secret")
    @classmethod
    def _webhook_secret(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < WEBHOOK_SECRET_MIN:
            raise ValueError(f"it is too short: use at least {WEBHOOK_SECRET_MIN} random "
                             "characters, e.g. the output of `openssl rand -hex 32`")
        return v

    @field_validator("slack_api_url")
    @classmethod
    def _slash(cls, v: str) -> str:
        return v if v.endswith("/") else v + "/"

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str) -> str:
        problem = database_url_problem(v)
        if problem:
            raise ValueError(problem)
        return v

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

    @field_validator("slack_rate_limits")
    @classmethod
    def _rate_limits(cls, v: str | None) -> str | None:
        parse_limits(v)  # raises ValueError naming the pair it cannot read
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


def _noun(field: str) -> str:
    if field in URLS:
        return "URL"
    if field.endswith("token"):
        return "token"
    return "secret" if field.endswith(("secret", "_sk")) else "value"


def _text_problem(field: str, text: str) -> str | None:
    """What is wrong with the text of ``field``: pasted from an example, or (for a Slack
    token) of the wrong kind."""
    problem = pasted_problem(text, strict=field not in TEXTS, what=_noun(field))
    if problem is None and field in SLACK_TOKENS and text:
        problem = slack_token_problem(field.upper(), text)
    return problem


def pasted_problem(value: str, *, strict: bool, what: str = "value") -> str | None:
    """Why ``value`` looks pasted from an example rather than real, or None. It never quotes
    the value (it may be a secret), only the character that gave it away. ``strict``: the
    value is printable ASCII without spaces (tokens, keys, URLs), so any other character
    gives it away; otherwise only the ellipsis of a placeholder does."""
    char = next((char for char in value if _gives_away(char, strict=strict)), None)
    if char is not None:
        return (f"it contains {_shown(char)}, which no real {what} has: it looks pasted from "
                f"an example; put the real {what} in")
    if strict and what != "URL" and _looks_like_placeholder(value):
        return f"it looks like a placeholder (\"...\" or \"<...>\"): put the real {what} in"
    return None


def _gives_away(char: str, *, strict: bool) -> bool:
    """Whether ``char`` shows a value was pasted: an ellipsis always; in a strict value also
    a space, a line break or anything but printable ASCII."""
    if char == "\u2026":
        return True
    return strict and (char.isspace() or not (char.isascii() and char.isprintable()))


def _shown(char: str) -> str:
    """A character named for a message: spaces and line breaks alike, others by Unicode name."""
    if char.isspace():
        return "a space or line break"
    return f"{char!r} ({unicodedata.name(char, f'U+{ord(char):04X}')})"


def _looks_like_placeholder(value: str) -> bool:
    return "..." in value or value.startswith("<")


def slack_token_problem(name: str, token: str) -> str | None:
    """The token's shape, checked locally: a bot token starts ``xoxb-``, an app-level token
    ``xapp-``."""
    if name == "SLACK_BOT_TOKEN" and not token.startswith(BOT_TOKEN_PREFIXES):
        if token.startswith(APP_TOKEN_PREFIX):
            return ("it is an app-level token (xapp-...): put the Bot User OAuth Token "
                    "(xoxb-...) here, and the app-level token in SLACK_APP_TOKEN")
        if token.startswith("xoxp-"):
            return ("it is a user token (xoxp-...): buildbot needs the Bot User OAuth Token "
                    "(xoxb-...) from the app's OAuth & Permissions page")
        return ("a bot token starts with xoxb-: copy the Bot User OAuth Token from the app's "
                "OAuth & Permissions page")
    if name == "SLACK_APP_TOKEN" and not token.startswith(APP_TOKEN_PREFIX):
        if token.startswith(BOT_TOKEN_PREFIXES):
            return ("it is a bot token (xoxb-...): an app-level token starts with xapp- "
                    "(Basic Information > App-Level Tokens); unset it for HTTP mode")
        return ("an app-level token starts with xapp-: create one with connections:write "
                "under Basic Information > App-Level Tokens, or unset it for HTTP mode")
    return None


def database_url_problem(url: str) -> str | None:
    """Whether SQLAlchemy can read ``url`` as a SQLite or PostgreSQL URL (never quoted: it
    may hold a password)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        backend = make_url(url).get_backend_name()
    except (ArgumentError, ValueError):
        return f"it is not a database URL: use one, {DATABASE_HINT}"
    if backend not in ("sqlite", "postgresql", "postgres"):
        return f"buildbot stores its state in SQLite or PostgreSQL, not {backend}: {DATABASE_HINT}"
    return None


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


class _AuthMethod(NamedTuple):
    """One way to authenticate to CodeArts, and the variables it takes."""

    named: str                   # how it is named when two methods are set
    chosen_by: tuple[str, ...]   # setting any of these fields chooses it
    needs: tuple[str, ...]       # once chosen, every one of these must be set
    purpose: str                 # "<NEEDED> is not set (<purpose> needs it)."


_IAM_FIELDS = ("iam_user", "iam_password", "iam_domain", "iam_project")
AUTH_METHODS = (
    _AuthMethod("CODEARTS_TOKEN", ("codearts_token",), ("codearts_token",), "a token"),
    _AuthMethod("IAM_USER/IAM_PASSWORD", _IAM_FIELDS, _IAM_FIELDS, "IAM password login"),
    _AuthMethod("CLOUD_SDK_AK/CLOUD_SDK_SK", ("cloud_sdk_ak", "cloud_sdk_sk"),
                ("cloud_sdk_ak", "cloud_sdk_sk", "codearts_project_id"), "AK/SK signing"),
)
NO_AUTH = ("No CodeArts authentication is set: set CODEARTS_TOKEN, or IAM_USER, IAM_PASSWORD, "
           "IAM_DOMAIN and IAM_PROJECT, or CLOUD_SDK_AK, CLOUD_SDK_SK and CODEARTS_PROJECT_ID.")


def _auth_problems(s: Settings) -> list[str]:
    """Exactly one CodeArts authentication method, with every variable it needs."""
    chosen = [method for method in AUTH_METHODS
              if any(_set(getattr(s, field)) for field in method.chosen_by)]
    if not chosen:
        return [NO_AUTH]
    if len(chosen) > 1:
        named = " and ".join(method.named for method in chosen)
        return [f"Two CodeArts authentication methods are set ({named}): keep exactly one."]
    method = chosen[0]
    return [f"{field.upper()} is not set ({method.purpose} needs it)."
            for field in method.needs if not _set(getattr(s, field))]


def load_settings(**overrides: object) -> Settings:
    """Build Settings from the environment (plus overrides); raise SettingsError naming
    variables, every problem at once: those of each variable and those between them (the
    CodeArts authentication, the signing secret, a swapped pair of Slack tokens)."""
    raw = _raw(overrides)
    settings, problems = _validated(overrides)
    problems += _auth_problems(_RawView(raw))  # type: ignore[arg-type]
    problems += _signing_problems(raw)
    problems = _said_swapped(raw, problems)
    if problems or settings is None:
        raise SettingsError(problems)
    return settings


def _validated(overrides: dict[str, object]) -> tuple[Settings | None, list[str]]:
    """The Settings, or None and the problems of each variable."""
    try:
        return Settings(**overrides), []  # type: ignore[arg-type]
    except ValidationError as exc:
        # the model-level check (the auth method) did not run if a field failed; it is
        # checked from the raw values either way, so it is said once
        return None, [_describe(err) for err in exc.errors() if err["loc"]]


def _signing_problems(raw: dict[str, str]) -> list[str]:
    """HTTP mode (no app-level token) verifies Slack's requests with the signing secret."""
    if raw.get("slack_app_token") or raw.get("slack_signing_secret"):
        return []
    return ["SLACK_SIGNING_SECRET is not set: HTTP mode needs it to verify requests from "
            "Slack (or set SLACK_APP_TOKEN for Socket Mode)."]


def _said_swapped(raw: dict[str, str], problems: list[str]) -> list[str]:
    """Two Slack tokens in each other's place are said as one swap, first, instead of a
    problem with each."""
    bot, app = raw.get("slack_bot_token", ""), raw.get("slack_app_token", "")
    if not (bot.startswith(APP_TOKEN_PREFIX) and app.startswith(BOT_TOKEN_PREFIXES)):
        return problems
    kept = [p for p in problems
            if not p.startswith(("SLACK_BOT_TOKEN is invalid", "SLACK_APP_TOKEN is invalid"))]
    return ["SLACK_BOT_TOKEN and SLACK_APP_TOKEN are swapped: the bot token (xoxb-...) goes "
            "in SLACK_BOT_TOKEN, the app-level token (xapp-...) in SLACK_APP_TOKEN.", *kept]


def _raw(overrides: dict[str, object]) -> dict[str, str]:
    """The values Settings reads, as text (the environment, case-insensitively, then the
    overrides), to check what lies between variables even when one of them is invalid."""
    names = set(Settings.model_fields)
    raw = {k.lower(): v for k, v in os.environ.items() if k.lower() in names}
    for key, value in overrides.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    return raw


class _RawView:
    """Raw values with the attribute names ``_auth_problems`` reads."""

    def __init__(self, raw: dict[str, str]) -> None:
        self._raw = raw

    def __getattr__(self, name: str) -> str | None:
        return self._raw.get(name) or None


def _describe(err: object) -> str:
    loc = err["loc"]  # type: ignore[index]
    msg = str(err["msg"])  # type: ignore[index]
    if not loc:  # a model-level check: its message already names the variables
        return msg.removeprefix("Value error, ")
    name = str(loc[0]).upper()
    if err["type"] == "missing":  # type: ignore[index]
        hint = MISSING_HINTS.get(name)
        return f"{name} is not set: {hint}." if hint else f"{name} is not set."
    return f"{name} is invalid: {msg.removeprefix('Value error, ')}."
