"""Operator commands: ``check-config`` and ``explain``. Print to stdout, return an exit code.

Neither calls Slack or CodeArts: ``check-config`` validates the environment and the jobs
file; ``explain`` shows what ``/build ...`` would do for a given user and channel. The
arguments of every subcommand of ``python -m bot`` are declared here too (``add_*``), so
building the command line imports nothing the subcommand itself does not need (the demo's
stand-ins stay out of the production path).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Sequence

from bot.command import BuildCommand, ParseError, parse
from bot.config import BuildbotConfig, ConfigError, JobConfig, config_warnings, load_config
from bot.links import why_no_previews
from bot.policy import Approved, StaticUserGroups, decide, per_user_limit, runnable_jobs
from bot.settings import SettingsError, load_settings

_SLASH = re.compile(r"^\s*/build(?:\s+|$)", re.IGNORECASE)


def config_path(arg: str | None) -> str:
    """``--config`` wins, then ``BUILDBOT_CONFIG``, then ``buildbot.toml`` in the current folder."""
    return arg or os.environ.get("BUILDBOT_CONFIG") or "buildbot.toml"


CONFIG_HELP = "the jobs file (default: $BUILDBOT_CONFIG, else buildbot.toml in this folder)"
CHECK_CONFIG = "Validate the environment and the jobs file; list every problem, call nothing."
EXPLAIN = "Print what /build would do for a user in a channel; sends nothing."
DEMO = ("Run the real bot in this terminal against stand-ins for Slack and CodeArts: no "
        "workspace, no cloud account, no environment needed.")


def add_config_argument(parser: argparse.ArgumentParser, **kw: object) -> None:
    parser.add_argument("--config", metavar="PATH", help=CONFIG_HELP, **kw)  # type: ignore[arg-type]


def add_check_config_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


def add_explain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", required=True, help="Slack user ID, e.g. U01ALICE")
    parser.add_argument("--channel", required=True, help="Slack channel ID, e.g. C01BUILDS")
    parser.add_argument("--groups", metavar="S1,S2", help="the user groups the user is in "
                        "(without it, user-group membership is not checked)")
    add_config_argument(parser)
    parser.add_argument("text", nargs="+", help='the command, e.g. "/build backend codeBranch=x"')


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--script", metavar="FILE",
                        help="run the lines of FILE as if typed, then exit (lines piped into a "
                             "stdin that is not a terminal are run the same way)")
    parser.add_argument("--config", metavar="PATH",
                        help="a jobs file of your own instead of the example "
                             "(examples/buildbot.toml)")
    parser.add_argument("--log-level", default="WARNING", type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                        help="the bot's own log lines, on stderr (default: WARNING)")


def check_config(argv: Sequence[str] | None = None) -> int:
    """Validate environment and jobs file together, so one run lists every problem."""
    parser = argparse.ArgumentParser(prog="python -m bot check-config", description=CHECK_CONFIG)
    add_check_config_arguments(parser)
    args = _parse_args(parser, argv)
    if isinstance(args, int):
        return args
    return run_check_config(args)


def run_check_config(args: argparse.Namespace) -> int:
    problems: list[str] = []
    settings = None
    try:
        settings = load_settings()
    except SettingsError as exc:
        problems += [f"environment: {p}" for p in exc.problems]
    config: BuildbotConfig | None = None
    try:
        config = load_config(config_path(args.config))
    except ConfigError as exc:
        problems += exc.problems
    if problems or config is None:
        print(f"{len(problems)} configuration problem(s):")
        print("\n".join(f"- {p}" for p in problems))
        return 1
    print(_summary(config, config_path(args.config)))
    if settings is not None:
        off = why_no_previews(settings.build_link_template)
        if off is not None:  # not a problem: the bot runs, only without link previews
            print(f"note: {off}.")
    return 0


def _parse_args(parser: argparse.ArgumentParser,
                argv: Sequence[str] | None) -> argparse.Namespace | int:
    """argparse exits on --help or bad usage; turn that into a return code instead."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


