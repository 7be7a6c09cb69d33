"""The checks: permissions, channels, API rules, declared params, and the exact body."""

from __future__ import annotations

from typing import Any

import pytest

from bot.command import BuildCommand
from bot.config import BuildbotConfig, parse_config
from bot.policy import Approved, Denied, StaticUserGroups, decide, runnable_jobs
from bot.rules import show

BACKEND_ID = "f9d6c8466d614a9788e9a0acf6c15f46"
FRONTEND_ID = "0123456789abcdef0123456789abcdef"
RAW_ID = "aaaabbbbccccddddeeeeffff00001111"

CONFIG_TEXT = f"""
admins = ["UADMIN"]

[jobs.backend]
id = "{BACKEND_ID}"
description = "Backend CI"
users = ["UALICE"]
usergroups = ["SDEVS", "SOPS"]
channels = ["CBUILDS"]

[jobs.backend.params.codeBranch]
default = "master"
choices = ["master", "develop"]

[jobs.backend.params.version]
pattern = '[0-9]+\\.[0-9]+'

[jobs.backend.params.env]
required = true

[jobs.backend.params.ticket]

[jobs.frontend]
id = "{FRONTEND_ID}"
users = ["*"]
confirm = false
allow_extra_params = true

[jobs.frontend.params.target]
default = "web"

[jobs.adminonly]
id = "{BACKEND_ID}"

[jobs.groups]
id = "{FRONTEND_ID}"
usergroups = ["SDEVS"]
"""

CONFIG = parse_config(CONFIG_TEXT, source="test.toml")
NO_GROUPS = StaticUserGroups({})
UNKNOWN = StaticUserGroups(None)


class CountingGroups:
    """Records which groups were asked about, to show cheaper rules come first."""

    def __init__(self, mapping: dict[str, set[str]] | None) -> None:
        self.asked: list[str] = []
        self._inner = StaticUserGroups(mapping)

    def members(self, group_id: str) -> frozenset[str] | None:
        self.asked.append(group_id)
        return self._inner.members(group_id)


def run(job: str, *params: tuple[str, str], user: str = "UALICE", channel: str = "CBUILDS",
        groups: object = NO_GROUPS, commit: str | None = None, tag: str | None = None,
        config: BuildbotConfig = CONFIG) -> Approved | Denied:
    command = BuildCommand(job, tuple(params), commit, tag)
    return decide(config, command, user_id=user, channel_id=channel,
                  usergroups=groups)  # type: ignore[arg-type]


def body_of(result: Approved | Denied) -> dict[str, Any]:
    assert isinstance(result, Approved), result
    return result.body


def problems_of(result: Approved | Denied) -> tuple[str, ...]:
    assert isinstance(result, Denied), result
    return result.problems


# ---------------------------------------------------------------- the exact body


def test_defaults_and_user_values_make_the_exact_body() -> None:
    result = run("backend", ("env", "prod"), ("codeBranch", "develop"))
    assert result == Approved("backend", BACKEND_ID, "Backend CI", True, {
        "job_id": BACKEND_ID,
        "parameter": [{"name": "codeBranch", "value": "develop"},
                      {"name": "env", "value": "prod"}],
    })


def test_declared_order_then_extras_in_typed_order() -> None:
    body = body_of(run("frontend", ("zeta", "1"), ("alpha", "2"), ("target", "app"),
                       user="UBOB", channel="CANY"))
    assert body["parameter"] == [{"name": "target", "value": "app"},
                                 {"name": "zeta", "value": "1"}, {"name": "alpha", "value": "2"}]


def test_param_without_value_or_default_is_left_out() -> None:
    body = body_of(run("backend", ("env", "prod")))
    assert [p["name"] for p in body["parameter"]] == ["codeBranch", "env"]


def test_parameter_key_is_absent_when_empty() -> None:
    assert body_of(run("adminonly", user="UADMIN")) == {"job_id": BACKEND_ID}


