"""Who may run what, with which values: every check of a command in one place. Pure.

``decide`` turns a parsed command into either the exact body for ``POST /v3/jobs/build``
or the list of problems, each a sentence saying what to change. Problems are plain text
(backticks only) and may contain user input: escape them before putting them in mrkdwn.

Decisions:

* Admins may run every job and raw 32-character job IDs. A raw ID runs with no declared
  parameters (any name=value passes if the API accepts it) and always asks to confirm.
* A job's ``channels`` applies to everyone, admins included; an admin who must run it
  elsewhere can use its raw ID, which has no channel list.
* A job with no ``users`` and no ``usergroups`` can be run by admins only.
* User groups are asked only when ``users`` did not already allow the user. If a group's
  membership is unknown and no other rule allows the user, the answer is a denial saying
  membership could not be checked (try again later), never a silent allow.
* Permission problems come first; a user who may not run the job learns nothing about
  its parameters.
* The API's value rules (``bot.rules``) apply to admins and to undeclared parameters too.
* A job name, parameter name, value or tag holding an invisible or reordering character
  (``bot.rules.hidden_problem``) is refused, saying which value and which character: in
  ``decide``, so the typed command and the form are checked alike.
* A declared parameter with ``required = true`` needs a non-empty value (its default counts).
* A job with ``approvers`` or ``approver_groups`` starts only after that many distinct
  approvals (``approval_rule``), admins' requests included; its raw ID needs the same.
* ``max_per_user_per_hour`` (the job's, else the file's) caps each user's builds of a
  job in any hour (``per_user_limit``); admins are exempt. The count is in the store,
  so the flow checks it (``over_limit_problem`` words the refusal).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Protocol

from bot.command import BuildCommand
from bot.config import BuildbotConfig, JobConfig, ParamSpec
from bot.lifecycle import ApprovalRule
from bot.rules import (
    JOB_ID_RE,
    commit_problem,
    hidden_problem,
    param_name_problem,
    param_value_problem,
    show,
    tag_problem,
    visible,
)


class UserGroups(Protocol):
    """Where Slack user-group membership comes from (the Slack API, a cache, a test)."""

    def members(self, group_id: str) -> frozenset[str] | None:
        """The group's member IDs, or None when membership could not be found out."""
        ...


class StaticUserGroups:
    """Fixed membership for explain and tests: None knows nothing, else absent groups are empty."""

    def __init__(self, mapping: dict[str, set[str]] | None = None) -> None:
        self._mapping = mapping

    def members(self, group_id: str) -> frozenset[str] | None:
        if self._mapping is None:
            return None
        return frozenset(self._mapping.get(group_id, ()))


@dataclass(frozen=True)
class Approved:
    """The build may start; ``body`` is exactly what ``POST /v3/jobs/build`` gets."""

    job_name: str
    job_id: str
    description: str
    confirm: bool
    body: dict[str, Any]
    approval: ApprovalRule | None = None  # None: starts without a second person


@dataclass(frozen=True)
class Denied:
    """The build may not start; each problem names the rule and how to fix the input.

    ``fields`` (when given) says, for each problem in order, the parameter it is about
    (``commit`` and ``tag`` for those), or None for a problem with no one field (a
    permission, the job name): the build form shows each problem on its field."""

    problems: tuple[str, ...]
    fields: tuple[str | None, ...] = ()

    def on_fields(self) -> list[tuple[str | None, str]]:
        """Each problem with the field it is about (None when not known)."""
        fields = self.fields if len(self.fields) == len(self.problems) else \
            (None,) * len(self.problems)
        return list(zip(fields, self.problems, strict=True))


# ---------------------------------------------------------------- permissions


def is_admin(config: BuildbotConfig, user_id: str) -> bool:
    """Admins may run every job and raw job IDs."""
    return user_id in config.admins


def channel_allowed(job: JobConfig, channel_id: str) -> bool:
    """A job's channel list binds everyone, admins included; no list means any channel."""
    return job.channels is None or channel_id in job.channels


def user_allowed(config: BuildbotConfig, job: JobConfig, user_id: str,
                 usergroups: UserGroups) -> bool | None:
    """True/False, or None when only an unknown group membership could have allowed the user."""
    if is_admin(config, user_id) or "*" in job.users or user_id in job.users:
        return True
    unknown = False
    for group in job.usergroups:
        members = usergroups.members(group)
        if members is None:
            unknown = True
        elif user_id in members:
            return True
    return None if unknown else False