def empty_jobs_warning(path: str) -> str:
    return (f"warning: {path} has no jobs, so /build can run nothing: add a [jobs.NAME] table "
            "(see examples/buildbot.toml).")


def start_warnings(config: BuildbotConfig, path: str) -> list[str]:
    """The warnings the log shows at start, as check-config shows them."""
    return ([] if config.jobs else [empty_jobs_warning(path)]) + config_warnings(config)


def _summary(config: BuildbotConfig, path: str) -> str:
    """A short OK line, plus a warning for a file with no jobs and a note for jobs nobody
    can run."""
    names = ", ".join(config.jobs) or "none"
    lines = [f"OK: environment and {path} are valid; {len(config.jobs)} job(s): {names}."]
    if not config.jobs:
        lines.append(empty_jobs_warning(path))
    if not config.admins:
        lines += [f"note: jobs.{j.name} has no users or usergroups and there are no admins, "
                  "so nobody can run it." for j in config.jobs.values()
                  if not j.users and not j.usergroups]
    return "\n".join(lines + config_warnings(config) + _guard_notes(config))


def _guard_notes(config: BuildbotConfig) -> list[str]:
    """A note for each job that needs approval, and for each with a queue."""
    lines = [f"note: jobs.{j.name} needs {j.approvals or 1} approval(s) by "
             f"{', '.join([*j.approvers, *j.approver_groups])}." for j in config.jobs.values()
             if j.needs_approval]
    lines += [f"note: jobs.{j.name} runs at most {j.max_running} build(s) at once; more wait "
              f"in a queue for up to {int(j.queue_ttl_seconds // 60)} min"
              + (" (CodeArts is asked whether it runs)" if j.check_codearts_running else "")
              + "." for j in config.jobs.values() if j.max_running is not None]
    return lines


class _RecordingGroups(StaticUserGroups):
    """Remembers which lookups came back unknown, so explain can say it mattered."""

    def __init__(self, mapping: dict[str, set[str]] | None = None) -> None:
        super().__init__(mapping)
        self.unchecked: list[str] = []

    @property
    def unknown(self) -> bool:
        return bool(self.unchecked)

    def members(self, group_id: str) -> frozenset[str] | None:
        found = super().members(group_id)
        if found is None and group_id not in self.unchecked:
            self.unchecked.append(group_id)
        return found


def explain(argv: Sequence[str] | None = None) -> int:
    """Show the decision and the exact body for a /build text, without sending anything."""
    args = _parse_args(_explain_parser(), argv)
    if isinstance(args, int):
        return args
    return run_explain(args)


def run_explain(args: argparse.Namespace) -> int:
    try:
        config = load_config(config_path(args.config))
    except ConfigError as exc:
        print("The jobs file is invalid:\n" + "\n".join(f"- {p}" for p in exc.problems))
        return 1
    groups = _groups(args.user, args.groups)
    parsed = parse(_SLASH.sub("", " ".join(args.text), count=1))
    if isinstance(parsed, ParseError):
        print("The command cannot be read:\n" + "\n".join(f"- {p}" for p in parsed.problems))
        return 1
    if not isinstance(parsed, BuildCommand):  # help, or a subcommand: one rule for all
        job = getattr(parsed, "job", None)  # status, stop, subscribe, unsubscribe name one
        if job is None:
            return _explain_help(config, args.user, args.channel, groups)
        print(f"/build {parsed.WORD} is allowed to whoever may run the job here; running it "
              "with its defaults:")
        parsed = BuildCommand(job)
    return _explain_build(config, parsed, args.user, args.channel, groups)


def _explain_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot explain", description=EXPLAIN)
    add_explain_arguments(parser)
    return parser


def _groups(user: str, groups: str | None) -> _RecordingGroups:
    """``--groups`` lists the user's groups; without it every membership is unknown."""
    if groups is None:
        return _RecordingGroups(None)
    return _RecordingGroups({g: {user} for g in (s.strip() for s in groups.split(",")) if g})