@pytest.mark.parametrize(("commit", "tag", "scm"), [
    ("ABCDEF1", None, {"build_commit_id": "abcdef1"}),
    (None, "v1.2.0", {"build_tag": "v1.2.0"}),
    ("a" * 40, "release/1", {"build_commit_id": "a" * 40, "build_tag": "release/1"}),
])
def test_commit_and_tag_go_into_scm_only_when_given(commit: str | None, tag: str | None,
                                                    scm: dict[str, str]) -> None:
    body = body_of(run("adminonly", user="UADMIN", commit=commit, tag=tag))
    assert body == {"job_id": BACKEND_ID, "scm": scm}


def test_empty_value_is_sent_as_empty_string() -> None:
    body = body_of(run("frontend", ("note", ""), user="UBOB"))
    assert body["parameter"][-1] == {"name": "note", "value": ""}


def test_confirm_false_is_passed_on() -> None:
    result = run("frontend", user="UBOB")
    assert isinstance(result, Approved) and result.confirm is False


# ---------------------------------------------------------------- who may run it


@pytest.mark.parametrize(("user", "groups", "allowed"), [
    ("UADMIN", UNKNOWN, True),
    ("UALICE", UNKNOWN, True),
    ("UBOB", StaticUserGroups({"SDEVS": {"UBOB"}}), True),
    ("UBOB", StaticUserGroups({"SOPS": {"UBOB"}}), True),
    ("UBOB", StaticUserGroups({"SDEVS": {"UOTHER"}}), False),
    ("UBOB", NO_GROUPS, False),
])
def test_admins_users_and_usergroups_may_run(user: str, groups: StaticUserGroups,
                                             allowed: bool) -> None:
    result = run("backend", ("env", "x"), user=user, groups=groups)
    assert isinstance(result, Approved) is allowed


def test_star_lets_everyone_run() -> None:
    assert isinstance(run("frontend", user="UANYONE", channel="CANY"), Approved)


def test_denied_user_is_told_how_to_get_access() -> None:
    assert problems_of(run("backend", user="UBOB")) == (
        "You may not run `backend`: ask an admin to add you to its users or user groups.",)


def test_job_without_users_or_usergroups_is_for_admins_only() -> None:
    assert problems_of(run("adminonly", user="UALICE")) == (
        "`adminonly` can be run by admins only: ask an admin to run it.",)
    assert isinstance(run("adminonly", user="UADMIN"), Approved)


def test_unknown_membership_denies_with_try_again_later() -> None:
    assert problems_of(run("backend", user="UBOB", groups=UNKNOWN)) == (
        ("Your membership of the user groups allowed to run `backend` could not be checked: "
        "try again later."),)


def test_one_known_group_is_enough_even_if_another_is_unknown() -> None:
    class Partial:
        def members(self, group_id: str) -> frozenset[str] | None:
            return None if group_id == "SDEVS" else frozenset({"UBOB"})

    assert isinstance(run("backend", ("env", "x"), user="UBOB", groups=Partial()), Approved)


@pytest.mark.parametrize("user", ["UADMIN", "UALICE"])
def test_usergroups_are_not_asked_when_users_already_allow(user: str) -> None:
    groups = CountingGroups(None)
    assert isinstance(run("backend", ("env", "x"), user=user, groups=groups), Approved)
    assert groups.asked == []


def test_usergroups_are_asked_only_until_one_allows() -> None:
    groups = CountingGroups({"SDEVS": {"UBOB"}})
    run("backend", ("env", "x"), user="UBOB", groups=groups)
    assert groups.asked == ["SDEVS"]


@pytest.mark.parametrize("user", ["UALICE", "UADMIN"])
def test_channel_list_applies_to_everyone_including_admins(user: str) -> None:
    assert problems_of(run("backend", ("env", "x"), user=user, channel="CRANDOM")) == (
        "`backend` cannot be run in this channel: run it in its channel (CBUILDS).",)


def test_no_channel_list_means_any_channel() -> None:
    assert isinstance(run("frontend", user="UBOB", channel="CWHATEVER"), Approved)


def test_a_user_who_may_not_run_the_job_learns_nothing_about_its_params() -> None:
    problems = problems_of(run("backend", ("code-branch", "x"), ("env", ""), user="UBOB",
                               channel="CRANDOM"))
    assert problems == (("You may not run `backend`: ask an admin to add you to its users or "
                        "user groups."),)


