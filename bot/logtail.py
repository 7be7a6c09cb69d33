"""The last lines of a build log, as text safe to show in a Slack thread.

Pure text work, no I/O: ``TailBuffer`` takes the log in pages as CodeArts serves
them and keeps only the last ``lines`` complete lines (a deque), so memory stays
bounded however long the log is; each line is cleaned when it is complete (a
colour code or a secret split across two pages is still seen whole):

* terminal control sequences (ANSI colours, cursor moves, OSC titles) are removed,
  and a carriage return keeps only what was drawn last on the line;
* secrets are masked by ``bot.masking`` (``****``), every value the caller names (the
  bot's own credentials) too; a ``Masker`` follows the log line by line, so a PEM
  block is masked from its BEGIN line to its END line even across pages;
* a line is at most ``LINE_CHARS`` characters.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable

from bot.masking import MASK, Masker, mask_text

__all__ = ["BLANK_SLACK", "LINE_CHARS", "MASK", "TailBuffer", "clean", "mask_secrets",
           "strip_ansi"]

BLANK_SLACK = 20  # blank lines at the end of a log that do not push out real ones
LINE_CHARS = 400  # characters kept of one log line (its end, where the error usually is)

# CSI (colours, cursor moves), OSC (window titles, links) and two-character escapes
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def strip_ansi(line: str) -> str:
    """The line as a terminal would leave it, without control codes."""
    line = _ANSI.sub("", line)
    if "\r" in line:  # a progress bar redrawn in place: what was drawn last
        parts = [p for p in line.split("\r") if p]
        line = parts[-1] if parts else ""
    return _CONTROL.sub("", line.replace("\t", "    "))


def mask_secrets(line: str, known: Iterable[str] = ()) -> str:
    """The line with every credential-looking value, and every ``known`` value, masked
    (``bot.masking.mask_text``)."""
    return mask_text(line, known)


def clean(line: str, known: Iterable[str] = (), *, masker: Masker | None = None,
          advance: bool = True) -> str:
    """One raw log line as it may be shown: no control codes, no secrets, bounded.
    ``masker``: the log's own, which knows whether the line is inside a PEM block
    (``advance=False``: an unfinished line, seen again once complete)."""
    masker = masker or Masker(known)
    text = masker.line(strip_ansi(line), advance=advance).rstrip()
    if len(text) > LINE_CHARS:
        text = "…" + text[-(LINE_CHARS - 1):]
    return text


class TailBuffer:
    """Feed pages of a log; ``lines()`` gives the last ``keep`` cleaned lines.

    ``fed`` counts characters taken in, so the caller can stop after a size cap."""

    def __init__(self, keep: int, known: Iterable[str] = ()) -> None:
        self.keep = max(0, keep)
        self.known = tuple(v for v in known if v)
        self.masker = Masker(self.known)
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
        shown = len(complete) - (self.keep + BLANK_SLACK) if self.keep else len(complete)
        for n, line in enumerate(complete):
            if n < shown:  # pushed out anyway: only whether it opens or closes a PEM block
                self.masker.track(line)
            else:
                self._lines.append(clean(line, masker=self.masker))
        if len(self._partial) > 64 * LINE_CHARS:  # a line without end: keep its end only,
            # masked first, so a value cut from its key still shows as masked
            masked = self.masker.line(strip_ansi(self._partial), advance=False)
            self._partial = masked[-8 * LINE_CHARS:]

    def lines(self) -> list[str]:
        """The last complete lines, and the unfinished last line if there is one; blank
        lines at the end are dropped."""
        if not self.keep:
            return []
        out = list(self._lines)
        if self._partial:
            out.append(clean(self._partial, masker=self.masker, advance=False))
        while out and not out[-1].strip():
            out.pop()
        return out[-self.keep:]
