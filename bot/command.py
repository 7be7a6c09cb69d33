"""Slash-command text -> a parsed request. Pure: no Slack, no config, never raises.

Grammar (the README's "The command" shows it to users)::

    /build                       -> Help("help")
    /build help | list           -> Help("help") | Help("list")  (any words after are ignored,
                                    but a page number: ``help 2`` -> Help("help", page=2))
    /build status [<job>]        -> StatusCommand (the job's last builds, or all your jobs')
    /build stop <job> <build_no> -> StopCommand (``#42`` and ``42`` alike)
    /build subscribe <job> [all|failures|changes] [branch=<glob>] | unsubscribe <job>
          | subscriptions
                                 -> SubscribeCommand | UnsubscribeCommand | SubscriptionsCommand
    /build <job> [name=value ...] [commit=<sha>] [tag=<tag>]  -> BuildCommand

The first word is a job name unless it is one of ``COMMAND_WORDS`` (any case): those are
never job names (a job of that name could not be run).

Decisions, so that the result is predictable:

* Slack's escaping is undone first. ``&amp;`` ``&lt;`` ``&gt;`` are decoded once.
  Links: ``<https://x|label>`` and ``<https://x>`` give ``https://x``; but when the
  URL is only the label with a scheme Slack added (``<http://a.io|a.io>``,
  ``<mailto:a@b.io|a@b.io>``), the label is kept, because that is what was typed.
  User mentions ``<@U123|bob>`` give ``@bob``; without a name, ``<@U123>`` gives
  ``@U123``. Channels ``<#C123|builds>`` give ``#builds`` (``#C123`` without a name).
  Specials ``<!here>`` give ``@here``; ``<!subteam^S1|@devs>`` gives ``@devs``; any
  other special with a label gives the label. Text that came from Slack markup or
  from an entity is taken literally: it never acts as a quote, ``=`` or separator.
* Words are separated by any whitespace (spaces, non-breaking spaces, tabs, newlines),
  but for the line and paragraph separators U+2028 and U+2029: those stay in their word,
  where the checks (``bot.rules.hidden_problem``) refuse them like any invisible character.
* A value may be quoted: ``msg="two words"``, ``msg='x'``, or with the curly quotes
  Slack clients type (double: U+201C-U+201F, single: U+2018-U+201B); any double-style
  quote closes any double-style one, and likewise for single-style. A quote opens
  only at the start of a word or right after the first ``=``; elsewhere (``it's``)
  it is an ordinary character. The closing quote must end the word (``name="a b"c``
  is an error). There are no backslash escapes: put a ``"`` inside single quotes and
  a ``'`` inside double quotes.
* ``name=`` gives an empty value (allowed), except for ``commit`` and ``tag``.
* A name given twice is an error (``codeBranch`` is compared exactly; ``commit`` and
  ``tag`` regardless of case, so ``commit=a COMMIT=b`` is an error too).
* All problems found are reported together in ``ParseError.problems``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Literal

from bot.rules import show

SCM_NAMES = ("commit", "tag")
_DOUBLE_QUOTES = frozenset('"\u201c\u201d\u201e\u201f')  # " and curly double quotes
_SINGLE_QUOTES = frozenset("'\u2018\u2019\u201a\u201b")  # ' and curly single quotes
_MARKUP = re.compile(r"<([^<>]*)>")
_ENTITY = re.compile(r"&(amp|lt|gt);")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">"}
_DIGITS = re.compile(r"[0-9]+")
_SEPARATORS = frozenset("\u2028\u2029")  # whitespace, but kept in the word (see above)
MAX_PAGE = 999_999
# Words that start a subcommand, never a job name.
COMMAND_WORDS = ("help", "list", "status", "stop", "subscribe", "unsubscribe", "subscriptions")
MAX_BUILD_NO_DIGITS = 18  # a CodeArts build number: digits, well within a 64-bit integer


@dataclass(frozen=True)
class Help:
    """The user asked for usage (``help``) or for the jobs they may run (``list``); the
    jobs are listed a page at a time, ``page`` counting from 1."""

    WORD: ClassVar[str] = "help"  # its first word (``explain`` says it)

    kind: Literal["help", "list"]
    page: int = 1


@dataclass(frozen=True)
class BuildCommand:
    """A request to run a job; nothing is checked against the config yet."""

    job: str
    params: tuple[tuple[str, str], ...] = ()
    commit: str | None = None
    tag: str | None = None


@dataclass(frozen=True)
class StatusCommand:
    """``/build status [job]``: a job's last builds, or (``job`` None) the last result of
    every job the user may run here."""

    WORD: ClassVar[str] = "status"  # its first word (``explain`` says it)

    job: str | None = None


@dataclass(frozen=True)
class StopCommand:
    """``/build stop <job> <build_no>``: stop a running build, after a confirmation.
    ``build_no`` is CodeArts' build number, digits without leading zeros."""

    WORD: ClassVar[str] = "stop"  # its first word (``explain`` says it)

    job: str
    build_no: str


