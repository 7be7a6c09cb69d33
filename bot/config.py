"""The jobs and permissions file (TOML) -> typed models, validated once at start.

A bad file stops the bot with every problem at once, each naming the file, the job and
the field, e.g. ``buildbot.toml: jobs.backend.params.codeBranch.default: "x" is not one
of choices ["master", "develop"]``. Unknown keys are errors (a typo such as ``user =``
must not silently drop a restriction), and so are wrong types: values are strings, and
a number or boolean where a string is expected is refused with a hint to quote it.

Who may run a job: admins always; otherwise ``users`` (``"*"`` = everyone) and members
of ``usergroups``. A job with no ``users`` and no ``usergroups`` can be run by admins
only. ``channels`` absent means any channel; see ``bot.policy`` for the full rules.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from bot.command import COMMAND_WORDS
from bot.rules import job_id_problem, param_name_problem, param_value_problem

_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)
PERSON_NAME_CHARS = 128  # the longest CodeArts user name [people] takes
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")  # a Slack user ID
_BAD_JOB_NAME = re.compile("[\\s=<>&`\"'\u201c-\u201f\u2018-\u201b]")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class ConfigError(Exception):
    """The jobs file is missing, unreadable or invalid; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _valid_param_name(name: str) -> str:
    problem = param_name_problem(name)
    if problem:
        raise ValueError(problem)
    return name


ParamName = Annotated[str, AfterValidator(_valid_param_name)]


