"""Secrets out of any text the bot shows from a build or from CodeArts. Pure, no I/O.

``mask_text(text)`` is the one function: it takes a text of any number of lines and
gives it back with every credential it recognises replaced by ``MASK`` (``****``).
``Masker`` does the same one line at a time for a log read in pages, carrying what
a line cannot know alone (being inside a PEM block or a YAML secret's block).
``secret_name(name)`` says whether a name (a parameter's, a key's) looks like it
holds a secret.

What is masked, in this order on each line:

1. every ``known`` value (the bot's own credentials), wherever it appears;
2. PEM blocks: from ``-----BEGIN …-----`` (any kind, not only private keys) to its
   ``-----END …-----`` line, every line, BEGIN and END included (what precedes BEGIN
   on its line stays). A BEGIN without END stops masking after ``PEM_MAX_LINES``
   lines, so one stray BEGIN cannot blank a whole log. Likewise the indented block
   of a YAML block scalar whose key is a secret name (``password: |``), up to the
   first line indented no deeper than the key;
3. the ``Authorization``, ``Proxy-Authorization``, ``Cookie`` and ``Set-Cookie``
   headers (``:`` or ``=``, quoted or not): the whole value, up to the end of the
   line, or up to the closing quote when the header or its value is quoted;
4. the password of a URL: ``scheme://user:pass@host`` becomes
   ``scheme://user:****@host`` (and ``scheme://:pass@`` ``scheme://:****@``); a
   Slack webhook's path: ``https://hooks.slack.com/services/****``;
5. the password of ``curl``'s and ``wget``'s ``-u``/``--user user:password``;
   ``-p VALUE`` / ``-pVALUE`` after a command where ``-p`` is a password
   (``docker``, ``podman``, ``buildah``, ``nerdctl``, ``oras``, ``skopeo``,
   ``helm registry``, ``crane auth`` … ``login``; ``mysql`` and its tools;
   ``mariadb``; ``sshpass``). Elsewhere ``-p`` is a port or a path and stays;
6. long options whose name ends in a secret word (``--password VALUE``,
   ``--token VALUE``, ``--client-secret VALUE``, ``--api-key VALUE``): the value
   after the space (``--password-stdin`` takes none; a plain English word such as
   ``via`` in docker's own warning is not a value);
7. ``key=value``, ``key: value``, ``"key": "value"``, ``key = value``: when the key
   is a *secret name* (below), its value is masked whole: a quoted value up to its
   closing quote (spaces and all); an unquoted one after ``=`` up to the next
   whitespace (``password=Sp3c!al;chars`` becomes ``password=****``), after ``: ``
   or `` = `` (YAML, properties) to the end of the line, after a quoted (JSON) key
   up to ``,``, ``}`` or ``]``. After ``:`` a space is required unless the key is
   quoted (``"token":"x"``), so an image ``keycloak:21.0`` or a time ``token:12``
   is not a pair; a key right after ``/`` is a path (``/etc/passwd: denied``);
8. tokens by their shape wherever they stand: Slack (``xoxb-``, ``xoxp-`` … ,
   ``xapp-``), GitHub (``ghp_``, ``gho_``, ``ghs_``, ``ghu_``, ``ghr_``,
   ``github_pat_``), GitLab (``glpat-``), npm (``npm_``), OpenAI-style (``sk-``) and
   Google (``AIza``) API keys, JWTs (``eyJ….….``),
   Huawei IAM tokens (``MII`` and 40 more base64 characters), ``Bearer`` tokens,
   access keys (20 upper-case letters and digits, both present) and secret keys
   (40 letters and digits mixing upper case, lower case and digits).

A *secret name* is an identifier (letters, digits, ``_``, ``-``, ``.``; any case)
containing ``pass``, ``pwd``, ``secret``, ``token``, ``key``, ``credential``,
``auth`` or ``cookie``, or having ``ak`` or ``sk`` as a whole part (``HUAWEI_SK``),
once these harmless words are taken out of it: ``passed``, ``passes``,
``passing``, ``bypass``, ``compass``, ``keyboard``, ``keyword``, ``monkey``,
``turkey``, ``donkey``, ``tokenize``/``tokenizer``/``tokenization``, ``author``,
``authors``, ``authored``, ``authority``; and it is not exactly ``pwd``,
``oldpwd`` (the shell's working directory) or ``keys`` (a count). So ``DB_PASS``,
``client_secret``, ``x-api-key``, ``AUTH_HEADER`` and ``passphrase`` are secret
names; ``Tests passed: 12``, ``tokenizer: bpe``, ``Author: Jane`` and
``keys: 3 loaded`` are not. Prose without ``=`` or ``:`` after the word
("authentication succeeded", "Incorrect password for bob") is never touched.

Git commit IDs (40 lower-case hex), build numbers, dates, versions, paths and URLs
without a password do not match any rule. Masking twice gives what masking once
gave.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

MASK = "****"
PEM_MAX_LINES = 200  # a PEM block without END stops being masked after this many lines
KNOWN_MIN = 4  # shorter known values are not masked (they would blank ordinary words)

_FRAGMENT = re.compile(r"pass|pwd|secret|token|key|credential|auth|cookie")
_PART = re.compile(r"(?:^|[_.-])(?:ak|sk)(?:$|[_.-])")
_HARMLESS = re.compile(
    r"passe[ds]|passing|bypass|compass|keyboard|keyword|monkey|turkey|donkey"
    r"|tokeniz(?:ation|ers?|e)|author(?:s|ed|ity)?(?!i[sz])")
_HARMLESS_NAMES = frozenset({"pwd", "oldpwd", "keys"})

_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]*-----")
# a YAML key opening a block scalar: ``password: |``, ``- token: >-``
_YAML_BLOCK = re.compile(r"([ \t]*)(?:-[ \t]+)?[\"']?([A-Za-z_][\w.-]*+)[\"']?:[ \t]*[|>][-+0-9]*"
                         r"[ \t]*(?:#.*)?$")

# a quoted value up to its closing quote (an unclosed one: to the end of the line),
# else a bare one up to whitespace
_VALUE = re.compile(r"\"(?:[^\"\\]|\\.)*(?:\"|$)|'[^']*(?:'|$)|\S+")

_HEADER = re.compile(r"(?i)(?<![\w-])([\"']?)((?:proxy-)?authorization|set-cookie|cookie)\1"
                     r"(\s*[:=][ \t]*)(?=\S)")
_URL_PASSWORD = re.compile(r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*+://[^\s:/@?#]*+:)"
                           r"[^\s/?#]*@")
_SLACK_HOOK = re.compile(r"(?i)(\bhooks\.slack\.com/(?:services|workflows|triggers)/)\S+")
_LOGIN = re.compile(r"(?i)\b(?:(?:docker|podman|buildah|nerdctl|oras|skopeo|crane\s+auth|"
                    r"helm\s+registry)\s+login|mysql\w*|mariadb\w*|sshpass)\b")
_SHORT_P = re.compile(r"(?<!\S)(-p)(=|[ \t]+)?(?=[^\s-])")
_CURL = re.compile(r"\b(?:curl|wget)\b")
_USER_PASSWORD = re.compile(r"(?<!\S)((?:-u|--user)(?:[ \t]+|=)?)(?:([\"'])([^:\"']*:)[^\"']*\2?"
                            r"|([^\s:\"']*:)\S+)")
_LONG_OPTION = re.compile(r"(?<![\w-])--(?!no-)([\w-]++)[ \t]+(?=[^\s-])")
_OPTION_END = re.compile(r"(?i)(?:pass|passwd|password|passphrase|pwd|secret|token|key"
                         r"|credentials?|cookie|auth)$")
_PROSE = re.compile(r"(?i)(?:via|is|are|was|flag|option|and|or|instead|with|for|to|in|on)"
                    r"\b(?![=:])")
# a key (quoted or not) and its separator; the value is read after it
# (a name starts after a space or a quote, or after "-"/"--" opening an option such as
# -Dpassword=, never inside a word, a path or a dashed name: each run is read once)
_PAIR = re.compile(r"(?<![\w./\\])(?<![^\s\"'=-]-)(?<![^\s\"'=]--)"
                   r"(?:([\"'])([A-Za-z_][\w.-]*+)\1\s*[:=]\s*"
                   r"|([A-Za-z_][\w.-]*+)(?:=[ \t]*|:(?=[\"'])|([ \t]+=[ \t]*|:[ \t]+)))(?=\S)")
_JSON_BARE = re.compile(r"[^\s,}\]]+")
_HEADER_NAMES = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})

_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    # JSON Web Tokens
    (re.compile(r"(?<![\w-])eyJ[\w-]{5,}+\.[\w-]{5,}+\.[\w-]*+"), MASK),
    # Huawei Cloud IAM tokens (long base64 starting MII)
    (re.compile(r"(?<![\w+/=-])MII[\w+/=-]{40,}+"), MASK),
    # Slack tokens: bot, user, app-level, refresh
    (re.compile(r"(?<![\w.-])(?:xox[abposre]|xoxe\.xox[bp]|xapp)-[A-Za-z0-9-]{8,}+"), MASK),
    # GitHub, GitLab and npm tokens
    (re.compile(r"(?<![\w-])(?:gh[pousr]_[A-Za-z0-9]{20,}+|github_pat_\w{20,}+"
                r"|glpat-[\w-]{20,}+|npm_[A-Za-z0-9]{30,}+)"), MASK),
    # OpenAI-style and Google API keys
    (re.compile(r"(?<![\w-])(?:sk-[\w-]{20,}+|AIza[\w-]{30,}+)"), MASK),
    # a bearer token: long, or with a digit or punctuation ("Bearer authentication" stays)
    (re.compile(r"(?i)(\bbearer\s+)(?:[A-Za-z0-9._~+/-]{20,}|(?=[\w.~+/-]*[0-9._~+/-])"
                r"[A-Za-z0-9._~+/-]{8,})=*"), r"\1" + MASK),
    # access keys: 20 upper-case letters and digits, both present (Huawei AK, AWS AKIA...)
    (re.compile(r"\b(?=[A-Z0-9]*[A-Z])(?=[A-Z0-9]*[0-9])[A-Z0-9]{20}\b"), MASK),
    # secret keys: 40 letters and digits with upper case, lower case and digits (a git
    # commit, lower-case hex, is left alone)
    (re.compile(r"(?<![A-Za-z0-9/+])(?=[A-Za-z0-9/+]*[A-Z])(?=[A-Za-z0-9/+]*[a-z])"
                r"(?=[A-Za-z0-9/+]*[0-9])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"), MASK),
)


def secret_name(name: str) -> bool:
    """Whether a key or parameter name looks like it holds a secret (see the module's
    docstring for the rule)."""
    low = name.strip().lower()
    if not low or low in _HARMLESS_NAMES:
        return False
    rest = _HARMLESS.sub(" ", low)
    return bool(_FRAGMENT.search(rest) or _PART.search(rest))


def _masked_value(value: str) -> str:
    """``****`` in the value's own quotes."""
    if value[:1] in "\"'":
        closed = len(value) > 1 and value.endswith(value[0])
        return value[0] + MASK + (value[0] if closed else "")
    return MASK


