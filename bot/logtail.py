"""The last lines of a build log, as text safe to show in a Slack thread.

Pure text work, no I/O: ``TailBuffer`` takes the log in pages as CodeArts serves
them and keeps only the last ``lines`` complete lines (a deque), so memory stays
bounded however long the log is; each line is cleaned when it is complete (a
colour code or a secret split across two pages is still seen whole):

* terminal control sequences (ANSI colours, cursor moves, OSC titles) are removed,
  and a carriage return keeps only what was drawn last on the line;
* anything that looks like a credential is replaced by ``****``: ``Authorization``
  and ``X-Auth-Token`` headers, values after ``password=``/``token=``/``secret=``/
  ``key=`` and the like, JWTs, IAM tokens, AK/SK-looking strings, Slack tokens,
  and every value the caller names (the bot's own credentials);
* a line is at most ``LINE_CHARS`` characters.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable

MASK = "****"
BLANK_SLACK = 20  # blank lines at the end of a log that do not push out real ones
LINE_CHARS = 400  # characters kept of one log line (its end, where the error usually is)

# CSI (colours, cursor moves), OSC (window titles, links) and two-character escapes
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

_SECRETS: tuple[tuple[re.Pattern[str], str], ...] = (
    # a whole Authorization header value, whatever its scheme (Bearer, Basic, AK/SK signature)
    (re.compile(r"(?i)(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*)\S.*"), r"\1" + MASK),
    # token headers
    (re.compile(r"(?i)(\bx-(?:auth|subject|security)-token[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]+"),
     r"\1" + MASK),
    # password=..., "password": "...": any value
    (re.compile(r"(?i)(\b[\w.-]*(?:password|passwd|pwd)[\"']?\s*[:=]\s*[\"']?)"
                r"[^\s\"',;&]+"), r"\1" + MASK),
    # --password value, -p=value style options
    (re.compile(r"(?i)(--?[\w-]*(?:password|passwd|token|secret)(?:\s+|=)[\"']?)"
                r"[^\s\"',;&]+"), r"\1" + MASK),
    # token=, secret=, key=, credential= (and longer names ending so), ak=, sk=: a long
    # opaque value
    (re.compile(r"(?i)(\b(?:[\w.-]*(?:token|secret|key|credentials?)|(?:[\w.-]*[_.-])?"
                r"(?:ak|sk))[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9+/_.~-]{8,}={0,2}"),
     r"\1" + MASK),
    # JSON Web Tokens
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), MASK),
    # Huawei Cloud IAM tokens (long base64 starting MII)
    (re.compile(r"\bMII[A-Za-z0-9+/=_-]{40,}"), MASK),
    # Slack tokens
    (re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{8,}"), MASK),
    # GitHub and GitLab personal tokens
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[\w-]{20,})"),
     MASK),
    # access keys: 20 upper-case letters and digits, both present (Huawei AK, AWS AKIA...)
    (re.compile(r"\b(?=[A-Z0-9]*[A-Z])(?=[A-Z0-9]*[0-9])[A-Z0-9]{20}\b"), MASK),
    # secret keys: 40 letters and digits with upper case, lower case and digits (a git
    # commit, lower-case hex, is left alone)
    (re.compile(r"(?<![A-Za-z0-9/+])(?=[A-Za-z0-9/+]*[A-Z])(?=[A-Za-z0-9/+]*[a-z])"
                r"(?=[A-Za-z0-9/+]*[0-9])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"), MASK),
)


def strip_ansi(line: str) -> str:
    """The line as a terminal would leave it, without control codes."""
    line = _ANSI.sub("", line)
    if "\r" in line:  # a progress bar redrawn in place: what was drawn last
        parts = [p for p in line.split("\r") if p]
        line = parts[-1] if parts else ""
    return _CONTROL.sub("", line.replace("\t", "    "))


def mask_secrets(line: str, known: Iterable[str] = ()) -> str:
    """The line with every credential-looking value, and every ``known`` value, masked."""
    for value in known:
        if value and len(value) >= 4 and value in line:
            line = line.replace(value, MASK)
    for pattern, replacement in _SECRETS:
        line = pattern.sub(replacement, line)
    return line


def clean(line: str, known: Iterable[str] = ()) -> str:
    """One raw log line as it may be shown: no control codes, no secrets, bounded."""
    text = mask_secrets(strip_ansi(line), known).rstrip()
    if len(text) > LINE_CHARS:
        text = "…" + text[-(LINE_CHARS - 1):]
    return text


class TailBuffer:
    """Feed pages of a log; ``lines()`` gives the last ``keep`` cleaned lines.

    ``fed`` counts characters taken in, so the caller can stop after a size cap."""

    def __init__(self, keep: int, known: Iterable[str] = ()) -> None:
        self.keep = max(0, keep)
        self.known = tuple(v for v in known if v)
        self.fed = 0
        # a few more than asked for: blank lines at the very end are dropped, not shown
        self._lines: deque[str] = deque(maxlen=self.keep + BLANK_SLACK if self.keep else 1)
        self._partial = ""

    def feed(self, chunk: str) -> None:
        if not chunk:
            return
        self.fed += len(chunk)
        text = self._partial + chunk.replace("\r\n", "\n")
        *complete, self._partial = text.split("\n")
        for line in complete[-(self.keep + BLANK_SLACK):] if self.keep else ():
            self._lines.append(clean(line, self.known))
        if len(self._partial) > 64 * LINE_CHARS:  # a line without end: keep its end only
            self._partial = self._partial[-8 * LINE_CHARS:]

    def lines(self) -> list[str]:
        """The last complete lines, and the unfinished last line if there is one; blank
        lines at the end are dropped."""
        if not self.keep:
            return []
        out = list(self._lines)
        if self._partial:
            out.append(clean(self._partial, self.known))
        while out and not out[-1].strip():
            out.pop()
        return out[-self.keep:]
