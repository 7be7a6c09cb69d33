"""The API's value rules on their own: job IDs, parameter names and values, commit and tag."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bot.rules import (
    commit_problem,
    job_id_problem,
    param_name_problem,
    param_value_problem,
    show,
    tag_problem,
)

RESERVED = ("`{}` is a reserved name the build service refuses (LD_PRELOAD, LD_LIBRARY_PATH, "
            "PATH, BASH_ENV, GIT_SSH_COMMAND, path, in any case): choose another name.")


@pytest.mark.parametrize(("name", "problem"), [
    ("a" * 128, None), ("A_1", None), ("_", None), ("PATH_X", None), ("my_path", None),
    ("code-branch", ("`code-branch` is not a valid parameter name: use letters, digits and _ "
                    "only.")),
    ("a.b", "`a.b` is not a valid parameter name: use letters, digits and _ only."),
    ("é", "`é` is not a valid parameter name: use letters, digits and _ only."),
    ("", "`` is not a valid parameter name: use letters, digits and _ only."),
    ("a" * 129, (f"`{'a' * 59}…` is too long for a parameter name (129 characters): "
                "use at most 128.")),
] + [(name, RESERVED.format(name))
     for name in ["LD_PRELOAD", "ld_preload", "LD_LIBRARY_PATH", "Ld_Library_Path", "PATH",
                  "path", "Path", "BASH_ENV", "bash_env", "GIT_SSH_COMMAND",
                  "git_ssh_command"]])
def test_parameter_names(name: str, problem: str | None) -> None:
    assert param_name_problem(name) == problem


@pytest.mark.parametrize(("value", "problem"), [
    ("", None),
    ("x" * 8192, None),
    ("x" * 8193, "The value of `v` is 8,193 characters long: shorten it to at most 8,192."),
    ("a\tb", None),
    ("a\x00b", ("The value of `v` contains a control character (U+0000): remove it; "
               "only tab is allowed.")),
    ("a\nb", ("The value of `v` contains a control character (U+000A): remove it; "
             "only tab is allowed.")),
    ("a\x7fb", ("The value of `v` contains a control character (U+007F): remove it; "
               "only tab is allowed.")),
    ("ünïcødé ✓", None),
])
def test_parameter_values(value: str, problem: str | None) -> None:
    assert param_value_problem("v", value) == problem


@pytest.mark.parametrize(("job_id", "ok"), [
    ("f9d6c8466d614a9788e9a0acf6c15f46", True), ("F9D6C8466D614A9788E9A0ACF6C15F46", True),
    ("a" * 32, True), ("a" * 31, False), ("a" * 33, False), ("a" * 31 + "-", False),
    ("a" * 31 + "é", False), ("", False),
])
def test_job_ids_are_32_letters_and_digits(job_id: str, ok: bool) -> None:
    problem = job_id_problem(job_id)
    assert problem is None if ok else problem == (
        f"`{show(job_id)}` is not a build task ID: it must be 32 letters and digits "
        "(the end of the task's edit-page URL).")


@pytest.mark.parametrize(("commit", "ok"), [
    ("a", True), ("abc", True), ("ABC", True), ("abc123", True), ("abc1234", True),
    ("ABCDEF0", True), ("0123456789abcdef" * 4, True),
    ("", False), ("a" * 65, False), ("abc123g", False), ("HEAD", False), ("abc 1234", False),
    ("master", False), ("0x1a2b", False), ("abc\n", False), ("１２３", False),
])
def test_commit_is_1_to_64_hex_digits(commit: str, ok: bool) -> None:
    problem = commit_problem(commit)
    assert problem is None if ok else problem == (
        f"`commit={show(commit)}` is not a commit ID: give 1 to 64 hexadecimal digits, "
        "e.g. commit=1a2b3c4d.")


@pytest.mark.parametrize(("tag", "problem"), [
    ("v1.2.0", None),
    ("release/2025-09", None),
    ("t" * 255, None),
    ("t" * 256, "`tag=` must be 1 to 255 characters long (256 given)."),
    ("", "`tag=` must be 1 to 255 characters long (0 given)."),
    ("v 1", ("`tag=v 1` is not a valid tag: no spaces or control characters, and it cannot "
            "start with -.")),
    ("v\u00a01", ("`tag=v\u00a01` is not a valid tag: no spaces or control characters, and it "
                 "cannot start with -.")),
    ("v\x001", ("`tag=v\x001` is not a valid tag: no spaces or control characters, and it "
               "cannot start with -.")),
    ("-v1", ("`tag=-v1` is not a valid tag: no spaces or control characters, and it cannot "
            "start with -.")),
])
def test_tags(tag: str, problem: str | None) -> None:
    assert tag_problem(tag) == problem


@pytest.mark.parametrize(("text", "shown"), [
    ("abc", "abc"), ("a`b", "a'b"), ("x" * 60, "x" * 60), ("x" * 61, "x" * 59 + "…"),
])
def test_show_quotes_short_and_without_backticks(text: str, shown: str) -> None:
    assert show(text) == shown


def test_rules_and_config_stand_below_policy() -> None:
    """rules imports nothing from the bot, and config does not import policy (no circle)."""
    code = ("import sys, bot.rules; a = sorted(m for m in sys.modules if m.startswith('bot.')); "
            "import bot.config; b = 'bot.policy' in sys.modules; print(a, b)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out == "['bot.rules'] False\n"
