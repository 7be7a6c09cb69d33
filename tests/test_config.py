"""The jobs file loader: every rule, each error naming file, job and field, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import BuildbotConfig, ConfigError, JobConfig, ParamSpec, load_config, parse_config

JOB_ID = "f9d6c8466d614a9788e9a0acf6c15f46"

# The jobs file the README shows (test_readme_shows_this_example keeps the two equal).
README_EXAMPLE = f"""
admins = ["U01ADMIN"]

[jobs.backend]
id = "{JOB_ID}"
description = "Backend CI"
users = ["U01ALICE"]
usergroups = ["S01DEVS"]
channels = ["C01BUILDS"]
confirm = true
allow_extra_params = false

[jobs.backend.params.codeBranch]
default = "master"
choices = ["master", "develop"]
pattern = '^[A-Za-z0-9._/-]+$'
required = false
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="buildbot.toml")
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def job(body: str, name: str = "backend") -> str:
    return f'[jobs.{name}]\nid = "{JOB_ID}"\n{body}\n'


def test_readme_shows_this_example() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    shown = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    assert parse_config(shown, source="README.md") == parse_config(README_EXAMPLE, source="x")


def test_readme_example_loads_into_typed_models() -> None:
    config = parse_config(README_EXAMPLE, source="buildbot.toml")
    assert config == BuildbotConfig(admins=["U01ADMIN"], jobs={"backend": JobConfig(
        name="backend", id=JOB_ID, description="Backend CI", users=["U01ALICE"],
        usergroups=["S01DEVS"], channels=["C01BUILDS"], confirm=True, allow_extra_params=False,
        params={"codeBranch": ParamSpec(default="master", choices=["master", "develop"],
                                        pattern="^[A-Za-z0-9._/-]+$", required=False)})})


def test_defaults_of_a_minimal_job() -> None:
    config = parse_config(job(""), source="x")
    backend = config.jobs["backend"]
    assert config.admins == []
    assert (backend.description, backend.users, backend.usergroups, backend.channels) == (
        "", [], [], None)
    assert backend.confirm is True and backend.allow_extra_params is False
    assert backend.params == {}


def test_empty_file_is_a_config_with_no_jobs() -> None:
    assert parse_config("", source="x") == BuildbotConfig()


def test_job_id_is_normalised_to_lower_case() -> None:
    config = parse_config(f'[jobs.a]\nid = "{JOB_ID.upper()}"', source="x")
    assert config.jobs["a"].id == JOB_ID


def test_params_keep_file_order() -> None:
    text = job("[jobs.backend.params.zeta]\n[jobs.backend.params.alpha]\n"
               "[jobs.backend.params.mid]")
    assert list(parse_config(text, source="x").jobs["backend"].params) == ["zeta", "alpha", "mid"]


def test_users_may_be_everyone() -> None:
    assert parse_config(job('users = ["*"]'), source="x").jobs["backend"].users == ["*"]


