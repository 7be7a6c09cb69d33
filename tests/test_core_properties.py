"""Properties: no text makes the parser or decide raise; every body obeys the API rules."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.command import BuildCommand, Parsed, parse
from bot.config import parse_config
from bot.policy import Approved, Denied, StaticUserGroups, decide
from bot.rules import RESERVED_NAMES

JOB_ID = "f9d6c8466d614a9788e9a0acf6c15f46"
CONFIG = parse_config(f"""
admins = ["UADMIN"]
[jobs.backend]
id = "{JOB_ID}"
users = ["UALICE"]
usergroups = ["SDEVS"]
[jobs.backend.params.codeBranch]
default = "master"
pattern = '[a-z]+'
[jobs.open]
id = "{JOB_ID.upper()}"
users = ["*"]
allow_extra_params = true
""", source="props.toml")

NAME_RE = re.compile(r"[A-Za-z0-9_]{1,128}")
RESERVED = {n.casefold() for n in RESERVED_NAMES}
FRAGMENTS = ["&amp;", "&lt;", "&gt;", "<https://x.io|x>", "<@U1|bob>", "<@U1>", "<#C1|c>",
             "<!here>", "<!subteam^S1|@d>", "<", ">", "|", '"', "'", "“", "”", "‘", "’", "=",
             " ", "\u00a0", "\t", "\n", "\x00", "commit=", "tag=", "backend", "open", "help",
             "path=", "PATH=", "codeBranch=", JOB_ID, "abc1234"]
TEXT = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)),
                max_size=12).map("".join)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
USERS = st.sampled_from(["UADMIN", "UALICE", "UBOB"])
GROUPS = st.sampled_from([StaticUserGroups(None), StaticUserGroups({}),
                          StaticUserGroups({"SDEVS": {"UBOB"}})])


def check_body(body: dict[str, Any]) -> None:
    assert set(body) <= {"job_id", "parameter", "scm"}
    assert re.fullmatch(r"[A-Za-z0-9]{32}", str(body["job_id"]))
    for item in body.get("parameter", []):
        assert set(item) == {"name", "value"}
        assert NAME_RE.fullmatch(item["name"])
        assert item["name"].casefold() not in RESERVED
        assert isinstance(item["value"], str) and len(item["value"]) <= 8192
    assert set(body.get("scm", {})) <= {"build_commit_id", "build_tag"}


@FAST
@given(TEXT)
def test_parse_never_raises(text: str) -> None:
    assert isinstance(parse(text), Parsed)  # a command of some kind, or a ParseError


@FAST
@given(st.text())
def test_parse_never_raises_on_any_unicode(text: str) -> None:
    assert isinstance(parse(text), Parsed)  # a command of some kind, or a ParseError


@FAST
@given(st.sampled_from(["", "open ", "backend ", JOB_ID + " "]), TEXT, USERS, GROUPS)
def test_decide_on_parsed_text_never_raises_and_bodies_obey_the_api(
        prefix: str, text: str, user: str, groups: StaticUserGroups) -> None:
    command = parse(prefix + text)
    if not isinstance(command, BuildCommand):
        return
    result = decide(CONFIG, command, user_id=user, channel_id="C1", usergroups=groups)
    assert isinstance(result, Approved | Denied)
    if isinstance(result, Approved):
        check_body(result.body)
    else:
        assert result.problems and all(isinstance(p, str) and p for p in result.problems)


NAMES = st.one_of(st.sampled_from(["codeBranch", "path", "Path", "BASH_ENV", "a", "A" * 129]),
                  st.from_regex(r"[A-Za-z0-9_]{1,130}", fullmatch=True), st.text(max_size=140))
VALUES = st.one_of(st.text(st.characters(min_codepoint=32), max_size=20), st.text(max_size=20),
                   st.sampled_from(["master", "x" * 8192, "x" * 8193]))
PAIRS = st.lists(st.tuples(NAMES, VALUES), max_size=5)
COMMITS = st.none() | st.from_regex(r"[0-9a-fA-F]{0,66}", fullmatch=True) | st.text(max_size=70)
TAGS = st.none() | st.text(st.characters(min_codepoint=33), max_size=300) | st.text(max_size=9)


@FAST
@given(st.one_of(st.sampled_from(["backend", "open", "OPEN", JOB_ID, JOB_ID.upper(), "nope"]),
                 st.text(max_size=40)),
       PAIRS, COMMITS, TAGS, USERS, GROUPS)
def test_decide_on_any_command_never_raises_and_bodies_obey_the_api(
        job: str, params: list[tuple[str, str]], commit: str | None, tag: str | None,
        user: str, groups: StaticUserGroups) -> None:
    command = BuildCommand(job, tuple(params), commit, tag)
    result = decide(CONFIG, command, user_id=user, channel_id="C1", usergroups=groups)
    assert isinstance(result, Approved | Denied)
    if isinstance(result, Approved):
        check_body(result.body)


HEX_RE = re.compile(r"[0-9a-fA-F]{1,64}")


@FAST
@given(st.one_of(st.from_regex(r"[0-9a-fA-F]{1,66}", fullmatch=True), st.text(max_size=70)))
def test_any_1_to_64_hex_digit_commit_is_sent_in_lower_case_and_nothing_else(commit: str) -> None:
    command = BuildCommand("open", (), commit, None)
    result = decide(CONFIG, command, user_id="UBOB", channel_id="C1",
                    usergroups=StaticUserGroups({}))
    if HEX_RE.fullmatch(commit):
        assert isinstance(result, Approved)
        assert result.body["scm"] == {"build_commit_id": commit.lower()}
    else:
        assert isinstance(result, Denied)
        assert result.problems[0].endswith("give 1 to 64 hexadecimal digits, e.g. commit=1a2b3c4d.")