def runnable_jobs(config: BuildbotConfig, *, user_id: str, channel_id: str,
                  usergroups: UserGroups) -> list[JobConfig]:
    """The jobs this user may run in this channel (for ``/build list`` and help)."""
    return [job for job in config.jobs.values()
            if channel_allowed(job, channel_id)
            and user_allowed(config, job, user_id, usergroups) is True]


def _permission_problems(config: BuildbotConfig, job: JobConfig, user_id: str,
                         channel_id: str, usergroups: UserGroups) -> list[str]:
    """Why this user may not run this job here; empty when allowed."""
    allowed = user_allowed(config, job, user_id, usergroups)
    if allowed is None:
        return [(f"Your membership of the user groups allowed to run `{job.name}` could not be "
                "checked: try again later.")]
    if not allowed and not job.users and not job.usergroups:
        return [f"`{job.name}` can be run by admins only: ask an admin to run it."]
    if not allowed:
        return [(f"You may not run `{job.name}`: ask an admin to add you to its users or "
                "user groups.")]
    if not channel_allowed(job, channel_id):
        channels = job.channels or []
        where = (f"its channel ({channels[0]})" if len(channels) == 1 else
                 f"one of its channels ({', '.join(channels)})")
        return [f"`{job.name}` cannot be run in this channel: run it in {where}."]
    return []


# ---------------------------------------------------------------- the decision


def decide(config: BuildbotConfig, command: BuildCommand, *, user_id: str, channel_id: str,
           usergroups: UserGroups) -> Approved | Denied:
    """Check everything before anything is sent; return the exact body or every problem."""
    hidden = hidden_problem(f"The job name `{visible(command.job)}`", command.job)
    if hidden:
        return Denied((hidden,))
    matches = _matching_jobs(config, command.job)
    if len(matches) > 1:
        names = ", ".join(f"`{j.name}`" for j in matches)
        return Denied(((f"`{show(command.job)}` matches several jobs ({names}): "
                       "type the exact name."),))
    if not matches:
        return _decide_unnamed(config, command, user_id, channel_id, usergroups)
    job = matches[0]
    denied = _permission_problems(config, job, user_id, channel_id, usergroups)
    if denied:
        return Denied(tuple(denied))
    params, problems = _params(job, command.params)
    return _with_approval(config, _finish(job.name, job.id, job.description, job.confirm,
                                          command, params, problems))


def _matching_jobs(config: BuildbotConfig, name: str) -> list[JobConfig]:
    if name in config.jobs:
        return [config.jobs[name]]
    return [j for n, j in config.jobs.items() if n.casefold() == name.casefold()]


def _decide_unnamed(config: BuildbotConfig, command: BuildCommand, user_id: str,
                    channel_id: str, usergroups: UserGroups) -> Approved | Denied:
    """No job has this name: maybe a raw ID (admins only), else list what the user may run."""
    if JOB_ID_RE.fullmatch(command.job):
        return _decide_raw_id(config, command, user_id, channel_id, usergroups)
    jobs = runnable_jobs(config, user_id=user_id, channel_id=channel_id, usergroups=usergroups)
    names = ", ".join(j.name for j in jobs) or "none"
    return Denied(((f"There is no job `{show(command.job)}`. Jobs you may run here: {names} "
                   "(`/build list` shows them)."),))


def _decide_raw_id(config: BuildbotConfig, command: BuildCommand, user_id: str,
                   channel_id: str, usergroups: UserGroups) -> Approved | Denied:
    """An admin may run a build task by its 32-character ID; others are pointed to names."""
    job_id = command.job.lower()
    if not is_admin(config, user_id):
        mine = runnable_jobs(config, user_id=user_id, channel_id=channel_id,
                             usergroups=usergroups)
        named = [j.name for j in mine if j.id == job_id]
        hint = f"use `/build {named[0]}`" if named else "use a job name (`/build list` shows them)"
        return Denied((f"Only admins may run a build task by its raw ID: {hint}.",))
    params, problems = _params(None, command.params)
    return _with_approval(config, _finish(job_id, job_id, "", True, command, params, problems))