def _value_at(line: str, start: int, quote: str = "") -> int:
    """Where the value starting at ``start`` ends: its closing quote, the closing
    ``quote`` of what encloses it, the next whitespace, or the end of the line."""
    if quote and line[start:start + 1] not in "\"'":
        end = line.find(quote, start)
        return len(line) if end < 0 else end
    found = _VALUE.match(line, start)
    return found.end() if found else start


def _replace_values(line: str, pattern: re.Pattern[str],
                    keep: Callable[[re.Match[str]], bool],
                    until: Callable[[re.Match[str]], int]) -> str:
    """Every value that follows a match of ``pattern`` (unless ``keep`` says the match is
    harmless) masked; ``until`` says where that value ends. Scanning goes on after the
    value, so a value is never read as a key."""
    out: list[str] = []
    pos = 0
    found = pattern.search(line, pos)
    while found:
        if keep(found):
            out.append(line[pos:found.end()])
            pos = found.end()
        else:
            end = until(found)
            out.append(line[pos:found.end()] + _masked_value(line[found.end():end]))
            pos = end
        found = pattern.search(line, pos) if pos < len(line) else None
    return "".join(out) + line[pos:]


def _header_end(line: str, found: re.Match[str]) -> int:
    """A header's value runs to the end of the line, or to the quote that encloses the
    header (``-H 'Authorization: Bearer x'``), or is one quoted string."""
    start = found.end()
    if line[start:start + 1] in "\"'":
        return _value_at(line, start)
    before = line[found.start() - 1:found.start()] if found.start() else ""
    if before in ("'", '"') and not found.group(1):
        return _value_at(line, start, before)
    return len(line)