@dataclass(frozen=True)
class ParseError:
    """The text could not be read; each problem says what to change."""

    problems: tuple[str, ...]

    @property
    def message(self) -> str:
        return "\n".join(self.problems)


@dataclass(frozen=True)
class SubscribeCommand:
    """``/build subscribe <job> [all|failures|changes] [branch=<glob>]``: announce in this
    channel the job's builds started outside Slack (``all``), only those that fail
    (``failures``), or only when its result on a branch flips (``changes``); ``branch``:
    only builds of branches matching the glob (``*``, ``?``)."""

    WORD: ClassVar[str] = "subscribe"  # its first word (``explain`` says it)

    job: str
    filter: str = "all"
    branch: str | None = None


@dataclass(frozen=True)
class UnsubscribeCommand:
    """``/build unsubscribe <job>``: no new announcements of the job here."""

    WORD: ClassVar[str] = "unsubscribe"  # its first word (``explain`` says it)

    job: str


@dataclass(frozen=True)
class SubscriptionsCommand:
    """``/build subscriptions``: this channel's subscriptions."""

    WORD: ClassVar[str] = "subscriptions"  # its first word (``explain`` says it)


SubsCommand = SubscribeCommand | UnsubscribeCommand | SubscriptionsCommand


# A character of the unescaped text and whether it is literal (came from markup/entities).
_Char = tuple[str, bool]


@dataclass
class _Word:
    """One whitespace-separated word: its name part (if it has an unquoted ``=``) and value."""

    raw: str
    name: str | None
    value: str


Parsed = (Help | StatusCommand | StopCommand | BuildCommand | ParseError | SubscribeCommand
          | UnsubscribeCommand | SubscriptionsCommand)


def parse(text: str) -> Parsed:
    """Read the text after ``/build``; return a value, never raise, so callers need no try."""
    items = _split_words(unescape_chars(text))
    if not items:
        return Help("help")
    head = items[0]
    if isinstance(head, _Word) and head.name is None and head.value.lower() in ("help", "list"):
        return Help("help" if head.value.lower() == "help" else "list", _page(items[1:2]))
    if isinstance(head, _Word) and head.name is None and head.value.lower() in COMMAND_WORDS:
        return _subcommand(head.value.lower(), items[1:])
    if isinstance(head, str):
        return ParseError(tuple(i for i in items if isinstance(i, str)))
    return _build(head, items[1:])


def _page(words: list[_Word | str]) -> int:
    """The page number after ``help``: ASCII digits, at least 1, at most ``MAX_PAGE``;
    anything else (or nothing) is page 1."""
    word = words[0] if words else None
    if not isinstance(word, _Word) or word.name is not None or not _DIGITS.fullmatch(word.value):
        return 1
    digits = word.value.lstrip("0") or "0"
    return max(1, int(digits) if len(digits) <= 6 else MAX_PAGE)