def _finish(name: str, job_id: str, description: str, confirm: bool, command: BuildCommand,
            params: list[tuple[str, str]], problems: list[tuple[str, str]]) -> Approved | Denied:
    """Add the scm checks and assemble the body, or return every problem found. A name or
    value holding an invisible character is all that is said about it (``hidden_fields``)."""
    problems = hidden_fields(command) or problems + _scm_problems(command)
    if problems:
        return Denied(tuple(p for _, p in problems), tuple(f for f, _ in problems))
    return Approved(name, job_id, description, confirm, build_body(job_id, params, command))


def build_body(job_id: str, params: list[tuple[str, str]],
               command: BuildCommand) -> dict[str, Any]:
    """The request body: ``parameter`` only when non-empty, ``scm`` only with the keys given."""
    body: dict[str, Any] = {"job_id": job_id}
    if params:
        body["parameter"] = [{"name": n, "value": v} for n, v in params]
    scm: dict[str, str] = {}
    if command.commit is not None:
        scm["build_commit_id"] = command.commit.lower()
    if command.tag is not None:
        scm["build_tag"] = command.tag
    if scm:
        body["scm"] = scm
    return body


def command_of(job_name: str, body: dict[str, Any]) -> BuildCommand:
    """The command a stored body was built from, as data (the inverse of ``build_body``):
    what a Rebuild asks again and what a stored request is checked again with. Values come
    back exactly as they were sent, never through the command text's parser."""
    params = tuple((str(p.get("name", "")), str(p.get("value", "")))
                   for p in body.get("parameter") or [] if isinstance(p, dict))
    given = body.get("scm")
    scm: dict[str, Any] = given if isinstance(given, dict) else {}
    commit, tag = scm.get("build_commit_id"), scm.get("build_tag")
    return BuildCommand(job_name, params, commit=str(commit) if commit is not None else None,
                        tag=str(tag) if tag is not None else None)


def decide_again(config: BuildbotConfig, *, job_name: str, job_id: str, body: dict[str, Any],
                 user_id: str, channel_id: str, usergroups: UserGroups) -> Denied | None:
    """The checks of a run made again on a stored request, against the configuration in
    force, just before it is sent: None when it may still be sent as it is, else why not
    (in the words of a refused command). The stored body is what the person agreed to, so
    it is sent unchanged; a job entry that now names another build task refuses it."""
    decision = decide(config, command_of(job_name, body), user_id=user_id,
                      channel_id=channel_id, usergroups=usergroups)
    if isinstance(decision, Denied):
        return decision
    if decision.job_id != job_id:
        return Denied((f"`{show(job_name)}` now names another build task than when this was "
                       "asked: ask again.",))
    return None


def hidden_fields(command: BuildCommand) -> list[tuple[str, str]]:
    """(field, problem) for every parameter name, value and the tag when one holds an
    invisible or reordering character (``bot.rules.hidden_problem``): the one check of
    this, for a typed command and a submitted form alike. (A commit is hexadecimal digits
    or refused by its own rule.)"""
    found: list[tuple[str, str | None]] = []
    for name, value in command.params:
        found.append((name, hidden_problem(f"The parameter name `{visible(name)}`", name)
                      or hidden_problem(f"The value of `{show(name)}`", value)))
    if command.tag is not None:
        found.append(("tag", hidden_problem("The tag", command.tag)))
    return [(f, p) for f, p in found if p]


def _scm_problems(command: BuildCommand) -> list[tuple[str, str]]:
    """(field, problem) for the commit and the tag."""
    found = [("commit", commit_problem(command.commit) if command.commit is not None else None),
             ("tag", tag_problem(command.tag) if command.tag is not None else None)]
    return [(f, p) for f, p in found if p]


# ---------------------------------------------------------------- parameters


