"""Operator commands: ``check-config`` and ``explain``. Print to stdout, return an exit code.

Neither calls Slack or CodeArts: ``check-config`` validates the environment and the jobs
file; ``explain`` shows what ``/build ...`` would do for a given user and channel.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Sequence

from bot.command import BuildCommand, Help, ParseError, parse
from bot.config import BuildbotConfig, ConfigError, load_config
from bot.policy import Approved, StaticUserGroups, decide, runnable_jobs
from bot.settings import SettingsError, load_settings

_SLASH = re.compile(r"^\s*/build(?:\s+|$)", re.IGNORECASE)


def config_path(arg: str | None) -> str:
    """``--config`` wins, then ``BUILDBOT_CONFIG``, then ``buildbot.toml`` in the current folder."""
    return arg or os.environ.get("BUILDBOT_CONFIG") or "buildbot.toml"


def check_config(argv: Sequence[str] | None = None) -> int:
    """Validate environment and jobs file together, so one run lists every problem."""
    parser = argparse.ArgumentParser(prog="python -m bot check-config",
                                     description="Validate the environment and the jobs file.")
    parser.add_argument("--config", metavar="PATH", help="jobs file (default: $BUILDBOT_CONFIG "
                        "or buildbot.toml)")
    args = _parse_args(parser, argv)
    if isinstance(args, int):
        return args
    problems: list[str] = []
    try:
        load_settings()
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
    return 0


def _parse_args(parser: argparse.ArgumentParser,
                argv: Sequence[str] | None) -> argparse.Namespace | int:
    """argparse exits on --help or bad usage; turn that into a return code instead."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


def _summary(config: BuildbotConfig, path: str) -> str:
    """A short OK line, plus a note for jobs nobody can run."""
    names = ", ".join(config.jobs) or "none"
    lines = [f"OK: environment and {path} are valid; {len(config.jobs)} job(s): {names}."]
    if not config.admins:
        lines += [f"note: jobs.{j.name} has no users or usergroups and there are no admins, "
                  "so nobody can run it." for j in config.jobs.values()
                  if not j.users and not j.usergroups]
    return "\n".join(lines)


class _RecordingGroups(StaticUserGroups):
    """Remembers whether a lookup came back unknown, so explain can say it mattered."""

    unknown = False

    def members(self, group_id: str) -> frozenset[str] | None:
        found = super().members(group_id)
        self.unknown = self.unknown or found is None
        return found


def explain(argv: Sequence[str] | None = None) -> int:
    """Show the decision and the exact body for a /build text, without sending anything."""
    args = _parse_args(_explain_parser(), argv)
    if isinstance(args, int):
        return args
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
    if isinstance(parsed, Help):
        return _explain_help(config, args.user, args.channel, groups)
    return _explain_build(config, parsed, args.user, args.channel, groups)


def _explain_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bot explain",
        description="Print what /build would do for a user in a channel; sends nothing.")
    parser.add_argument("--user", required=True, help="Slack user ID, e.g. U01ALICE")
    parser.add_argument("--channel", required=True, help="Slack channel ID, e.g. C01BUILDS")
    parser.add_argument("--groups", metavar="S1,S2", help="user groups the user is in "
                        "(without it, membership counts as unknown)")
    parser.add_argument("--config", metavar="PATH", help="jobs file (default: $BUILDBOT_CONFIG "
                        "or buildbot.toml)")
    parser.add_argument("text", nargs="+", help='the command, e.g. "/build backend codeBranch=x"')
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
    if not isinstance(decision, Approved):
        print("Denied:\n" + "\n".join(f"- {p}" for p in decision.problems))
        _note_unknown(groups)
        return 1
    confirm = "yes (Run/Cancel buttons first)" if decision.confirm else "no"
    print(f"Allowed: job {decision.job_name} ({decision.job_id}); confirm: {confirm}")
    print("POST /v3/jobs/build")
    print(json.dumps(decision.body, indent=2, ensure_ascii=False))
    return 0


def _note_unknown(groups: _RecordingGroups) -> None:
    if groups.unknown:
        print("note: user group membership was unknown (no --groups); pass --groups S1,S2 "
              "to say which groups the user is in.")
