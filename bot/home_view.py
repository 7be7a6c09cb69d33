"""The App Home tab (issue 29), as Block Kit: pure, from plain data.

Three parts: *Waiting for you* (approval requests this person may decide, with the same
Approve and Reject buttons as the approval message in the channel), *Your builds* (running
and waiting first, then the last finished ones, each linking to its channel message) and
*Jobs you can run* (each with a Run… button opening the build form). Each part shows at
most a fixed number of rows and says "and N more" for the rest, so the view always stays
within Slack's 100 blocks, whatever the numbers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from bot import messages as msg
from bot.masking import MASK, mask_text, secret_name

HOME_RUN = "buildbot.home.run"  # a job's Run… button on the Home (value: the job's name)
APPROVALS_SHOWN = 10  # two blocks each (the request, its buttons)
ACTIVE_SHOWN = 10  # running or waiting builds: one block each
RECENT_SHOWN = 10  # the last finished builds: one block each
JOBS_SHOWN = 30  # one block each
PARAMS_SHOWN = 6  # parameters shown inline for a request to approve


NO_ACCESS = ("You may not run any job yet: ask a buildbot admin to add your Slack user ID "
             "(or one of your user groups) to a job's `users` in the jobs file.")


@dataclass(frozen=True)
class ToApprove:
    """A request awaiting approval that this person may decide."""

    request_id: str
    requester: str
    job_name: str
    description: str
    body: dict[str, Any]
    approved: int
    needed: int
    expires_at: float


@dataclass(frozen=True)
class BuildRow:
    """One line of *Your builds*: ``state`` is running, queued, awaiting, or a result."""

    job_name: str
    daily: str
    build_no: str
    state: str
    duration_ms: int | None = None
    link: str | None = None  # the channel message's permalink


def _section(text: str, accessory: dict[str, Any] | None = None,
             block_id: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "section",
                             "text": {"type": "mrkdwn", "text": msg.cut(text, msg.SECTION_CHARS)}}
    if accessory is not None:
        block["accessory"] = accessory
    if block_id is not None:
        block["block_id"] = block_id
    return block


def _context(text: str) -> dict[str, Any]:
    return {"type": "context",
            "elements": [{"type": "mrkdwn", "text": msg.cut(text, msg.CONTEXT_CHARS)}]}


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text}}


_button = msg._button  # the same buttons as the channel's messages


def _more(n: int, what: str) -> dict[str, Any]:
    return _context(f"… and {n} more {what}.")


def _link(url: str, label: str) -> str:
    target = re.sub(r"[\s<>|]", lambda m: quote(m.group()), url).replace("&", "&amp;")
    return f"<{target}|{label}>"


def _params(body: dict[str, Any]) -> str:
    params = [p for p in body.get("parameter") or [] if isinstance(p, dict)]
    shown = []
    for p in params[:PARAMS_SHOWN]:
        name, value = str(p.get("name", "")), str(p.get("value", ""))
        shown.append(f"{msg.code(name, 60)} = "
                     f"{msg.code(MASK if secret_name(name) else mask_text(value), 80)}")
    if len(params) > PARAMS_SHOWN:
        shown.append(f"and {len(params) - PARAMS_SHOWN} more")
    scm = body.get("scm") or {}
    if isinstance(scm, dict) and scm.get("build_commit_id"):
        shown.append(f"commit {msg.code(str(scm['build_commit_id']), 60)}")
    if isinstance(scm, dict) and scm.get("build_tag"):
        shown.append(f"tag {msg.code(str(scm['build_tag']), 60)}")
    return " · ".join(shown) or "no parameters"


def _approval_blocks(i: int, item: ToApprove) -> list[dict[str, Any]]:
    job = msg.escape(msg.shorten(item.job_name, 200))
    head = f"{msg._user(item.requester)} asks to run *{job}*"
    if item.description:
        head += f" ({msg.escape(msg.shorten(item.description, 200))})"
    tail = f"Expires at {msg._at(item.expires_at)}"
    if item.needed > 1:
        tail += f" · {item.approved} of {item.needed} approvals"
    return [_section(f"{head}\n{_params(item.body)}\n{tail}", block_id=f"home.approval.{i}"),
            {"type": "actions", "block_id": f"home.approval.{i}.buttons", "elements": [
                _button("Approve", msg.APPROVE, item.request_id, "primary"),
                _button("Reject", msg.REJECT, item.request_id, "danger")]}]


_STATES = {"running": ":hourglass_flowing_sand: running", "queued": ":double_vertical_bar: "
           "queued, waiting for a free slot", "awaiting": ":raised_hand: waiting for approval"}


def _build_line(row: BuildRow) -> str:
    name = msg.escape(msg.shorten(row.daily, 100)) if row.daily else (
        f"#{msg.escape(msg.shorten(row.build_no, 100))}" if row.build_no else "")
    job = f"*{msg.escape(msg.shorten(row.job_name, 200))}*"
    where = f"{job} build {name}" if name else job
    if row.link:
        where += " · " + _link(row.link, "message")
    state = _STATES.get(row.state)
    if state is None:
        emoji, words = msg._result_words(row.state)
        state = f"{emoji} {words} in {msg.duration(row.duration_ms)}"
    return f"{where} · {state}"


def home_view(*, approvals: Sequence[ToApprove], active: Sequence[BuildRow],
              recent: Sequence[BuildRow], recent_total: int,
              jobs: Sequence[tuple[str, str]], is_admin: bool = False) -> dict[str, Any]:
    """The Home of one person (``views.publish``, type home): always within 100 blocks.
    Someone with no job, no build and nothing to approve sees one line: how to get access."""
    if not approvals and not active and not recent and not jobs:
        return {"type": "home", "blocks": [_section(NO_ACCESS)]}
    blocks: list[dict[str, Any]] = [_context(
        "Your builds and approvals, kept up to date (at most every 10 seconds). "
        "Type `/build help` in a channel for the command.")]
    if approvals:
        blocks.append(_header("Waiting for you"))
        for i, item in enumerate(approvals[:APPROVALS_SHOWN]):
            blocks += _approval_blocks(i, item)
        if len(approvals) > APPROVALS_SHOWN:
            blocks.append(_more(len(approvals) - APPROVALS_SHOWN,
                                "requests waiting for your approval"))
        blocks.append({"type": "divider"})
    blocks.append(_header("Your builds"))
    for row in active[:ACTIVE_SHOWN]:
        blocks.append(_section(_build_line(row)))
    if len(active) > ACTIVE_SHOWN:
        blocks.append(_more(len(active) - ACTIVE_SHOWN, "running or waiting"))
    for row in recent[:RECENT_SHOWN]:
        blocks.append(_section(_build_line(row)))
    if recent_total > min(len(recent), RECENT_SHOWN):
        blocks.append(_more(recent_total - min(len(recent), RECENT_SHOWN), "finished builds"))
    if not active and not recent:
        blocks.append(_context("None yet: the builds you start appear here."))
    blocks.append({"type": "divider"})
    blocks.append(_header("Jobs you can run"))
    if not jobs:
        blocks.append(_section(NO_ACCESS + (
            " (You are an admin: a raw 32-character build task ID works anywhere.)"
            if is_admin else "")))
    for i, (name, description) in enumerate(jobs[:JOBS_SHOWN]):
        text = f"*{msg.escape(msg.shorten(name, 200))}*"
        if description:
            text += f"\n{msg.escape(msg.shorten(description, 300))}"
        blocks.append(_section(text, _button("Run…", HOME_RUN, name), f"home.job.{i}"))
    if len(jobs) > JOBS_SHOWN:
        blocks.append(_more(len(jobs) - JOBS_SHOWN, "jobs: type `/build help` to see them all"))
    return {"type": "home", "blocks": blocks}