@pytest.mark.parametrize(("text", "problem"), [
    ('typo = 1', ("buildbot.toml: typo: unknown key: check its spelling "
                 "(allowed here: admins, max_per_user_per_hour, jobs, people).")),
    (job('user = ["U1"]'), ("buildbot.toml: jobs.backend.user: unknown key: check its spelling "
     "(allowed here: id, description, users, usergroups, channels, confirm, "
     "allow_extra_params, params, approvers, approver_groups, approvals, approval_channel, "
     "approval_ttl, max_per_user_per_hour, max_running, queue_ttl, "
     "check_codearts_running).")),
    (job("[jobs.backend.params.a]\ndefualt = \"x\""),
     ("buildbot.toml: jobs.backend.params.a.defualt: unknown key: check its spelling "
     "(allowed here: default, choices, pattern, required).")),
    (job('name = "other"'), ("buildbot.toml: jobs.backend.name: unknown key: the job's name is "
     "its table name; remove it.")),
    ('[jobs.backend]\ndescription = "x"', "buildbot.toml: jobs.backend.id: missing: add it."),
    ('[jobs.backend]\nid = "short"', ("buildbot.toml: jobs.backend.id: `short` is not a build "
     "task ID: it must be 32 letters and digits (the end of the task's edit-page URL).")),
    (f'[jobs.backend]\nid = "{JOB_ID}0"', (f"buildbot.toml: jobs.backend.id: `{JOB_ID}0` is not "
     "a build task ID: it must be 32 letters and digits (the end of the task's edit-page URL).")),
    (f'[jobs.backend]\nid = "{JOB_ID[:-1]}-"', (f"buildbot.toml: jobs.backend.id: `{JOB_ID[:-1]}-`"
     " is not a build task ID: it must be 32 letters and digits (the end of the task's "
     "edit-page URL).")),
    ('[jobs.backend]\nid = 5', ("buildbot.toml: jobs.backend.id: must be a string, not the number "
     '5: quote it ("5").')),
    (job("confirm = \"yes\""), ("buildbot.toml: jobs.backend.confirm: must be true or false "
     '(no quotes), not the string "yes".')),
    (job("allow_extra_params = 1"), ("buildbot.toml: jobs.backend.allow_extra_params: must be "
     "true or false (no quotes), not the number 1.")),
    (job('users = "U1"'), ('buildbot.toml: jobs.backend.users: must be a list of strings, e.g. '
     '["U01ALICE"], not the string "U1".')),
    (job("users = [1]"), ('buildbot.toml: jobs.backend.users[0]: must be a string, not the '
     'number 1: quote it ("1").')),
    (job('users = ["U 1"]'), ('buildbot.toml: jobs.backend.users: "U 1" is not a Slack ID: IDs '
     "have no spaces, e.g. U01ALICE.")),
    (job('usergroups = ["*"]'), ('buildbot.toml: jobs.backend.usergroups: "*" is only allowed '
     "in users (it means everyone).")),
    (job("channels = []"), ("buildbot.toml: jobs.backend.channels: an empty list allows no "
     "channel: list channel IDs, or remove channels to allow any channel.")),
    # the example fits the field: a channel ID for channels, a group ID for usergroups
    (job('channels = ["C 1"]'), ('buildbot.toml: jobs.backend.channels: "C 1" is not a Slack '
     "ID: IDs have no spaces, e.g. C01BUILDS.")),
    (job('channels = "C1"'), ('buildbot.toml: jobs.backend.channels: must be a list of strings, '
     'e.g. ["C01BUILDS"], not the string "C1".')),
    (job('usergroups = ["S 1"]'), ('buildbot.toml: jobs.backend.usergroups: "S 1" is not a '
     "Slack ID: IDs have no spaces, e.g. S01DEVS.")),
    ('admins = "U1"', ('buildbot.toml: admins: must be a list of strings, e.g. ["U01ADMIN"], '
     'not the string "U1".')),
    ('admins = ["*"]', ('buildbot.toml: admins: "*" is only allowed in users (it means '
     'everyone).')),
    ('jobs = 1', "buildbot.toml: jobs: must be a table, not the number 1."),
    ('[jobs]\nbackend = "x"', 'buildbot.toml: jobs.backend: must be a table, not the string "x".'),
    (job("[jobs.backend.params.a]\ndefault = 5"), ("buildbot.toml: jobs.backend.params.a.default: "
     'must be a string, not the number 5: quote it ("5").')),
    (job("[jobs.backend.params.a]\ndefault = true"), ("buildbot.toml: jobs.backend.params.a."
     'default: must be a string, not the boolean true: quote it ("true").')),
    (job("[jobs.backend.params.a]\nchoices = [1, \"2\"]"), ("buildbot.toml: jobs.backend.params."
     'a.choices[0]: must be a string, not the number 1: quote it ("1").')),
    (job("[jobs.backend.params.a]\nrequired = \"no\""), ("buildbot.toml: jobs.backend.params.a."
     'required: must be true or false (no quotes), not the string "no".')),
    (job("[jobs.backend.params.a]\ndefault = \"x\"\nchoices = [\"master\", \"develop\"]"),
     ('buildbot.toml: jobs.backend.params.a.default: "x" is not one of choices '
     '["master", "develop"].')),
    (job("[jobs.backend.params.a]\ndefault = \"x y\"\npattern = '[a-z]+'"),
     'buildbot.toml: jobs.backend.params.a.default: "x y" does not match pattern "[a-z]+".'),
    (job("[jobs.backend.params.a]\npattern = '(['"),
     ('buildbot.toml: jobs.backend.params.a.pattern: "([" is not a valid regular expression: '
     "unterminated character set at position 1.")),
    (job("[jobs.backend.params.a]\nchoices = []"), ("buildbot.toml: jobs.backend.params.a."
     "choices: an empty list accepts no value: list the values or remove choices.")),
    (job("[jobs.backend.params.a]\nchoices = [\"ab\", \"1\"]\npattern = '[a-z]+'"),
     'buildbot.toml: jobs.backend.params.a.choices: "1" does not match pattern "[a-z]+".'),
    (job('[jobs.backend.params.a]\ndefault = "' + "x" * 8193 + '"'),
     ("buildbot.toml: jobs.backend.params.a.default: The value of `default` is 8,193 characters "
     "long: shorten it to at most 8,192.")),
    (job('[jobs.backend.params.a]\ndefault = "a\\nb"'),
     ("buildbot.toml: jobs.backend.params.a.default: The value of `default` contains a control "
     "character (U+000A): remove it; only tab is allowed.")),
    (job("[jobs.backend.params.code-branch]"), ("buildbot.toml: jobs.backend.params.code-branch: "
     "`code-branch` is not a valid parameter name: use letters, digits and _ only.")),
    (job("[jobs.backend.params.Path]"), ("buildbot.toml: jobs.backend.params.Path: `Path` is a "
     "reserved name the build service refuses (LD_PRELOAD, LD_LIBRARY_PATH, PATH, BASH_ENV, "
     "GIT_SSH_COMMAND, path, in any case): choose another name.")),
    (job(f"[jobs.backend.params.{'a' * 129}]"), (f"buildbot.toml: jobs.backend.params.{'a' * 129}"
     f": `{'a' * 59}…` is too long for a parameter name (129 characters): use at most 128.")),
    (job("", name="help"), ("buildbot.toml: jobs.help: `help` is a /build command word: "
     "rename the job.")),
    (job("", name="LIST"), ("buildbot.toml: jobs.LIST: `LIST` is a /build command word: "
     "rename the job.")),
    (job("", name="Status"), ("buildbot.toml: jobs.Status: `Status` is a /build command "
     "word: rename the job.")),
    (job("", name="subscriptions"), ("buildbot.toml: jobs.subscriptions: `subscriptions` is "
     "a /build command word: rename the job.")),
    (job("", name='"two words"'), ('buildbot.toml: jobs."two words": a job name must be one word '
     "without spaces, quotes, =, <, >, & or `: rename the table.")),
    (job("", name='"a=b"'), ('buildbot.toml: jobs."a=b": a job name must be one word '
     "without spaces, quotes, =, <, >, & or `: rename the table.")),
    (job("") + job("", name="Backend"), ("buildbot.toml: jobs.Backend: differs from jobs.backend "
     "only in case: rename one.")),
], ids=lambda v: v[:50] if isinstance(v, str) else v)
def test_each_rule_reports_file_job_and_field(text: str, problem: str) -> None:
    assert problems_of(text) == [problem]


