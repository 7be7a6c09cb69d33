"""Every text the bot shows in Slack, as pure functions returning message dicts.

User-supplied text (job names, parameter values) is escaped before it is
shown, so a value like ``<!channel>`` can never ping a channel, and long
values are shortened to stay inside Block Kit's limits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

Message = dict[str, Any]

RUN, CANCEL, STOP, REBUILD = "buildbot.run", "buildbot.cancel", "buildbot.stop", "buildbot.rebuild"
MAX_SHOWN_PARAMS = 20
MAX_VALUE_CHARS = 120

RESULT_WORDS = {
    "success": (":white_check_mark:", "succeeded"),
    "failure": (":x:", "failed"),
    "aborted": (":octagonal_sign:", "was stopped"),
    "unknown": (":grey_question:", "ended with an unknown result"),
    "timeout": (":hourglass:", "is no longer followed"),
}


def escape(text: str) -> str:
    """Slack's three control characters, so user text is shown, never interpreted."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def shorten(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def code(text: str) -> str:
    """Inline code that survives backticks in the value."""
    return "`" + escape(shorten(text)).replace("`", "ˋ") + "`"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]}


def _button(text: str, action_id: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "action_id": action_id, "value": value,
                              "text": {"type": "plain_text", "text": text}}
    if style:
        button["style"] = style
    return button


def ephemeral(text: str, blocks: list[dict[str, Any]] | None = None, *,
              replace: bool | None = None) -> Message:
    msg: Message = {"response_type": "ephemeral", "text": text}
    if blocks:
        msg["blocks"] = blocks
    if replace is not None:
        msg["replace_original"] = replace
    return msg


# --- help and problems --------------------------------------------------------

USAGE = ("*Usage*\n"
         "`/build <job> [name=value ...] [commit=<sha>] [tag=<tag>]`: run a build task\n"
         "`/build list`: the jobs you may run here\n"
         "Quote values with spaces: `msg=\"two words\"`.")


def help_message(jobs: Sequence[tuple[str, str]], *, is_admin: bool = False) -> Message:
    """Usage plus only the jobs this user may run in this channel."""
    if jobs:
        lines = "\n".join(f"• {code(name)} {escape(desc)}".rstrip() for name, desc in jobs)
        listing = f"*Jobs you may run here*\n{lines}"
    else:
        listing = "*Jobs you may run here*\nNone. Ask an admin to add you to a job in buildbot.toml."
    if is_admin:
        listing += "\nAs an admin you may also give a 32-character CodeArts build task ID."
    text = f"{USAGE}\n\n{listing}"
    return ephemeral(text, [_section(USAGE), _section(listing)])


def problems_message(problems: Iterable[str], *, replace: bool | None = None) -> Message:
    items = list(problems)
    body = "\n".join(f"• {escape(shorten(p, 600))}" for p in items[:20])
    text = f":warning: Nothing was started.\n{body}"
    return ephemeral(text, [_section(text), _context("Type `/build help` for usage.")],
                     replace=replace)


# --- confirmation -------------------------------------------------------------

def _param_lines(body: dict[str, Any]) -> list[str]:
    params = body.get("parameter") or []
    lines = [f"• {code(p['name'])} = {code(p['value'])}" for p in params[:MAX_SHOWN_PARAMS]]
    if len(params) > MAX_SHOWN_PARAMS:
        lines.append(f"• …and {len(params) - MAX_SHOWN_PARAMS} more")
    scm = body.get("scm") or {}
    if scm.get("build_commit_id"):
        lines.append(f"• commit {code(scm['build_commit_id'])}")
    if scm.get("build_tag"):
        lines.append(f"• tag {code(scm['build_tag'])}")
    return lines


def summary(job_name: str, description: str, body: dict[str, Any]) -> str:
    head = f"*{escape(shorten(job_name, 200))}*"
    if description:
        head += f" ({escape(shorten(description, 200))})"
    lines = _param_lines(body)
    return head + ("\n" + "\n".join(lines) if lines else "\nNo parameters.")


def confirmation(request_id: str, job_name: str, description: str, body: dict[str, Any],
                 *, minutes: int, rebuild: bool = False) -> Message:
    """The Run/Cancel question, seen by the requester alone."""
    question = "Run this build again?" if rebuild else "Run this build?"
    text = f"{question}\n{summary(job_name, description, body)}"
    blocks = [
        _section(text),
        {"type": "actions", "block_id": "buildbot.confirm", "elements": [
            _button("Run", RUN, request_id, "primary"),
            _button("Cancel", CANCEL, request_id),
        ]},
        _context(f"Expires in {minutes} minutes. Only you can see this."),
    ]
    return ephemeral(text, blocks, replace=False)  # never over a public message (Rebuild)