def unescape_chars(text: str) -> list[_Char]:
    """Unescape, remembering which characters came from markup so they stay literal."""
    out: list[_Char] = []
    pos = 0
    for m in _MARKUP.finditer(text):
        out += _plain_chars(text[pos:m.start()])
        out += [(c, True) for c in _decode(_markup_text(m.group(1)))]
        pos = m.end()
    out += _plain_chars(text[pos:])
    return out


def _plain_chars(text: str) -> list[_Char]:
    """Characters outside markup: an entity decodes to a literal character."""
    out: list[_Char] = []
    pos = 0
    for m in _ENTITY.finditer(text):
        out += [(c, False) for c in text[pos:m.start()]]
        out.append((_ENTITIES[m.group(1)], True))
        pos = m.end()
    return out + [(c, False) for c in text[pos:]]


def _decode(text: str) -> str:
    return _ENTITY.sub(lambda m: _ENTITIES[m.group(1)], text)


def _markup_text(inner: str) -> str:
    """What a piece of Slack markup (without its angle brackets) stands for."""
    target, _, label = inner.partition("|")
    if target.startswith("@"):
        return "@" + (label.lstrip("@") or target[1:])
    if target.startswith("#"):
        return "#" + (label.lstrip("#") or target[1:])
    if target.startswith("!"):
        return _special_text(target[1:], label)
    if label and _decode(target) in _autolinks(_decode(label)):
        return label
    return target


def _special_text(target: str, label: str) -> str:
    """``!here`` -> ``@here``; ``!subteam^S1|@devs`` -> ``@devs``; else the label if any."""
    kind, _, ident = target.partition("^")
    if kind == "subteam":
        return "@" + (label.lstrip("@") or ident)
    if label:
        return label
    return "@" + kind


def _autolinks(label: str) -> tuple[str, ...]:
    """The URLs Slack makes from a bare word the user typed."""
    return ("http://" + label, "https://" + label, "mailto:" + label)


def _split_words(chars: list[_Char]) -> list[_Word | str]:
    """Split into words, honouring quotes; a word that cannot be read becomes its problem."""
    items: list[_Word | str] = []
    i = 0
    while i < len(chars):
        if _is_space(chars[i]):
            i += 1
            continue
        word, i = _read_word(chars, i)
        items.append(word)
    return items


def _is_space(ch: _Char) -> bool:
    return not ch[1] and ch[0].isspace() and ch[0] not in _SEPARATORS


def _quote_family(ch: _Char) -> frozenset[str] | None:
    if ch[1]:
        return None
    if ch[0] in _DOUBLE_QUOTES:
        return _DOUBLE_QUOTES
    if ch[0] in _SINGLE_QUOTES:
        return _SINGLE_QUOTES
    return None


def _read_word(chars: list[_Char], i: int) -> tuple[_Word | str, int]:
    """Read one word from ``i``; return it (or its problem) and the next index."""
    start = i
    name: str | None = None
    buf: list[str] = []
    while i < len(chars) and not _is_space(chars[i]):
        at_value_start = i == start or (name is not None and not buf)
        family = _quote_family(chars[i]) if at_value_start else None
        if family is not None:
            return _read_quoted(chars, start, i, family, name)
        c, literal = chars[i]
        if c == "=" and not literal and name is None:
            name, buf = "".join(buf), []
        else:
            buf.append(c)
        i += 1
    return _Word(_raw(chars, start, i), name, "".join(buf)), i


def _read_quoted(chars: list[_Char], start: int, q: int, family: frozenset[str],
                 name: str | None) -> tuple[_Word | str, int]:
    """Read a quoted value starting at ``q``; the closing quote must end the word."""
    j = q + 1
    while j < len(chars) and _quote_family(chars[j]) is not family:
        j += 1
    if j == len(chars):
        raw = _raw(chars, start, j)
        return (f"The quote opened in `{show(raw)}` is not closed: "
                "add a closing quote."), j
    value = "".join(c for c, _ in chars[q + 1:j])
    end = j + 1
    if end < len(chars) and not _is_space(chars[end]):
        while end < len(chars) and not _is_space(chars[end]):
            end += 1
        raw = _raw(chars, start, end)
        return (f"`{show(raw)}` has text after its closing quote: "
                "put the whole value inside the quotes."), end
    return _Word(_raw(chars, start, end), name, value), end