def test_param_with_128_character_name_is_fine() -> None:
    text = job(f"[jobs.backend.params.{'a' * 128}]")
    assert list(parse_config(text, source="x").jobs["backend"].params) == ["a" * 128]


def test_all_problems_are_reported_at_once() -> None:
    text = f"""
typo = 1
[jobs.backend]
id = "short"
user = ["U1"]
confirm = "yes"
[jobs.backend.params.codeBranch]
default = "x"
choices = ["master"]
[jobs.backend.params.bad-name]
[jobs.frontend]
id = "{JOB_ID}"
[jobs.frontend.params.a]
pattern = '(['
default = 1
"""
    problems = problems_of(text)
    assert len(problems) == 8
    assert all(p.startswith("buildbot.toml: ") for p in problems)
    for fragment in ("typo:", "jobs.backend.id:", "jobs.backend.user:", "jobs.backend.confirm:",
                     "jobs.backend.params.codeBranch.default:", "jobs.backend.params.bad-name:",
                     "jobs.frontend.params.a.pattern:", "jobs.frontend.params.a.default:"):
        assert any(fragment in p for p in problems), fragment


def test_a_bad_default_type_is_reported_with_the_other_problems() -> None:
    problems = problems_of(job("[jobs.backend.params.a]\npattern = '(['\ndefault = 1"))
    assert [p.split(":")[1].strip() for p in problems] == [
        "jobs.backend.params.a.pattern", "jobs.backend.params.a.default"]