def cancelled(job_name: str) -> Message:
    return ephemeral(f"Cancelled: {escape(job_name)} was not started.", replace=True)


def expired(job_name: str, command: str, *, minutes: int) -> Message:
    return ephemeral(
        f":hourglass: This confirmation for {escape(job_name)} expired after {minutes} minutes; "
        f"nothing was started. Type `/build {escape(shorten(command, 500))}` again to run it.",
        replace=True)


def already(state: str) -> Message:
    words = {"cancelled": "was cancelled", "expired": "expired",
             "failed": "already failed", "unknown": "already has an unknown outcome"}
    return ephemeral(f"This request {words.get(state, 'is no longer pending')}; this click "
                     "started nothing. Type `/build` again to run it.", replace=True)


def missing() -> Message:
    return ephemeral("This request is no longer known to buildbot; nothing was started. "
                     "Type `/build` again to run it.", replace=True)


def not_yours(owner: str) -> Message:
    return ephemeral(f"Only <@{owner}> can answer this confirmation. To run the job yourself, "
                     "type `/build` with the job.", replace=False)


def started_ack(job_name: str, daily: str, where: str | None) -> Message:
    place = f" in <#{where}>" if where else ""
    return ephemeral(f":rocket: Started {escape(job_name)}, build {escape(daily)}. "
                     f"Follow it in the thread{place}.", replace=True)


# --- errors -------------------------------------------------------------------

def api_error(job_name: str, *, status: int | None, error_code: str | None,
              error_msg: str | None, hint: str, request_id: str | None) -> Message:
    parts = [f":x: CodeArts refused to run {escape(job_name)}; nothing was started."]
    if error_code or error_msg:
        parts.append(f"`{escape(error_code or '?')}` {escape(shorten(error_msg or '', 500))}")
    parts.append(escape(hint))
    if status is not None or request_id:
        parts.append(f"HTTP {status or '?'}" + (f", request ID `{escape(request_id)}`"
                                                 if request_id else ""))
    return ephemeral("\n".join(parts), replace=True)


def not_sent(job_name: str, reason: str) -> Message:
    return ephemeral(f":x: Could not reach CodeArts to run {escape(job_name)}; nothing was "
                     f"started ({escape(shorten(reason, 300))}). Try again in a minute.",
                     replace=True)


def outcome_unknown(job_name: str, *, unreadable: bool = False) -> Message:
    why = ("CodeArts answered with something buildbot could not read" if unreadable
           else "CodeArts did not answer in time")
    return ephemeral(
        f":warning: {why}: {escape(job_name)} *may or may not* have started. buildbot will "
        "not send it again by itself. Check the task's build history in CodeArts before "
        "running it again.", replace=True)


def login_failed(job_name: str, *, status: int | None, error_code: str | None,
                 error_msg: str | None, hint: str, request_id: str | None) -> Message:
    parts = [f":x: buildbot could not log in to Huawei Cloud to run {escape(job_name)}; "
             "nothing was started."]
    if error_code or error_msg:
        parts.append(f"`{escape(error_code or '?')}` {escape(shorten(error_msg or '', 500))}")
    parts.append(escape(hint))
    if status is not None or request_id:
        where = f"IAM answered HTTP {status}" if status is not None else "No answer from IAM"
        parts.append(where + (f", request ID `{escape(request_id)}`" if request_id else ""))
    return ephemeral("\n".join(parts), replace=True)


def started_unrecorded(job_name: str, daily: str, build_no: str, error_id: str) -> Message:
    return ephemeral(
        f":warning: {escape(job_name)} *was started* (build {escape(daily)}, #{escape(build_no)}), "
        f"but buildbot could not save it (error ID `{error_id}`), so it will not report how it "
        "ends. Follow it in CodeArts, and tell your buildbot operator the error ID.",
        replace=True)


def started_unannounced(job_name: str, daily: str, build_no: str, error_id: str) -> Message:
    return ephemeral(
        f":warning: {escape(job_name)} *was started* (build {escape(daily)}, #{escape(build_no)}), "
        f"but buildbot could not post it in the channel yet (error ID `{error_id}`). It will "
        "try again and report how the build ends.", replace=True)