# ---------------------------------------------------------------- finding the job


def test_job_name_matches_exactly_then_case_insensitively() -> None:
    result = run("BACKEND", ("env", "x"))
    assert isinstance(result, Approved) and result.job_name == "backend"
    frontend = run("Frontend", user="UBOB", channel="CANY")
    assert isinstance(frontend, Approved) and frontend.job_name == "frontend"
    assert problems_of(run("nope"))[0].startswith("There is no job `nope`.")


def test_ambiguous_case_insensitive_name_asks_for_the_exact_one() -> None:
    # The loader refuses such files; decide() still answers sensibly if given one.
    job = CONFIG.jobs["frontend"]
    config = BuildbotConfig(jobs={"Web": job.model_copy(update={"name": "Web"}),
                                  "web": job.model_copy(update={"name": "web"})})
    assert isinstance(run("web", user="UBOB", config=config), Approved)
    assert problems_of(run("WEB", user="UBOB", config=config)) == (
        "`WEB` matches several jobs (`Web`, `web`): type the exact name.",)


@pytest.mark.parametrize(("user", "channel", "groups", "listed"), [
    ("UALICE", "CBUILDS", NO_GROUPS, "backend, frontend"),
    ("UBOB", "CBUILDS", StaticUserGroups({"SDEVS": {"UBOB"}}), "backend, frontend, groups"),
    ("UBOB", "CRANDOM", NO_GROUPS, "frontend"),
    ("UADMIN", "CBUILDS", NO_GROUPS, "backend, frontend, adminonly, groups"),
])
def test_unknown_job_lists_the_jobs_this_user_may_run_here(user: str, channel: str,
                                                           groups: StaticUserGroups,
                                                           listed: str) -> None:
    assert problems_of(run("nope", user=user, channel=channel, groups=groups)) == (
        f"There is no job `nope`. Jobs you may run here: {listed} (`/build list` shows them).",)


def test_unknown_job_with_nothing_runnable_says_none() -> None:
    config = parse_config(f'[jobs.a]\nid = "{BACKEND_ID}"', source="x")
    assert problems_of(run("nope", config=config)) == (
        "There is no job `nope`. Jobs you may run here: none (`/build list` shows them).",)


@pytest.mark.parametrize(("user", "channel", "groups", "names"), [
    ("UALICE", "CBUILDS", NO_GROUPS, ["backend", "frontend"]),
    ("UALICE", "COTHER", NO_GROUPS, ["frontend"]),
    ("UBOB", "CBUILDS", UNKNOWN, ["frontend"]),
    ("UBOB", "CBUILDS", StaticUserGroups({"SDEVS": {"UBOB"}}), ["backend", "frontend", "groups"]),
    ("UADMIN", "COTHER", UNKNOWN, ["frontend", "adminonly", "groups"]),
])
def test_runnable_jobs(user: str, channel: str, groups: StaticUserGroups,
                       names: list[str]) -> None:
    jobs = runnable_jobs(CONFIG, user_id=user, channel_id=channel, usergroups=groups)
    assert [j.name for j in jobs] == names


# ---------------------------------------------------------------- raw job IDs


def test_admin_may_run_a_raw_id_with_any_valid_params_anywhere() -> None:
    result = run(RAW_ID.upper(), ("a", "1"), user="UADMIN", channel="CANY", commit="abc1234")
    assert result == Approved(RAW_ID, RAW_ID, "", True, {
        "job_id": RAW_ID, "parameter": [{"name": "a", "value": "1"}],
        "scm": {"build_commit_id": "abc1234"}})


def test_admin_raw_id_still_obeys_api_rules() -> None:
    assert problems_of(run(RAW_ID, ("PATH", "/x"), user="UADMIN")) == (
        ("`PATH` is a reserved name the build service refuses (LD_PRELOAD, LD_LIBRARY_PATH, "
        "PATH, BASH_ENV, GIT_SSH_COMMAND, path, in any case): choose another name."),)