def _params(job: JobConfig | None, given: tuple[tuple[str, str], ...]
            ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Declared params in file order (value or default), then extras in typed order; the
    problems as (parameter name, problem)."""
    problems = _repeat_problems(given)
    declared = job.params if job is not None else {}
    values = dict(given)
    params: list[tuple[str, str]] = []
    for name, spec in declared.items():
        value = values.get(name, spec.default)
        problem = _declared_problem(name, spec, value, given=name in values)
        if problem:
            problems.append((name, problem))
        elif value is not None:
            params.append((name, value))
    for name, value in {n: v for n, v in given if n not in declared}.items():
        problem = _extra_problem(job, name, value)
        if problem:
            problems.append((name, problem))
        else:
            params.append((name, value))
    return params, problems


def _repeat_problems(given: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    names = [n for n, _ in given]
    twice = dict.fromkeys(n for n in names if names.count(n) > 1)
    return [(n, f"`{show(n)}` is given twice: give it once.") for n in twice]


def _declared_problem(name: str, spec: ParamSpec, value: str | None, *, given: bool) -> str | None:
    """Check a declared parameter: required, API value rules, choices, pattern."""
    if spec.required and not value:
        return f"`{name}` is required: add {name}=<value>."
    if value is None or not given:
        return None  # defaults were checked when the file was loaded
    problem = param_value_problem(name, value)
    if problem:
        return problem
    if spec.choices is not None and value not in spec.choices:
        if len(spec.choices) == 1:
            return (f"`{name}` can only be `{show(spec.choices[0])}`, not `{show(value)}`: "
                    f"give {name}={show(spec.choices[0])} or leave it out.")
        return (f"`{name}` must be one of {', '.join(spec.choices)}, not `{show(value)}`: "
                "pick one of those.")
    if spec.pattern is not None and not re.fullmatch(spec.pattern, value):
        return (f"`{name}={show(value)}` does not match the pattern `{spec.pattern}`: "
                "give a value that matches it.")
    return None


def _extra_problem(job: JobConfig | None, name: str, value: str) -> str | None:
    """An undeclared parameter: refused unless the job allows extras, then the API rules."""
    if job is not None and not job.allow_extra_params:
        return _undeclared_message(job, name)
    return param_name_problem(name) or param_value_problem(name, value)


def _undeclared_message(job: JobConfig, name: str) -> str:
    """Say the name is not a parameter of the job, with the names it does take."""
    if not job.params:
        return (f"`{job.name}` takes no parameters: remove `{show(name)}=` "
                "(commit= and tag= are always accepted).")
    close = [n for n in job.params if _fold(n) == _fold(name)]
    hint = f" (did you mean `{close[0]}`?)" if close else ""
    if len(job.params) == 1:
        return (f"`{show(name)}` is not a parameter of `{job.name}`{hint}: its only parameter "
                f"is {next(iter(job.params))}.")
    return (f"`{show(name)}` is not a parameter of `{job.name}`{hint}: use one of "
            f"{', '.join(job.params)}.")


def _fold(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.casefold())


# ---------------------------------------------------------------- guard rails


def approval_rule(config: BuildbotConfig, job_name: str) -> ApprovalRule | None:
    """Who must approve a request for ``job_name`` (a job's name, or an admin's raw ID:
    the raw ID of a job that needs approval needs the same approval); None if nobody."""
    job = config.jobs.get(job_name)
    if job is None and JOB_ID_RE.fullmatch(job_name):
        job = next((j for j in config.jobs.values()
                    if j.id == job_name.lower() and j.needs_approval), None)
    if job is None or not job.needs_approval:
        return None
    return ApprovalRule(approvers=tuple(job.approvers), groups=tuple(job.approver_groups),
                        needed=job.approvals or 1, channel=job.approval_channel,
                        ttl=job.approval_ttl_seconds)


def _with_approval(config: BuildbotConfig, decision: Approved | Denied) -> Approved | Denied:
    if isinstance(decision, Denied):
        return decision
    rule = approval_rule(config, decision.job_name)
    return decision if rule is None else Approved(
        decision.job_name, decision.job_id, decision.description, decision.confirm,
        decision.body, rule)


def per_user_limit(config: BuildbotConfig, job_name: str, user_id: str) -> int | None:
    """How many builds of this job the user may start in any hour; None: no limit (admins,
    raw IDs, and jobs with no limit where the file sets no default)."""
    job = config.jobs.get(job_name)
    if job is None or is_admin(config, user_id):
        return None
    return job.max_per_user_per_hour or config.max_per_user_per_hour


def over_limit_problem(job_name: str, limit: int, next_at: float, now: float) -> str:
    """The refusal, saying when the next build is allowed (UTC, and how long from now)."""
    wait = max(1, int(-(-(next_at - now) // 60)))
    at = time.strftime("%H:%M UTC", time.gmtime(next_at))
    builds = "1 build" if limit == 1 else f"{limit} builds"
    return (f"You may start {builds} of `{job_name}` per hour and have reached that: the "
            f"next one is allowed in {wait} min (at {at}).")
