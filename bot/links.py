"""Build links read back: ``BUILD_LINK_TEMPLATE`` (the link the bot itself shows) turned
into a matcher that finds the build task ID and the build number in a pasted link, so a
link to a build can be previewed (bot.flow_unfurl).

Pure: no Slack, no database, no CodeArts. The template is trusted only as far as
``bot.settings.link_template_problem`` allows (bare placeholders, doubled braces); the
pasted link is untrusted, so every placeholder matches only the characters its value may
hold (what ``format_build_link`` writes, percent-encoded), and the link must match the
whole template, not a part of it.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from urllib.parse import unquote

from bot.settings import link_template_problem

# What each placeholder's value may be in a link: the task ID and the build number as
# CodeArts gives them; the daily number (20261123.7) and the project ID loosely, as they
# are only matched, never used.
PLACEHOLDER_PATTERNS = {
    "job_id": r"[0-9A-Za-z]{32}",
    "build_no": r"[0-9]{1,18}",
    "daily_build_number": r"[0-9A-Za-z._%-]{1,64}",
    "project_id": r"[0-9A-Za-z._%-]{1,64}",
}
NEEDED = ("job_id", "build_no")  # a link must carry both to name a build
MAX_LINK = 2000  # characters of a pasted link looked at, at most


@dataclass(frozen=True)
class BuildLink:
    """A build named by a pasted link."""

    url: str
    job_id: str  # lower case, as the jobs file's IDs are compared
    build_no: str


class LinkMatcher:
    """Reads ``job_id`` and ``build_no`` back out of links made from one template."""

    def __init__(self, template: str) -> None:
        problem = why_no_previews(template)
        if problem is not None:
            raise ValueError(problem)
        parts: list[str] = []
        seen: set[str] = set()
        for literal, name, _spec, _conversion in string.Formatter().parse(template):
            parts.append(re.escape(literal))
            if name is None:
                continue
            if name in seen:  # the same value again: it must be the same text
                parts.append(f"(?P={name})")
            else:
                seen.add(name)
                parts.append(f"(?P<{name}>{PLACEHOLDER_PATTERNS[name]})")
        self.template = template
        self.domain = domain_of(template) or ""
        self._pattern = re.compile("".join(parts))

    def match(self, url: str) -> BuildLink | None:
        """The build a pasted link names, or None when it is not one of ours."""
        if not isinstance(url, str) or len(url) > MAX_LINK or not url.isascii():
            return None
        found = self._pattern.fullmatch(url)
        if found is None:
            return None
        return BuildLink(url=url, job_id=unquote(found["job_id"]).lower(),
                         build_no=found["build_no"])


def domain_of(template: str) -> str | None:
    """The host a template's links are on (what Slack's ``unfurl_domains`` lists), or None
    when the template does not start with ``http(s)://HOST/`` before any placeholder."""
    literal = template.split("{", 1)[0] if "{{" not in template.split("{", 1)[0] else ""
    found = _HOST.match(literal)
    return found.group(1).lower() if found else None


_HOST = re.compile(r"https?://([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)[/?#]")


def why_no_previews(template: str | None) -> str | None:
    """Why links made from ``template`` cannot be previewed, or None when they can."""
    if not template:
        return ("BUILD_LINK_TEMPLATE is not set, so build links are not previewed: set it to "
                "the console's link to a build, with {job_id} and {build_no}")
    problem = link_template_problem(template)
    if problem is not None:
        return f"BUILD_LINK_TEMPLATE: {problem}"
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    missing = [n for n in NEEDED if n not in names]
    if missing:
        shown = " and ".join("{" + n + "}" for n in missing)
        return (f"BUILD_LINK_TEMPLATE has no {shown}, so a pasted build link cannot say which "
                "build it is: links are not previewed")
    if domain_of(template) is None:
        return ("BUILD_LINK_TEMPLATE does not start with https://HOST/, so Slack cannot be told "
                "which links to preview: links are not previewed")
    return None