def _never(_found: re.Match[str]) -> bool:
    return False


def _headers(line: str) -> str:
    return _replace_values(line, _HEADER, _never, lambda f: _header_end(line, f))


def _short_passwords(line: str) -> str:
    login = _LOGIN.search(line)
    if not login:
        return line
    head, tail = line[:login.end()], line[login.end():]
    return head + _replace_values(tail, _SHORT_P, _never, lambda f: _value_at(tail, f.end()))


def _long_options(line: str) -> str:
    return _replace_values(
        line, _LONG_OPTION,
        lambda f: not _OPTION_END.search(f.group(1)) or bool(_PROSE.match(line, f.end())),
        lambda f: _value_at(line, f.end()))


def _pair_keep(found: re.Match[str]) -> bool:
    """A pair whose key is no secret name, or a header ``_headers`` has masked already."""
    name = found.group(2) or found.group(3)
    return not secret_name(name) or name.lower() in _HEADER_NAMES


def _pair_end(line: str, found: re.Match[str]) -> int:
    """A quoted value ends at its quote; after ``: `` or `` = `` (YAML, properties) an
    unquoted one runs to the end of the line; after ``=`` to the next whitespace; after
    a quoted (JSON) key to the next ``,``, ``}``, ``]`` or whitespace."""
    start = found.end()
    if line[start:start + 1] in "\"'":
        return _value_at(line, start)
    if found.group(2):  # a JSON key: a bare value is a number, true, false or null
        bare = _JSON_BARE.match(line, start)
        return bare.end() if bare else start
    return len(line) if found.group(4) else _value_at(line, start)