def test_non_admin_may_not_run_a_raw_id() -> None:
    assert problems_of(run(RAW_ID, user="UALICE")) == (
        ("Only admins may run a build task by its raw ID: use a job name "
        "(`/build list` shows them)."),)


def test_non_admin_raw_id_of_a_job_they_may_run_suggests_its_name() -> None:
    assert problems_of(run(FRONTEND_ID, user="UBOB", channel="CANY")) == (
        "Only admins may run a build task by its raw ID: use `/build frontend`.",)


@pytest.mark.parametrize("job", ["a" * 31, "a" * 33, "a" * 31 + "-", "a" * 31 + "é"])
def test_not_quite_a_raw_id_is_an_unknown_job(job: str) -> None:
    assert problems_of(run(job, user="UADMIN"))[0].startswith("There is no job")


# ---------------------------------------------------------------- API rules
# The rules themselves are tested in test_rules.py; here, that decide applies each of them.


@pytest.mark.parametrize(("params", "commit", "tag", "problem"), [
    ((("code-branch", "x"),), None, None,
     "`code-branch` is not a valid parameter name: use letters, digits and _ only."),
    ((("Path", "x"),), None, None,
     ("`Path` is a reserved name the build service refuses (LD_PRELOAD, LD_LIBRARY_PATH, "
      "PATH, BASH_ENV, GIT_SSH_COMMAND, path, in any case): choose another name.")),
    ((("v", "a\nb"),), None, None,
     "The value of `v` contains a control character (U+000A): remove it; only tab is allowed."),
    ((), "HEAD", None,
     "`commit=HEAD` is not a commit ID: give 1 to 64 hexadecimal digits, e.g. commit=1a2b3c4d."),
    ((), None, "-v1",
     "`tag=-v1` is not a valid tag: no spaces or control characters, and it cannot start with -."),
])
def test_decide_applies_the_api_rules(params: tuple[tuple[str, str], ...], commit: str | None,
                                      tag: str | None, problem: str) -> None:
    assert problems_of(run("frontend", *params, user="UBOB", commit=commit, tag=tag)) == (problem,)


@pytest.mark.parametrize(("value", "ok"), [("x" * 8192, True), ("a\tb", True), ("", True),
                                           ("ünïcødé ✓", True), ("x" * 8193, False)])
def test_extra_values_follow_the_api_rules(value: str, ok: bool) -> None:
    assert isinstance(run("frontend", ("v", value), user="UBOB"), Approved) is ok


def test_declared_values_follow_the_api_rules_too() -> None:
    assert problems_of(run("backend", ("env", "x" * 8193))) == (
        "The value of `env` is 8,193 characters long: shorten it to at most 8,192.",)


@pytest.mark.parametrize(("commit", "ok"), [
    ("a", True), ("abc", True), ("ABC", True), ("abc123", True), ("abc1234", True),
    ("ABCDEF0", True), ("0123456789abcdef" * 4, True),
    ("a" * 65, False), ("abc123g", False), ("HEAD", False), ("abc 1234", False),
    ("master", False), ("0x1a2b", False), ("１２３", False),
])
def test_decide_sends_any_commit_of_1_to_64_hex_digits(commit: str, ok: bool) -> None:
    result = run("frontend", user="UBOB", commit=commit)
    if ok:
        assert body_of(result)["scm"] == {"build_commit_id": commit.lower()}
    else:
        assert problems_of(result) == (
            (f"`commit={show(commit)}` is not a commit ID: give 1 to 64 hexadecimal digits, "
            "e.g. commit=1a2b3c4d."),)


# ---------------------------------------------------------------- declared params