def result_elsewhere(reply: Message, *, channel: str, error: str) -> Message:
    """A build's result sent to its requester because Slack refused it in the thread."""
    text = (f"{reply['text']}\n_buildbot could not post this in the build's thread in "
            f"<#{escape(channel)}> (Slack said `{escape(shorten(error, 100))}`), so it is sent "
            "to you here._")
    return {"text": text[:3000], "blocks": [_section(text)]}


def busy() -> Message:
    return ephemeral(":hourglass: buildbot is very busy right now; nothing was started. "
                     "Try the command again in a minute.")


def internal_error(error_id: str) -> Message:
    return ephemeral(f":x: Something went wrong inside buildbot (error ID `{error_id}`). "
                     "Nothing was started. Tell your buildbot operator the error ID.")


# --- the build in the channel ----------------------------------------------------

def _build_line(user_id: str, job_name: str, daily: str, build_no: str, link: str | None) -> str:
    name = f"<{link}|{escape(daily)}>" if link else escape(daily)
    return (f"<@{user_id}> started *{escape(shorten(job_name, 200))}*: build {name} "
            f"(#{escape(build_no)})")


def announcement(*, build_id: str, user_id: str, job_name: str, description: str,
                 body: dict[str, Any], daily: str, build_no: str, link: str | None) -> Message:
    """The channel message whose thread carries every later word about the build."""
    line = _build_line(user_id, job_name, daily, build_no, link)
    details = "\n".join(_param_lines(body))
    blocks = [_section(f":hourglass_flowing_sand: {line}")]
    if details:
        blocks.append(_context(details))
    blocks.append({"type": "actions", "block_id": "buildbot.running",
                   "elements": [_button("Stop", STOP, build_id, "danger")]})
    return {"text": f"{line}: running", "blocks": blocks}


def announcement_done(*, build_id: str, user_id: str, job_name: str, daily: str,
                      build_no: str, link: str | None, result: str,
                      duration_ms: int | None) -> Message:
    emoji, words = RESULT_WORDS.get(result, RESULT_WORDS["unknown"])
    line = _build_line(user_id, job_name, daily, build_no, link)
    took = f" in {duration(duration_ms)}" if duration_ms is not None else ""
    text = f"{emoji} {line}: {words}{took}"
    return {"text": text, "blocks": [_section(text), {
        "type": "actions", "block_id": "buildbot.done",
        "elements": [_button("Rebuild", REBUILD, build_id)]}]}


def result_reply(*, build_id: str, user_id: str, job_name: str, daily: str, result: str,
                 duration_ms: int | None, link: str | None) -> Message:
    """The thread reply when a build ends; the requester is mentioned when it failed."""
    emoji, words = RESULT_WORDS.get(result, RESULT_WORDS["unknown"])
    took = f" in {duration(duration_ms)}" if duration_ms is not None else ""
    text = f"{emoji} {escape(job_name)} {escape(daily)} {words}{took}."
    if result == "failure":
        text = f"<@{user_id}> {text}"
    if link:
        text += f" <{link}|Open in CodeArts>"
    return {"text": text, "blocks": [_section(text), {
        "type": "actions", "block_id": "buildbot.next",
        "elements": [_button("Rebuild", REBUILD, build_id)]}]}


def gave_up(*, job_name: str, daily: str, hours: int, link: str | None) -> Message:
    text = (f":hourglass: {escape(job_name)} {escape(daily)} has not ended after {hours} hours; "
            "buildbot stopped following it. Check it in CodeArts.")
    if link:
        text += f" <{link}|Open in CodeArts>"
    return {"text": text}


def stop_refused(problems: Iterable[str]) -> Message:
    body = "\n".join(f"• {escape(shorten(p, 600))}" for p in list(problems)[:20])
    return ephemeral(f":no_entry: You can't stop this build: stopping needs the same "
                     f"permission as running it.\n{body}", replace=False)


def stop_requested(user_id: str, job_name: str, daily: str) -> Message:
    return {"text": f":octagonal_sign: <@{user_id}> asked CodeArts to stop "
                    f"{escape(job_name)} {escape(daily)}."}


def duration(ms: int | None) -> str:
    if ms is None:
        return "an unknown time"
    seconds = max(0, int(ms) // 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {seconds} s"
    return f"{seconds} s"