class ParamSpec(BaseModel):
    """One declared parameter. Fields are validated in this order, so later ones see earlier."""

    model_config = _STRICT

    pattern: str | None = None
    choices: list[str] | None = None
    required: bool = False
    default: str | None = None

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"{_toml(v)} is not a valid regular expression: {exc}") from None
        return v

    @field_validator("choices")
    @classmethod
    def _choices_usable(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("an empty list accepts no value: list the values or remove choices")
        for choice in v:
            _check_value(choice, info.data.get("pattern"), None, what="choice")
        return v

    @field_validator("default")
    @classmethod
    def _default_usable(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None:
            _check_value(v, info.data.get("pattern"), info.data.get("choices"), what="default")
        return v


def _check_value(value: str, pattern: str | None, choices: list[str] | None, *, what: str) -> None:
    """A default or choice must be something a user could have sent."""
    problem = param_value_problem(what, value)
    if problem:
        raise ValueError(problem)
    if choices is not None and value not in choices:
        raise ValueError(f"{_toml(value)} is not one of choices {_toml(choices)}")
    if pattern is not None and not re.fullmatch(pattern, value):
        raise ValueError(f"{_toml(value)} does not match pattern {_toml(pattern)}")


# An example ID for each list of IDs, to show what belongs there.
ID_EXAMPLES = {"users": "U01ALICE", "admins": "U01ADMIN", "usergroups": "S01DEVS",
               "channels": "C01BUILDS", "approvers": "U01CAROL", "approver_groups": "S01LEADS"}


def _slack_ids(v: list[str], *, star: bool, example: str = "U01ALICE") -> list[str]:
    """Slack IDs are single words; ``*`` only means something in ``users``."""
    for item in v:
        if not item or any(c.isspace() for c in item):
            raise ValueError(f"{_toml(item)} is not a Slack ID: IDs have no spaces, "
                             f"e.g. {example}")
        if item == "*" and not star:
            raise ValueError('"*" is only allowed in users (it means everyone)')
    return v


class JobConfig(BaseModel):
    """One job: the name typed after /build, its CodeArts task, who may run it, its params.

    With no ``users`` and no ``usergroups`` the job is runnable by admins only.
    """

    model_config = _STRICT

    name: str
    id: str
    description: str = ""
    users: list[str] = Field(default_factory=list)
    usergroups: list[str] = Field(default_factory=list)
    channels: list[str] | None = None
    confirm: bool = True
    allow_extra_params: bool = False
    params: dict[ParamName, ParamSpec] = Field(default_factory=dict)
    # guard rails (see "approvals" below and bot.lifecycle.ApprovalRule)
    approvers: list[str] = Field(default_factory=list)
    approver_groups: list[str] = Field(default_factory=list)
    approvals: int | None = None
    approval_channel: str | None = None
    approval_ttl: str | None = None
    max_per_user_per_hour: int | None = None
    # one build at a time and a queue (bot.engine's "the queue")
    max_running: int | None = None
    queue_ttl: str | None = None
    check_codearts_running: bool = False

    @property
    def queue_ttl_seconds(self) -> float:
        return parse_duration(self.queue_ttl) if self.queue_ttl else DEFAULT_QUEUE_TTL

    @property
    def needs_approval(self) -> bool:
        return bool(self.approvers or self.approver_groups)

    @property
    def approval_ttl_seconds(self) -> float:
        return parse_duration(self.approval_ttl) if self.approval_ttl else DEFAULT_APPROVAL_TTL

    @field_validator("id")
    @classmethod
    def _job_id(cls, v: str) -> str:
        problem = job_id_problem(v)
        if problem:
            raise ValueError(problem)
        return v.lower()

    @field_validator("users")
    @classmethod
    def _users(cls, v: list[str]) -> list[str]:
        return _slack_ids(v, star=True)

    @field_validator("usergroups")
    @classmethod
    def _usergroups(cls, v: list[str]) -> list[str]:
        return _slack_ids(v, star=False, example=ID_EXAMPLES["usergroups"])

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("an empty list allows no channel: list channel IDs, or remove "
                             "channels to allow any channel")
        return v if v is None else _slack_ids(v, star=False, example=ID_EXAMPLES["channels"])

    # --- approvals ---------------------------------------------------------------
    # Fields are validated in the order declared, so these see approvers and groups.

    @field_validator("approvers")
    @classmethod
    def _approvers(cls, v: list[str]) -> list[str]:
        return _slack_ids(v, star=False, example=ID_EXAMPLES["approvers"])

    @field_validator("approver_groups")
    @classmethod
    def _approver_groups(cls, v: list[str]) -> list[str]:
        return _slack_ids(v, star=False, example=ID_EXAMPLES["approver_groups"])

    @field_validator("approvals")
    @classmethod
    def _approvals(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is None:
            return v
        if v < 1:
            raise ValueError(f"must be 1 or more, not {v}: it is how many distinct approvers "
                             "must approve; remove it for no approval")
        if "approvers" not in info.data or "approver_groups" not in info.data:
            return v  # their own problem is reported
        users, groups = info.data["approvers"], info.data["approver_groups"]
        if not users and not groups:
            raise ValueError(f"{v} approval(s) needed but nobody may approve: list approvers "
                             "(user IDs) or approver_groups, or remove approvals")
        if not groups and v > len(set(users)):
            raise ValueError(f"{v} approvals needed but only {len(set(users))} approver(s) "
                             "listed: list more approvers, add approver_groups, or lower it")
        return v

    @field_validator("approval_channel")
    @classmethod
    def _approval_channel(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        _slack_ids([v], star=False, example=ID_EXAMPLES["channels"])
        _only_with_approvers(info)
        return v

    @field_validator("approval_ttl")
    @classmethod
    def _approval_ttl(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        _ttl_in_range(v, MIN_APPROVAL_TTL, MAX_APPROVAL_TTL)
        _only_with_approvers(info)
        return v

    @field_validator("max_per_user_per_hour")
    @classmethod
    def _per_user(cls, v: int | None) -> int | None:
        return _per_hour(v)

    # --- one build at a time and a queue --------------------------------------------

    @field_validator("max_running")
    @classmethod
    def _max_running(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"must be 1 or more, not {v}: it is how many builds of the job "
                             "may run at once; remove it for no limit")
        return v

    @field_validator("queue_ttl")
    @classmethod
    def _queue_ttl(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        _ttl_in_range(v, MIN_QUEUE_TTL, MAX_QUEUE_TTL)
        _only_with_max_running(info)
        return v

    @field_validator("check_codearts_running")
    @classmethod
    def _check_running(cls, v: bool, info: ValidationInfo) -> bool:
        if v:
            _only_with_max_running(info)
        return v


DEFAULT_QUEUE_TTL = 3600.0  # a queued request waits this long for a free slot by default
MIN_QUEUE_TTL = 60.0
MAX_QUEUE_TTL = 24 * 3600.0


def _only_with_max_running(info: ValidationInfo) -> None:
    if "max_running" in info.data and info.data["max_running"] is None:
        raise ValueError("has no effect without max_running: set max_running = 1 (or more), "
                         "or remove it")


DEFAULT_APPROVAL_TTL = 3600.0  # an approval request stays answerable this long by default
MIN_APPROVAL_TTL = 60.0
MAX_APPROVAL_TTL = 24 * 3600.0
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(text: str) -> float:
    """``30m``, ``1h``, ``2h30m``, ``90s`` -> seconds; ValueError saying how to write it."""
    m = _DURATION.fullmatch(text.strip())
    if not text.strip() or m is None or not any(m.groups()):
        raise ValueError(f"{_toml(text)} is not a duration: write it like 30m, 1h or 2h30m")
    h, mins, secs = (int(g or 0) for g in m.groups())
    return float(h * 3600 + mins * 60 + secs)


def _ttl_in_range(text: str, low: float, high: float) -> None:
    """A duration key (approval_ttl, queue_ttl) within its bounds (both 1m to 24h)."""
    if not low <= parse_duration(text) <= high:
        raise ValueError(f"{_toml(text)} is out of range: give between 1m and 24h")


def _only_with_approvers(info: ValidationInfo) -> None:
    if "approvers" in info.data and "approver_groups" in info.data and not (
            info.data["approvers"] or info.data["approver_groups"]):
        raise ValueError("has no effect without approvers or approver_groups: list who may "
                         "approve, or remove it")


def _per_hour(v: int | None) -> int | None:
    if v is not None and v < 1:
        raise ValueError(f"must be 1 or more, not {v}: remove it for no limit")
    return v


class BuildbotConfig(BaseModel):
    """The whole file: admins (may run everything, and raw job IDs) and the jobs by name."""

    model_config = _STRICT

    admins: list[str] = Field(default_factory=list)
    max_per_user_per_hour: int | None = None  # the default for jobs that set none
    jobs: dict[str, JobConfig] = Field(default_factory=dict)
    # CodeArts user names (a build record's executor) -> Slack user IDs: "started by @x"
    people: dict[str, str] = Field(default_factory=dict)

    @field_validator("admins")
    @classmethod
    def _admins(cls, v: list[str]) -> list[str]:
        return _slack_ids(v, star=False, example=ID_EXAMPLES["admins"])

    @field_validator("people")
    @classmethod
    def _people(cls, v: dict[str, str]) -> dict[str, str]:
        """Each value a Slack user ID; each CodeArts name once, whatever its case (names
        are matched regardless of case). Two names may map to one person (two accounts)."""
        problems: list[str] = []
        seen: dict[str, str] = {}
        for name, user in v.items():
            if not name.strip() or len(name) > PERSON_NAME_CHARS \
                    or not all(c.isprintable() for c in name):
                problems.append(f"{_toml(name[:40])} is not a CodeArts user name: give the "
                                f"name builds show (printable, 1 to {PERSON_NAME_CHARS} "
                                "characters)")
            if not _USER_ID.fullmatch(user):
                problems.append(f"{_toml(name[:40])} = {_toml(user[:40])}: the value must be a "
                                "Slack user ID (U… or W…, e.g. \"U01ZHANG\"; in Slack: the "
                                "person's profile, ⋮, Copy member ID)")
            folded = name.strip().casefold()
            if folded in seen:
                problems.append(f"{_toml(seen[folded][:40])} and {_toml(name[:40])} are the "
                                "same CodeArts name (names are matched regardless of case): "
                                "keep one")
            seen.setdefault(folded, name)
        if problems:
            raise ValueError("; ".join(problems))
        return v

    def person(self, codearts_user: str | None) -> str | None:
        """The Slack user a CodeArts user name maps to (any case), or None."""
        if not codearts_user:
            return None
        folded = codearts_user.strip().casefold()
        return next((u for n, u in self.people.items() if n.strip().casefold() == folded),
                    None)

    @field_validator("max_per_user_per_hour")
    @classmethod
    def _per_user(cls, v: int | None) -> int | None:
        return _per_hour(v)


def config_warnings(config: BuildbotConfig) -> list[str]:
    """What a valid file allows that its author may not mean (``check-config`` and the log
    at start show each): an approval channel wider than the job's channels, and two job
    entries naming one build task."""
    lines = [(f"warning: jobs.{j.name}: approval_channel {j.approval_channel} is not one of "
              f"its channels ({', '.join(j.channels or [])}), so every parameter of each "
              f"request for {j.name} is posted in a channel wider than the job's: add it to "
              "channels, or choose one of them.")
             for j in config.jobs.values()
             if j.approval_channel and j.channels is not None
             and j.approval_channel not in j.channels]
    by_id: dict[str, list[str]] = {}
    for job in config.jobs.values():
        by_id.setdefault(job.id, []).append(job.name)
    lines += [(f"warning: jobs.{', jobs.'.join(names)} name the same build task ({job_id}): "
               "CodeArts keeps one history for it, so the builds of one entry can be seen "
               "(/build status) and stopped (/build stop) through the other's name. Stop and "
               "status check a build started from Slack against the entry it was started "
               "under, but a build started outside Slack belongs to every entry naming the "
               "task. Give each entry its own task unless both are meant for the same people "
               "and channels.")
              for job_id, names in by_id.items() if len(names) > 1]
    return lines


def load_config(path: str | Path) -> BuildbotConfig:
    """Read and validate the jobs file; raise ConfigError listing every problem."""
    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError([(f"{source}: file not found: create it (copy "
                            "examples/buildbot.toml to start), or point BUILDBOT_CONFIG (or "
                            "--config) at the jobs file.")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: not UTF-8 text (byte {exc.start}): save it as UTF-8."]
                          ) from None
    except OSError as exc:
        raise ConfigError([f"{source}: cannot be read: {exc.strerror or exc}."]) from None
    return parse_config(text, source=source)


def parse_config(text: str, *, source: str) -> BuildbotConfig:
    """Validate TOML text; ``source`` names the file in every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: not valid TOML: {exc}."]) from None
    data, problems = _with_job_names(data)
    config: BuildbotConfig | None = None
    try:
        config = BuildbotConfig.model_validate(data)
    except ValidationError as exc:
        problems += [_describe(err) for err in exc.errors()]
    if problems or config is None:
        raise ConfigError([f"{source}: {p}" for p in problems])
    return config


def _with_job_names(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Give each job table its name (the TOML key), checking names a user can type."""
    jobs = data.get("jobs")
    if not isinstance(jobs, dict):
        return data, []
    problems: list[str] = []
    named: dict[str, Any] = {}
    folded: dict[str, str] = {}
    for name, raw in jobs.items():
        problems += _job_name_problems(name, folded)
        if isinstance(raw, dict):
            if "name" in raw:
                problems.append(f"{_loc(('jobs', name, 'name'))}: unknown key: the job's name "
                                "is its table name; remove it.")
            raw = {**{k: v for k, v in raw.items() if k != "name"}, "name": name}
        named[name] = raw
    return {**data, "jobs": named}, problems


def _job_name_problems(name: str, folded: dict[str, str]) -> list[str]:
    """A job name must be one word a user can type, distinct from the command words (help,
    list, status, ...) and other names."""
    where = _loc(("jobs", name))
    problems: list[str] = []
    if not name or _BAD_JOB_NAME.search(name):
        problems.append(f"{where}: a job name must be one word without spaces, quotes, "
                        "=, <, >, & or `: rename the table.")
    if name.casefold() in COMMAND_WORDS:
        problems.append(f"{where}: `{name}` is a /build command word: rename the job.")
    other = folded.setdefault(name.casefold(), name)
    if other != name:
        problems.append(f"{where}: differs from jobs.{_key(other)} only in case: rename one.")
    return problems


# ---------------------------------------------------------------- error messages

_FIELDS: dict[int, tuple[str, ...]] = {
    0: ("admins", "max_per_user_per_hour", "jobs", "people"),
    2: ("id", "description", "users", "usergroups", "channels", "confirm",
        "allow_extra_params", "params", "approvers", "approver_groups", "approvals",
        "approval_channel", "approval_ttl", "max_per_user_per_hour", "max_running",
        "queue_ttl", "check_codearts_running"),
    4: ("default", "choices", "pattern", "required"),
}


def _describe(err: Mapping[str, Any]) -> str:
    """One pydantic error as ``jobs.backend.field: what is wrong and how to fix it``."""
    loc = tuple(p for p in err["loc"] if p != "[key]")
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        allowed = ", ".join(_FIELDS.get(len(loc) - 1, ()))
        return f"{_loc(loc)}: unknown key: check its spelling (allowed here: {allowed})."
    if kind == "missing":
        return f"{_loc(loc)}: missing: add it."
    if kind == "string_type":
        hint = f': quote it ("{_plain(value)}")' if _is_scalar(value) else ""
        return f"{_loc(loc)}: must be a string, not {_what(value)}{hint}."
    if kind == "int_type":
        return f"{_loc(loc)}: must be a whole number (no quotes), not {_what(value)}."
    if kind == "bool_type":
        return f"{_loc(loc)}: must be true or false (no quotes), not {_what(value)}."
    if kind == "list_type":
        example = ID_EXAMPLES.get(str(loc[-1]) if loc else "", "U01ALICE")
        if loc and loc[-1] == "choices":
            example = "master"
        return f'{_loc(loc)}: must be a list of strings, e.g. ["{example}"], not {_what(value)}.'
    if kind in ("dict_type", "model_type"):
        return f"{_loc(loc)}: must be a table, not {_what(value)}."
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{_loc(loc)}: {msg}" + ("" if msg.endswith(".") else ".")


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + _key(str(part))
    return out or "(top level)"


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _toml(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, bool)) or type(value).__module__ == "datetime"


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _what(value: Any) -> str:
    """A TOML-ish description of a value, to say what was found instead."""
    if isinstance(value, bool):
        return f"the boolean {_plain(value)}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {_toml(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"the date {_plain(value)}"