@pytest.mark.parametrize(("params", "problem"), [
    ((("env", "x"), ("codeBranch", "feature")),
     "`codeBranch` must be one of master, develop, not `feature`: pick one of those."),
    ((("env", "x"), ("codeBranch", "Master")),
     "`codeBranch` must be one of master, develop, not `Master`: pick one of those."),
    ((("env", "x"), ("version", "1.2.3")),
     ("`version=1.2.3` does not match the pattern `[0-9]+\\.[0-9]+`: give a value that "
     "matches it.")),
    ((("env", "x"), ("version", "v1.2")),
     ("`version=v1.2` does not match the pattern `[0-9]+\\.[0-9]+`: give a value that "
     "matches it.")),
    ((), "`env` is required: add env=<value>."),
    ((("env", ""),), "`env` is required: add env=<value>."),
    ((("env", "x"), ("extra", "1")),
     "`extra` is not a parameter of `backend`: use one of codeBranch, version, env, ticket."),
    ((("env", "x"), ("code_branch", "1")),
     ("`code_branch` is not a parameter of `backend` (did you mean `codeBranch`?): use one of "
     "codeBranch, version, env, ticket.")),
    ((("env", "x"), ("PATH", "1")),
     "`PATH` is not a parameter of `backend`: use one of codeBranch, version, env, ticket."),
    ((("env", "x"), ("env", "y")), "`env` is given twice: give it once."),
])
def test_declared_params_rules(params: tuple[tuple[str, str], ...], problem: str) -> None:
    assert problems_of(run("backend", *params)) == (problem,)


ONE_OF_EACH = parse_config("""
[jobs.solo]
id = "0123456789abcdef0123456789abcdef"
users = ["*"]
channels = ["CBUILDS"]
[jobs.solo.params.target]
choices = ["staging"]
""", source="test.toml")


@pytest.mark.parametrize(("params", "channel", "problem"), [
    ((("target", "prod"),), "CBUILDS",
     "`target` can only be `staging`, not `prod`: give target=staging or leave it out."),
    ((("tagret", "x"),), "CBUILDS",
     "`tagret` is not a parameter of `solo`: its only parameter is target."),
    ((), "CRANDOM", "`solo` cannot be run in this channel: run it in its channel (CBUILDS)."),
])
def test_a_list_of_one_is_not_offered_as_a_choice(params: tuple[tuple[str, str], ...],
                                                  channel: str, problem: str) -> None:
    decision = decide(ONE_OF_EACH, BuildCommand("solo", params, None, None), user_id="U1",
                      channel_id=channel, usergroups=StaticUserGroups({}))
    assert problems_of(decision) == (problem,)


@pytest.mark.parametrize(("params", "sent"), [
    ((("env", "x"), ("version", "1.2")), {"codeBranch": "master", "env": "x", "version": "1.2"}),
    ((("env", "x"), ("codeBranch", "develop")), {"codeBranch": "develop", "env": "x"}),
    ((("env", "x"), ("ticket", "")), {"codeBranch": "master", "env": "x", "ticket": ""}),
])
def test_declared_params_accepted(params: tuple[tuple[str, str], ...],
                                  sent: dict[str, str]) -> None:
    body = body_of(run("backend", *params))
    assert {p["name"]: p["value"] for p in body["parameter"]} == sent


def test_required_param_is_satisfied_by_its_default() -> None:
    config = parse_config(f'[jobs.a]\nid = "{BACKEND_ID}"\nusers = ["*"]\n'
                          '[jobs.a.params.p]\nrequired = true\ndefault = "d"', source="x")
    assert body_of(run("a", config=config))["parameter"] == [{"name": "p", "value": "d"}]


def test_job_without_params_and_no_extras_says_it_takes_none() -> None:
    config = parse_config(f'[jobs.a]\nid = "{BACKEND_ID}"\nusers = ["*"]', source="x")
    assert problems_of(run("a", ("x", "1"), config=config)) == (
        "`a` takes no parameters: remove `x=` (commit= and tag= are always accepted).",)


def test_all_parameter_problems_are_reported_at_once() -> None:
    problems = problems_of(run("backend", ("codeBranch", "nope"), ("version", "x"),
                               ("bad", "1"), commit="zz", tag="a b"))
    assert [p.split(" ")[0] for p in problems] == [
        "`codeBranch`", "`version=x`", "`env`", "`bad`", "`commit=zz`", "`tag=a"]


def test_extras_allowed_still_obey_api_rules_all_at_once() -> None:
    problems = problems_of(run("frontend", ("a-b", "1"), ("path", "2"), ("ok", "x" * 9000),
                               user="UBOB"))
    assert len(problems) == 3
