"""What the CodeArts Build API accepts in a run request: the value rules, in one place. Pure.

Both the jobs file (``bot.config``: job IDs, declared parameter names, defaults and
choices) and each command (``bot.policy``) are checked against these rules, so that a
value the build service would refuse is caught before anything is sent. Each ``*_problem``
function returns None, or one sentence saying what is wrong and how to fix it. Problems
are plain text (backticks only) and may contain user input: escape them before putting
them in mrkdwn. This module imports nothing from the rest of the bot.

The rules (they apply to admins and to undeclared parameters too):

* A build task ID is 32 ASCII letters and digits (the end of the task's edit-page URL).
* A parameter name is 1-128 ASCII letters, digits or ``_`` and is none of the names the
  build service refuses (``RESERVED_NAMES``), in any letter case.
* A parameter value is at most 8,192 characters with no control characters other than
  tab (NUL, newline, DEL ... are refused).
* ``commit`` (``scm.build_commit_id``) is a commit ID or abbreviation: 1-64 hexadecimal
  digits in any case, sent in lower case. Whether it names a commit is for CodeArts to
  say.
* ``tag`` (``scm.build_tag``) is 1-255 characters with no whitespace or control
  characters and does not start with ``-``.

And one rule of our own, so that what people see is what runs (``hidden_problem``): no job
name, parameter name, value, commit or tag may hold a character that is invisible or that
reorders the text around it: Unicode format characters (category Cf: the bidirectional
controls U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C; the zero-width U+200B-U+200D,
U+2060, U+FEFF; the soft hyphen, the invisible tag characters U+E0000-U+E007F, ...), the
line and paragraph separators U+2028 and U+2029, and the Hangul fillers (U+115F, U+1160,
U+3164, U+FFA0), which look like nothing at all.
"""

from __future__ import annotations

import re
import unicodedata

RESERVED_NAMES = ("LD_PRELOAD", "LD_LIBRARY_PATH", "PATH", "BASH_ENV", "GIT_SSH_COMMAND", "path")
_RESERVED_FOLDED = frozenset(n.casefold() for n in RESERVED_NAMES)
MAX_NAME = 128
MAX_VALUE = 8192
MAX_TAG = 255
NAME_RE = re.compile(r"[A-Za-z0-9_]+")
JOB_ID_RE = re.compile(r"[A-Za-z0-9]{32}")
COMMIT_RE = re.compile(r"[0-9A-Fa-f]{1,64}")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
SHOW_LIMIT = 60  # characters of user input quoted back in a problem
_HIDDEN_OTHERS = frozenset("\u2028\u2029\u115f\u1160\u3164\uffa0")


def is_hidden(char: str) -> bool:
    """Whether this character is invisible or reorders what is around it (see above)."""
    return char in _HIDDEN_OTHERS or unicodedata.category(char) == "Cf"


def hidden_char(text: str) -> str | None:
    """The first invisible or reordering character in ``text``, or None."""
    return next((c for c in text if is_hidden(c)), None)


def char_name(char: str) -> str:
    """``U+202E RIGHT-TO-LEFT OVERRIDE``: a character said so that it can be seen."""
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {name}" if name else f"U+{ord(char):04X}"


def hidden_problem(what: str, text: str) -> str | None:
    """Why ``text`` is refused when it holds an invisible or reordering character, or None.
    ``what`` says which value it is, as the user would name it (e.g. "The value of
    `msg`"); it must not hold such a character itself (use ``visible`` on user input)."""
    char = hidden_char(text)
    if char is None:
        return None
    return (f"{what} holds an invisible character ({char_name(char)}); type it again "
            "without it.")


def visible(text: str) -> str:
    """User input to quote in a problem (``show``), its invisible characters written out
    as ``[U+202E]`` so the problem itself shows where they are."""
    return show("".join(f"[U+{ord(c):04X}]" if is_hidden(c) else c for c in text))


def param_name_problem(name: str) -> str | None:
    """Why the build service would refuse this parameter name, or None."""
    if len(name) > MAX_NAME:
        return (f"`{show(name)}` is too long for a parameter name ({len(name)} characters): "
                f"use at most {MAX_NAME}.")
    if not NAME_RE.fullmatch(name):
        return f"`{show(name)}` is not a valid parameter name: use letters, digits and _ only."
    if name.casefold() in _RESERVED_FOLDED:
        return (f"`{name}` is a reserved name the build service refuses "
                f"({', '.join(RESERVED_NAMES)}, in any case): choose another name.")
    return None


def param_value_problem(name: str, value: str) -> str | None:
    """Why the build service would refuse this value (length, control characters), or None."""
    if len(value) > MAX_VALUE:
        return (f"The value of `{show(name)}` is {len(value):,} characters long: "
                f"shorten it to at most {MAX_VALUE:,}.")
    bad = _CONTROL.search(value)
    if bad:
        return (f"The value of `{show(name)}` contains a control character "
                f"(U+{ord(bad.group()):04X}): remove it; only tab is allowed.")
    return None


def job_id_problem(job_id: str) -> str | None:
    """Why this is not a CodeArts build task ID (32 letters and digits), or None."""
    if JOB_ID_RE.fullmatch(job_id):
        return None
    return (f"`{show(job_id)}` is not a build task ID: it must be 32 letters and digits "
            "(the end of the task's edit-page URL).")


def commit_problem(commit: str) -> str | None:
    """Why this is not a commit ID or abbreviation we send (1-64 hexadecimal digits), or None."""
    if COMMIT_RE.fullmatch(commit):
        return None
    return (f"`commit={show(commit)}` is not a commit ID: give 1 to 64 hexadecimal digits, "
            "e.g. commit=1a2b3c4d.")


def tag_problem(tag: str) -> str | None:
    """Why this tag is refused (empty, too long, whitespace, control characters, leading -)."""
    if not tag or len(tag) > MAX_TAG:
        return f"`tag=` must be 1 to {MAX_TAG} characters long ({len(tag)} given)."
    if any(c.isspace() for c in tag) or _CONTROL.search(tag) or tag.startswith("-"):
        return (f"`tag={show(tag)}` is not a valid tag: no spaces or control characters, "
                "and it cannot start with -.")
    return None


def show(text: str) -> str:
    """Text to quote in a message: short, and without backticks that would break the quoting."""
    text = text.replace("`", "'")
    return text if len(text) <= SHOW_LIMIT else text[: SHOW_LIMIT - 1] + "…"