def _raw(chars: list[_Char], start: int, end: int) -> str:
    return "".join(c for c, _ in chars[start:end])


def _build(head: _Word, rest: list[_Word | str]) -> BuildCommand | ParseError:
    """Turn the words after the job into params and scm fields, collecting every problem."""
    problems: list[str] = []
    if head.name is not None:
        problems.append(f"`{show(head.raw)}` looks like a parameter, but the first word "
                        "must be a job name: write /build <job> name=value "
                        "(`/build list` shows your jobs).")
    params: list[tuple[str, str]] = []
    scm: dict[str, str] = {}
    seen: set[str] = set()
    for word in rest:
        problem = word if isinstance(word, str) else _word_problem(word, seen)
        if problem:
            problems.append(problem)
        elif isinstance(word, _Word) and word.name is not None:
            _store(word.name, word.value, params, scm)
    if problems:
        return ParseError(tuple(problems))
    return BuildCommand(head.value, tuple(params), scm.get("commit"), scm.get("tag"))


def _store(name: str, value: str, params: list[tuple[str, str]], scm: dict[str, str]) -> None:
    if name.lower() in SCM_NAMES:
        scm[name.lower()] = value
    else:
        params.append((name, value))


def _word_problem(word: _Word, seen: set[str]) -> str | None:
    """The problem with one ``name=value`` word, if any; records its name in ``seen``."""
    if word.name is None:
        return (f"`{show(word.raw)}` has no `=`: write parameters as name=value, "
                "e.g. codeBranch=master")
    if word.name == "":
        return f"`{show(word.raw)}` has no name before `=`: write name=value."
    key = word.name.lower() if word.name.lower() in SCM_NAMES else word.name
    if key in seen:
        return f"`{show(word.name)}` is given twice: give it once."
    seen.add(key)
    if key in SCM_NAMES and word.value == "":
        return f"`{word.name}=` is empty: give a value, e.g. {key}=" + (
            "1a2b3c4d" if key == "commit" else "v1.2.0") + f", or leave {key}= out."
    return None


# --- status and stop ----------------------------------------------------------------

_STOP_USAGE = ("write /build stop <job> <build number>, e.g. /build stop backend 42 "
               "(`/build status <job>` shows the numbers).")


def _subcommand(word: str, rest: list[_Word | str]) -> Parsed:
    """``status``, ``stop`` and the subscription words, with their words."""
    problems = [w for w in rest if isinstance(w, str)]
    if problems:
        return ParseError(tuple(problems))
    words = [w for w in rest if isinstance(w, _Word)]
    named = next((w for w in words if w.name is not None
                  and not (word == "subscribe" and w.name.lower() == "branch")), None)
    if named is not None:
        return ParseError((f"`{show(named.raw)}` looks like a parameter: `/build {word}` "
                           "takes a job name" + (", then a build number: " + _STOP_USAGE
                                                 if word == "stop" else "."),))
    if word == "status":
        if len(words) > 1:
            return ParseError(("`/build status` takes one job name at most: write "
                               "/build status <job>, or /build status for all your jobs.",))
        return StatusCommand(words[0].value if words else None)
    if word == "stop":
        return _stop(words)
    return _subscription_words(word, words)