def test_invalid_toml_names_the_line() -> None:
    problems = problems_of('admins = ["U1"]\n[jobs.backend]\nid = \n')
    assert problems == ["buildbot.toml: not valid TOML: Invalid value (at line 3, column 6)."]


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "buildbot.toml"
    path.write_text(README_EXAMPLE, encoding="utf-8")
    assert load_config(path) == parse_config(README_EXAMPLE, source="x")
    assert load_config(str(path)).jobs["backend"].id == JOB_ID


def test_load_config_names_the_file_in_problems(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("typo = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [(f"{path}: typo: unknown key: check its spelling "
                                   "(allowed here: admins, max_per_user_per_hour, jobs, people).")]


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p / "missing.toml", ("file not found: create it (copy examples/buildbot.toml "
                                   "to start), or point BUILDBOT_CONFIG (or --config) at the "
                                   "jobs file.")),
    (lambda p: p, "cannot be read: Is a directory."),
    (lambda p: _write(p / "latin1.toml", b"description = \"caf\xe9\""),
     "not UTF-8 text (byte 18): save it as UTF-8."),
])
def test_missing_or_unreadable_file_is_a_clear_error(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    path = make(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}: {message}"]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- guard rails: approvals and the per-user limit -------------------------------------

GUARDED_JOB = job('approvers = ["U01CAROL", "U01DAVE"]\napprover_groups = ["S01LEADS"]\n'
                  'approvals = 2\napproval_channel = "C01APPROVALS"\napproval_ttl = "2h30m"\n'
                  'max_per_user_per_hour = 3')


def test_approval_and_limit_keys_load() -> None:
    config = parse_config("max_per_user_per_hour = 5\n" + GUARDED_JOB, source="x")
    backend = config.jobs["backend"]
    assert (backend.approvers, backend.approver_groups, backend.approvals) == (
        ["U01CAROL", "U01DAVE"], ["S01LEADS"], 2)
    assert backend.approval_channel == "C01APPROVALS" and backend.needs_approval
    assert backend.approval_ttl_seconds == 9000.0
    assert (backend.max_per_user_per_hour, config.max_per_user_per_hour) == (3, 5)


def test_approval_defaults() -> None:
    backend = parse_config(job('approvers = ["U1"]'), source="x").jobs["backend"]
    assert backend.approvals is None and backend.approval_ttl_seconds == 3600.0
    plain = parse_config(job(""), source="x").jobs["backend"]
    assert not plain.needs_approval and plain.max_per_user_per_hour is None


@pytest.mark.parametrize(("body", "problem"), [
    ('approvers = ["U1 U2"]', 'jobs.backend.approvers: "U1 U2" is not a Slack ID: IDs have no '
     "spaces, e.g. U01CAROL."),
    ('approvers = ["*"]', 'jobs.backend.approvers: "*" is only allowed in users'),
    ('approver_groups = [""]', 'jobs.backend.approver_groups: "" is not a Slack ID'),
    ('approvers = ["U1"]\napproval_channel = "C 1"', "jobs.backend.approval_channel: "
     '"C 1" is not a Slack ID'),
    ("approvals = 1", "jobs.backend.approvals: 1 approval(s) needed but nobody may approve: "
     "list approvers (user IDs) or approver_groups, or remove approvals."),
    ('approvers = ["U1", "U2"]\napprovals = 3', "jobs.backend.approvals: 3 approvals needed "
     "but only 2 approver(s) listed: list more approvers, add approver_groups, or lower it."),
    ('approvers = ["U1", "U1"]\napprovals = 2', "only 1 approver(s) listed"),
    ('approvers = ["U1"]\napprovals = 0', "jobs.backend.approvals: must be 1 or more, not 0"),
    ('approvers = ["U1"]\napprovals = "2"', "jobs.backend.approvals: must be a whole number "
     '(no quotes), not the string "2".'),
    ('approvers = ["U1"]\napproval_ttl = "1 day"', 'jobs.backend.approval_ttl: "1 day" is not '
     "a duration: write it like 30m, 1h or 2h30m."),
    ('approvers = ["U1"]\napproval_ttl = "25h"', 'jobs.backend.approval_ttl: "25h" is out of '
     "range: give between 1m and 24h."),
    ('approvers = ["U1"]\napproval_ttl = "30s"', "out of range"),
    ('approval_ttl = "1h"', "jobs.backend.approval_ttl: has no effect without approvers or "
     "approver_groups: list who may approve, or remove it."),
    ('approval_channel = "C1"', "jobs.backend.approval_channel: has no effect without"),
    ("max_per_user_per_hour = 0", "jobs.backend.max_per_user_per_hour: must be 1 or more, "
     "not 0: remove it for no limit."),
    ("max_per_user_per_hour = 1.5", "jobs.backend.max_per_user_per_hour: must be a whole "
     "number"),
])
def test_each_guard_rail_problem_names_file_job_and_field(body: str, problem: str) -> None:
    (found,) = problems_of(job(body))
    assert found.startswith("buildbot.toml: ") and problem in found


def test_guard_rail_problems_come_all_at_once_with_the_others() -> None:
    text = ("max_per_user_per_hour = -1\n" + job('approvals = 2\nusers = ["U 1"]')
            + job('approvers = ["U1"]\napproval_ttl = "soon"', name="web"))
    found = problems_of(text)
    assert [p.split(":")[1].strip() for p in found] == [
        "max_per_user_per_hour", "jobs.backend.users", "jobs.backend.approvals",
        "jobs.web.approval_ttl"]


def test_readme_documents_the_guard_rail_keys() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    example = next(block.split("```", 1)[0] for block in readme.split("```toml\n")[1:]
                   if "approvers" in block.split("```", 1)[0])
    config = parse_config(example, source="README.md")
    guarded = [j for j in config.jobs.values() if j.needs_approval]
    assert guarded and config.max_per_user_per_hour is not None
    for key in ("approvers", "approver_groups", "approvals", "approval_channel",
                "approval_ttl", "max_per_user_per_hour"):
        assert f"`{key}`" in readme, key


# ---------------------------------------------------------------- [people] (issue 28)

def test_people_map_codearts_names_to_slack_users_whatever_the_case() -> None:
    config = parse_config('[people]\n"zhang.san" = "U01ZHANG"\n"li.si" = "W02LISI"\n'
                          '"li.si.old" = "W02LISI"\n', source="buildbot.toml")
    assert config.person("zhang.san") == config.person(" ZHANG.SAN ") == "U01ZHANG"
    assert config.person("li.si.old") == "W02LISI"  # two accounts, one person: fine
    assert config.person("wang.wu") is None and config.person(None) is None
    assert parse_config("", source="x").people == {}


@pytest.mark.parametrize(("text", "problem"), [
    ('[people]\n"zhang.san" = "zhang"\n',
     'people: "zhang.san" = "zhang": the value must be a Slack user ID (U… or W…'),
    ('[people]\n"zhang.san" = "C01BUILDS"\n', "must be a Slack user ID"),
    ('[people]\n"zhang.san" = "U01ZHANG"\n"Zhang.San" = "U02OTHER"\n',
     '"zhang.san" and "Zhang.San" are the same CodeArts name (names are matched regardless '
     "of case): keep one"),
    ('[people]\n" " = "U01ZHANG"\n', "is not a CodeArts user name"),
    ('[people]\n"a" = 5\n', "people.a: must be a string"),
    ("people = 3\n", "people: must be a table"),
])
def test_people_problems_say_how_to_fix_them(text: str, problem: str) -> None:
    (found,) = problems_of(text)
    assert found.startswith("buildbot.toml: ") and problem in found, found


def test_an_unknown_top_level_key_lists_people_among_the_allowed() -> None:
    (found,) = problems_of("peoples = 1\n")
    assert "people" in found.split("allowed here:", 1)[1]