def _pairs(line: str) -> str:
    return _replace_values(line, _PAIR, _pair_keep, lambda f: _pair_end(line, f))


def _user_password(found: re.Match[str]) -> str:
    """``-u user:****``, in the option's own quotes."""
    flag, quote = found.group(1), found.group(2)
    if quote:
        return f"{flag}{quote}{found.group(3)}{MASK}{quote}"
    return f"{flag}{found.group(4)}{MASK}"


def _mask_line(line: str) -> str:
    """One line (outside a PEM block) with every rule but the known values applied."""
    line = _headers(line)
    line = _URL_PASSWORD.sub(r"\1" + MASK + "@", line)
    line = _SLACK_HOOK.sub(r"\1" + MASK, line)
    if _CURL.search(line):  # curl -u user:password
        line = _USER_PASSWORD.sub(_user_password, line)
    line = _long_options(_short_passwords(line))
    line = _pairs(line)
    for pattern, replacement in _SHAPES:
        line = pattern.sub(replacement, line)
    return line


class Masker:
    """Masks a text line by line, remembering whether it is inside a PEM block or the
    indented block of a YAML secret (``password: |``)."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        self.known = tuple(sorted({v for v in known if v and len(v) >= KNOWN_MIN},
                                  key=len, reverse=True))
        self._pem_lines: int | None = None  # lines masked in the open PEM block
        self._yaml: tuple[int, int] | None = None  # (the key's indent, lines masked)

    def track(self, line: str) -> None:
        """Move the state over a line that will not be shown (no masking done)."""
        self._step(line, show=False)

    def line(self, line: str, *, advance: bool = True) -> str:
        """One line, masked; ``advance=False`` masks an unfinished line without moving
        the state (the same line will come again, complete)."""
        for value in self.known:
            line = line.replace(value, MASK)
        before = (self._pem_lines, self._yaml)
        shown = self._step(line, show=True)
        if not advance:
            self._pem_lines, self._yaml = before
        return shown

    def _step(self, line: str, *, show: bool) -> str:
        """The line as shown (when ``show``) given the state, and the state after it."""
        if self._pem_lines is not None:
            return self._in_pem(line, show=show)
        if self._yaml is not None:
            inside = self._in_yaml(line)
            if inside is not None:
                return inside
        begin = _PEM_BEGIN.search(line)
        if begin:
            head = _mask_line(line[:begin.start()]) if show else ""
            self._pem_lines = 0
            return head + self._in_pem(line[begin.end():], show=show)
        block = _YAML_BLOCK.match(line)
        if block and secret_name(block.group(2)):
            self._yaml = (len(block.group(1)), 0)
        return _mask_line(line) if show else ""

    def _in_yaml(self, line: str) -> str | None:
        """A line of a YAML secret's block, masked; None once the block has ended (a
        line indented no deeper than its key)."""
        assert self._yaml is not None
        indent, count = self._yaml
        if count < PEM_MAX_LINES and (not line.strip() or len(_indent(line)) > indent):
            self._yaml = (indent, count + 1)
            return _indent(line) + MASK if line.strip() else line
        self._yaml = None
        return None

    def _in_pem(self, line: str, *, show: bool) -> str:
        """A line inside a PEM block: masked up to its END, what follows END as usual."""
        assert self._pem_lines is not None
        self._pem_lines += 1
        end = _PEM_END.search(line)
        if end or self._pem_lines >= PEM_MAX_LINES:
            self._pem_lines = None
        shown = _indent(line) + MASK
        return shown + self._step(line[end.end():], show=show) if end else shown


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip())]


def mask_text(text: str, known: Iterable[str] = ()) -> str:
    """``text`` (any number of lines) with every secret masked; see the module's
    docstring for what counts. ``known``: values masked wherever they appear."""
    if not text:
        return text
    masker = Masker(known)
    return "\n".join(masker.line(line) for line in text.split("\n"))