def _stop(words: list[_Word]) -> StopCommand | ParseError:
    if not words:
        return ParseError(("`/build stop` needs a job and a build number: " + _STOP_USAGE,))
    if len(words) == 1:
        return ParseError((f"`/build stop {show(words[0].raw)}` needs the build number after "
                           "the job: " + _STOP_USAGE,))
    if len(words) > 2:
        return ParseError(("`/build stop` has too many words: " + _STOP_USAGE,))
    job, given = words[0].value, words[1].value
    digits = given.removeprefix("#")
    if digits.isascii() and digits.isdigit() and len(digits.lstrip("0")) <= MAX_BUILD_NO_DIGITS \
            and digits.lstrip("0"):
        return StopCommand(job, digits.lstrip("0"))
    if re.fullmatch(r"[0-9]{8}\.[0-9]+", given):
        return ParseError((f"`{show(given)}` is a daily number: give the build number "
                           "(the one after #, e.g. 42) instead; `/build status "
                           f"{show(job)}` shows both.",))
    return ParseError((f"`{show(given)}` is not a build number: give the whole number CodeArts "
                       "shows after # (e.g. 42); " + _STOP_USAGE,))


# --- subscriptions ---------------------------------------------------------------------

FILTERS = ("all", "failures", "changes")
_SUBSCRIBE_USAGE = ("write /build subscribe <job> [all|failures|changes] [branch=<glob>], "
                    "e.g. /build subscribe backend changes branch=release/*.")
MAX_GLOB_CHARS = 100
# what a branch glob may hold: a branch name's usual characters, and * and ? as wildcards
_GLOB_RE = re.compile(r"[A-Za-z0-9._/+@*?-]+")


def branch_glob_problem(glob: str) -> str | None:
    """Why ``glob`` is not a branch filter (None when it is): at most ``MAX_GLOB_CHARS``
    characters of letters, digits, ``. _ / + @ -`` and the wildcards ``*`` and ``?``."""
    if not glob:
        return ("`branch=` needs a branch or a pattern, e.g. `branch=master` or "
                "`branch=release/*`.")
    if len(glob) > MAX_GLOB_CHARS:
        return f"`branch=` takes at most {MAX_GLOB_CHARS} characters."
    if not _GLOB_RE.fullmatch(glob):
        bad = "".join(sorted({c for c in glob if not _GLOB_RE.fullmatch(c)}))[:10]
        return (f"`branch={show(glob[:MAX_GLOB_CHARS])}` has characters a branch filter does "
                f"not take ({show(bad)}): use letters, digits, `. _ / + @ -`, and `*` (any "
                "characters) or `?` (one character).")
    return None


def _subscription_words(word: str, words: list[_Word]) -> SubsCommand | ParseError:
    if word == "subscriptions":
        if words:
            return ParseError(("`/build subscriptions` takes no words: it lists this "
                               "channel's subscriptions.",))
        return SubscriptionsCommand()
    if not words:
        return ParseError((f"`/build {word}` needs a job name: " + (
            _SUBSCRIBE_USAGE if word == "subscribe" else "write /build unsubscribe <job>."),))
    if word == "unsubscribe":
        if len(words) > 1:
            return ParseError(("`/build unsubscribe` takes one job name: write "
                               "/build unsubscribe <job>.",))
        return UnsubscribeCommand(words[0].value)
    branches = [w for w in words if w.name is not None]
    plain = [w for w in words if w.name is None]
    if len(branches) > 1:
        return ParseError(("`branch=` is given twice: give one pattern; " + _SUBSCRIBE_USAGE,))
    if not plain:
        return ParseError(("`/build subscribe` needs a job name first: " + _SUBSCRIBE_USAGE,))
    if len(plain) > 2:
        return ParseError(("`/build subscribe` has too many words: " + _SUBSCRIBE_USAGE,))
    problems: list[str] = []
    chosen = plain[1].value.lower() if len(plain) == 2 else "all"
    if chosen not in FILTERS:
        problems.append(f"`{show(plain[1].raw)}` is not a mode: use `all` (every build), "
                        "`failures` (failed builds only) or `changes` (when a branch breaks "
                        "or is fixed); " + _SUBSCRIBE_USAGE)
    branch = branches[0].value if branches else None
    if branch is not None and (problem := branch_glob_problem(branch)):
        problems.append(problem)
    if problems:
        return ParseError(tuple(problems))
    return SubscribeCommand(plain[0].value, chosen, branch)