def _explain_help(config: BuildbotConfig, user: str, channel: str,
                  groups: _RecordingGroups) -> int:
    jobs = runnable_jobs(config, user_id=user, channel_id=channel, usergroups=groups)
    print("Help: usage is /build <job> [name=value ...] [commit=<sha>] [tag=<tag>]")
    print("Jobs this user may run here: " + (", ".join(j.name for j in jobs) or "none"))
    _note_unknown(groups)
    return 0


def _explain_build(config: BuildbotConfig, command: BuildCommand, user: str, channel: str,
                   groups: _RecordingGroups) -> int:
    decision = decide(config, command, user_id=user, channel_id=channel, usergroups=groups)
    if isinstance(decision, Approved):
        _print_allowed(decision, "Allowed", _guards(config, decision, user))
        return 0
    if not groups.unknown:
        print("Denied:\n" + "\n".join(f"- {p}" for p in decision.problems))
        return 1
    # Only membership of a user group could allow it, and that was not checked: say what
    # would happen if the user is in one of those groups.
    unchecked = ", ".join(groups.unchecked)
    print(f"Not decided: user-group membership not checked (no --groups). {user} is not "
          f"allowed by name; a member of {unchecked} would be.")
    member = _RecordingGroups({g: {user} for g in groups.unchecked})
    if_member = decide(config, command, user_id=user, channel_id=channel, usergroups=member)
    if isinstance(if_member, Approved):
        _print_allowed(if_member, f"If {user} is in {unchecked}: allowed",
                       _guards(config, if_member, user))
    else:
        print(f"If {user} is in {unchecked}, still denied:\n"
              + "\n".join(f"- {p}" for p in if_member.problems))
    print(f"note: pass --groups {groups.unchecked[0]} (the groups {user} is in; --groups \"\" "
          "for none) to decide.")
    return 1


def _print_allowed(decision: Approved, head: str, guards: Sequence[str] = ()) -> None:
    confirm = "yes (Run/Cancel buttons first)" if decision.confirm else "no"
    print(f"{head}: job {decision.job_name} ({decision.job_id}); confirm: {confirm}")
    for line in guards:
        print(line)
    print("POST /v3/jobs/build")
    print(json.dumps(decision.body, indent=2, ensure_ascii=False))


def _guards(config: BuildbotConfig, decision: Approved, user: str) -> list[str]:
    """The guard rails: who must approve, and the user's hourly limit."""
    lines = []
    rule = decision.approval
    if rule is not None:
        who = ", ".join([*rule.approvers, *(f"a member of {g}" for g in rule.groups)])
        where = rule.channel or "the channel of the request"
        lines.append(f"needs approval by {rule.needed} of: {who} (never {user} themselves), "
                     f"asked in {where}; expires after {int(rule.ttl // 60)} min without it")
    limit = per_user_limit(config, decision.job_name, user)
    job = config.jobs.get(decision.job_name)
    if limit is not None:
        lines.append(f"per-user limit: {limit} build(s) of {decision.job_name} per hour "
                     f"for {user}")
    elif job is not None and (job.max_per_user_per_hour or config.max_per_user_per_hour):
        lines.append(f"per-user limit: none for {user} (admins are exempt)")
    if job is not None and job.max_running is not None:
        lines.append(_queue_guard(job, approval=rule is not None))
    return lines


def _queue_guard(job: JobConfig, *, approval: bool) -> str:
    """What ``max_running`` does to a request for this job."""
    return (f"at most {job.max_running} build(s) of {job.name} at once: while that "
            f"many run, it would be queued (for up to "
            f"{int(job.queue_ttl_seconds // 60)} min)"
            + ("; admins may run anyway" if not approval else "")
            + ("; CodeArts is asked whether the job runs" if
               job.check_codearts_running else ""))


def _note_unknown(groups: _RecordingGroups) -> None:
    if groups.unknown:
        print("note: user-group membership not checked (no --groups); pass --groups S1,S2 "
              "to say which groups the user is in.")
