"""Every text the bot shows in Slack, as pure functions returning message dicts.

User-supplied text (job names, parameter values, CodeArts' error words) is escaped
before it is shown, so a value like ``<!channel>`` can never ping a channel. Each
value is shortened *before* it is escaped, and whole texts are laid out to stay
inside Slack's documented limits:

* a section's text at most 3,000 characters, a context element's at most 2,000
  (below the 3,000 of any text object), a message's top-level ``text`` at most
  40,000, and at most 50 blocks in a message;
* what a user agrees to (job, every parameter, commit, tag) is split across blocks
  rather than cut; only when even 50 blocks cannot hold it are parameters left out,
  counted ("… and 3 more parameters"), and the commit and tag stay visible;
* where a text must be cut it is cut at a whole line when it can, and never inside
  an entity (``&amp;``), a mention (``<@U1>``) or a link (``<url|text>``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from bot.codearts.answers import Outputs
from bot.masking import MASK, mask_text, secret_name

Message = dict[str, Any]

RUN, CANCEL, STOP, REBUILD = "buildbot.run", "buildbot.cancel", "buildbot.stop", "buildbot.rebuild"
EDIT = "buildbot.edit"  # the confirmation's Edit parameters button (value: the request id)
NOTIFY = "buildbot.notify"  # a running build's Notify me button (value: the build id)
ON_IT = "buildbot.onit"  # a failure reply's I'm on it button (value: the build id)
ON_IT_BLOCK = "buildbot.onit"  # the line of a failure reply that says who is on it
OPEN_FORM = "buildbot.form.open"  # help's Open the form buttons: + ".<n>" (value: the job)
BUTTONS_PER_BLOCK = 25  # Slack's most elements in one actions block
MAX_VALUE_CHARS = 120

# Slack's documented limits (Block Kit reference, chat.postMessage).
SECTION_CHARS = 3000
CONTEXT_CHARS = 2000
TEXT_CHARS = 40_000
MAX_BLOCKS = 50
HELP_PAGE_JOBS = 40  # at most 40 lines of at most ~1,600 characters: always fits 50 blocks

RESULT_WORDS = {
    "success": (":white_check_mark:", "succeeded"),
    "failure": (":x:", "failed"),
    "aborted": (":octagonal_sign:", "was stopped"),
    "unknown": (":grey_question:", "ended with an unknown result"),
    "timeout": (":hourglass:", "is no longer followed"),
}
ENDED = "ended:"  # ``ended:<WORD>``: CodeArts ended the build with a status word we do not know
ENDED_EMOJI = ":white_circle:"

# Never cut inside these: an entity, or Slack markup (a mention, a channel, a link).
_UNBREAKABLE = re.compile(r"&[#0-9A-Za-z]+;|<[^<>]*>")
_SLACK_ID = re.compile(r"[A-Za-z0-9]{1,64}")


def escape(text: str) -> str:
    """Slack's three control characters, so user text is shown, never interpreted."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def shorten(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """Raw (unescaped) text at most ``limit`` characters long, "…" marking a cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def code(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """Inline code that survives backticks in the value."""
    return "`" + escape(shorten(text, limit)).replace("`", "ˋ") + "`"


def cut(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else its longest safe head and "…":
    at a line break when one is in the second half, and never inside an entity
    (``&amp;``), a mention (``<@U1>``) or a link (``<url|text>``)."""
    if len(text) <= limit:
        return text
    end = limit - 2  # room for "\n…" or "…"
    for m in _UNBREAKABLE.finditer(text):
        if m.start() >= end:
            break
        if m.end() > end:
            end = m.start()
            break
    newline = text.rfind("\n", 0, end)
    if newline > end // 2:
        return text[:newline] + "\n…"
    return text[:end].rstrip() + "…"


def _pack(lines: Sequence[str], limit: int) -> list[str]:
    """Whole lines joined into as few texts of at most ``limit`` characters as hold them;
    a line longer than ``limit`` is cut safely, alone."""
    texts: list[str] = []
    for line in lines:
        line = cut(line, limit)
        if texts and len(texts[-1]) + 1 + len(line) <= limit:
            texts[-1] += "\n" + line
        else:
            texts.append(line)
    return texts


def _fit(head: Sequence[str], items: Sequence[str], tail: Sequence[str], *, limit: int,
         room: int, more: Callable[[int], str]) -> list[str]:
    """At most ``room`` texts of at most ``limit`` characters showing ``head`` and
    ``tail`` always and as many ``items`` as fit, in order; ``more(n)`` counts those
    left out. The heads and tails given here are small enough to always fit."""
    def layout(k: int) -> list[str]:
        rest = [more(len(items) - k)] if k < len(items) else []
        return _pack([*head, *items[:k], *rest, *tail], limit)

    texts = layout(len(items))
    if len(texts) <= room:
        return texts
    lo, hi = 0, len(items) - 1  # the most items that fit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(layout(mid)) <= room:
            lo = mid
        else:
            hi = mid - 1
    return layout(lo)[:room]


def _text(text: str) -> str:
    """A message's top-level text (the notification, and what shows without blocks)."""
    return cut(text, TEXT_CHARS)


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": cut(text, SECTION_CHARS)}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context",
            "elements": [{"type": "mrkdwn", "text": cut(text, CONTEXT_CHARS)}]}


def _button(text: str, action_id: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "action_id": action_id, "value": value,
                              "text": {"type": "plain_text", "text": text}}
    if style:
        button["style"] = style
    return button


def _user(user_id: str) -> str:
    """A mention, when ``user_id`` looks like a Slack ID; otherwise the text, shown."""
    return f"<@{user_id}>" if _SLACK_ID.fullmatch(user_id) else escape(shorten(user_id, 64))


def _channel(channel_id: str) -> str:
    return f"<#{channel_id}>" if _SLACK_ID.fullmatch(channel_id) else escape(
        shorten(channel_id, 64))


def _link(url: str, label: str) -> str:
    """``<url|label>`` with an already escaped label; nothing in the URL can end the link."""
    target = re.sub(r"[\s<>|]", lambda m: quote(m.group()), url).replace("&", "&amp;")
    return f"<{target}|{label}>"


def _job(job_name: str) -> str:
    return escape(shorten(job_name, 200))


def _build_name(daily: str, build_no: str) -> str:
    """A build's daily number, or ``#<build_no>`` while CodeArts has not told it."""
    if daily:
        return escape(shorten(daily, 100))
    if build_no:
        return "#" + escape(shorten(build_no, 100))
    return ""


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def ephemeral(text: str, blocks: list[dict[str, Any]] | None = None, *,
              replace: bool | None = None) -> Message:
    msg: Message = {"response_type": "ephemeral", "text": _text(text)}
    if blocks:
        msg["blocks"] = blocks
    if replace is not None:
        msg["replace_original"] = replace
    return msg


# --- help and problems --------------------------------------------------------

USAGE = ("*Usage*\n"
         "`/build &lt;job&gt; [name=value ...] [commit=&lt;sha&gt;] [tag=&lt;tag&gt;]`: "
         "run a build task\n"
         "`/build list`: the jobs you may run here\n"
         "`/build status [&lt;job&gt;]`: a job's last builds, or your jobs' last results\n"
         "`/build stop &lt;job&gt; &lt;build number&gt;`: stop a running build\n"
         "Quote values with spaces: `msg=\"two words\"`.")


def help_message(jobs: Sequence[tuple[str, str]], *, is_admin: bool = False,
                 page: int = 1) -> Message:
    """Usage plus only the jobs this user may run in this channel, ``HELP_PAGE_JOBS`` a
    page; a page that is not the last says how many jobs follow and how to see them."""
    pages = max(1, -(-len(jobs) // HELP_PAGE_JOBS))
    page = min(max(page, 1), pages)
    start = (page - 1) * HELP_PAGE_JOBS
    shown = jobs[start:start + HELP_PAGE_JOBS]
    title = "*Jobs you may run here*" + (f" (page {page} of {pages})" if pages > 1 else "")
    lines = [f"• {code(name)} {escape(shorten(desc, 200))}".rstrip() for name, desc in shown]
    if not jobs:
        lines = ["None. Ask an admin to add you to a job in buildbot.toml."]
    tail = []
    if is_admin:
        tail.append("As an admin you may also give a 32-character CodeArts build task ID.")
    left = len(jobs) - start - len(shown)
    if left:
        tail.append(f"{_plural(left, 'more job')}: type `/build help {page + 1}`")
    head = [USAGE] if page == 1 else []

    def more(n: int) -> str:
        return f"… and {_plural(n, 'more job')} on this page"

    forms = _form_buttons([name for name, _ in shown])
    sections = _fit([title], lines, tail, limit=SECTION_CHARS,
                    room=MAX_BLOCKS - len(head) - len(forms), more=more)
    text = _fit([*head, title], lines, tail, limit=TEXT_CHARS, room=1, more=more)[0]
    return ephemeral(text, [*(_section(t) for t in [*head, *sections]), *forms])


def _form_buttons(names: Sequence[str]) -> list[dict[str, Any]]:
    """An "Open the form" button per job, ``BUTTONS_PER_BLOCK`` to an actions block."""
    buttons = [_button(shorten(f"Open the form: {name}", 75), f"{OPEN_FORM}.{i}", name)
               for i, name in enumerate(names) if 0 < len(name) <= 2000]
    return [{"type": "actions", "block_id": f"buildbot.forms.{n}",
             "elements": buttons[n:n + BUTTONS_PER_BLOCK]}
            for n in range(0, len(buttons), BUTTONS_PER_BLOCK)]


def _bullets(items: Iterable[str], head: str, *, room: int) -> tuple[str, list[str]]:
    """``head`` and one bullet per item: the top-level text and the section texts."""
    lines = [f"• {escape(shorten(p, 600))}" for p in items]

    def more(n: int) -> str:
        return f"• … and {n} more"

    sections = _fit([head], lines, [], limit=SECTION_CHARS, room=room, more=more)
    text = _fit([head], lines, [], limit=TEXT_CHARS, room=1, more=more)[0]
    return text, sections


def problems_message(problems: Iterable[str], *, replace: bool | None = None) -> Message:
    text, sections = _bullets(problems, ":warning: Nothing was started.", room=MAX_BLOCKS - 1)
    return ephemeral(text, [*(_section(t) for t in sections),
                            _context("Type `/build help` for usage.")], replace=replace)


def refused_now(job_name: str, problems: Iterable[str], *, replace: bool = True) -> Message:
    """A stored request checked again just before sending, and refused: the problems in
    the words of a refused command, after what changed."""
    head = (f":warning: Nothing was started: {_job(job_name)} was checked again before "
            "sending, and the configuration in force now refuses it.")
    text, sections = _bullets(problems, head, room=MAX_BLOCKS - 1)
    return ephemeral(text, [*(_section(t) for t in sections),
                            _context("Type `/build help` for usage.")], replace=replace)


# --- confirmation -------------------------------------------------------------

def _shown_value(name: str, value: str) -> str:
    """A parameter's value as Slack may show it: ``****`` when its name looks secret
    (``bot.masking.secret_name``), else the value with any secret in it masked. What is
    sent to CodeArts is never this."""
    return MASK if secret_name(name) else mask_text(value)


def _command(command: str) -> str:
    """``/build <command>`` as inline code, secret-named values masked."""
    return code("/build " + mask_text(command), 500)


def _param_lines(body: dict[str, Any]) -> tuple[list[str], list[str]]:
    """One line per parameter (a secret's value masked), and the commit and tag lines
    (always shown)."""
    params = body.get("parameter") or []
    lines = [f"• {code(str(p.get('name', '')), 200)} = "
             f"{code(_shown_value(str(p.get('name', '')), str(p.get('value', ''))))}"
             for p in params]
    scm = body.get("scm") or {}
    extra = []
    if scm.get("build_commit_id"):
        extra.append(f"• commit {code(str(scm['build_commit_id']), 300)}")
    if scm.get("build_tag"):
        extra.append(f"• tag {code(str(scm['build_tag']), 300)}")
    return lines, extra


def _more_params(n: int) -> str:
    return f"• … and {_plural(n, 'more parameter')}"


def confirmation(request_id: str, job_name: str, description: str, body: dict[str, Any],
                 *, minutes: int, rebuild: bool = False) -> Message:
    """The Run/Cancel question, seen by the requester alone. The job, every parameter,
    the commit and the tag are shown, over as many blocks as they need."""
    question = "Run this build again?" if rebuild else "Run this build?"
    head = f"{question}\n*{_job(job_name)}*"
    if description:
        head += f" ({escape(shorten(description, 200))})"
    params, scm = _param_lines(body)
    if not params and not scm:
        scm = ["No parameters."]
    sections = _fit([head], params, scm, limit=SECTION_CHARS, room=MAX_BLOCKS - 2,
                    more=_more_params)
    text = _fit([head], params, scm, limit=TEXT_CHARS, room=1, more=_more_params)[0]
    blocks = [
        *(_section(t) for t in sections),
        {"type": "actions", "block_id": "buildbot.confirm", "elements": [
            _button("Run", RUN, request_id, "primary"),
            _button("Cancel", CANCEL, request_id),
            _button("Edit parameters", EDIT, request_id),
        ]},
        _context(f"Expires in {minutes} minutes. Only you can see this."),
    ]
    return ephemeral(text, blocks, replace=False)  # never over a public message (Rebuild)


def cancelled(job_name: str) -> Message:
    return ephemeral(f"Cancelled: {_job(job_name)} was not started.", replace=True)


def expired(job_name: str, command: str, *, minutes: int) -> Message:
    return ephemeral(
        f":hourglass: This confirmation for {_job(job_name)} expired after {minutes} minutes; "
        f"nothing was started. Type {_command(command)} again to run it.",
        replace=True)


def already(state: str) -> Message:
    words = {"cancelled": "was cancelled", "expired": "expired",
             "failed": "already failed", "unknown": "already has an unknown outcome",
             "refused": "was refused when checked again"}
    return ephemeral(f"This request {words.get(state, 'is no longer pending')}; this click "
                     "started nothing. Type `/build` again to run it.", replace=True)


def missing() -> Message:
    return ephemeral("This request is no longer known to buildbot; nothing was started. "
                     "Type `/build` again to run it.", replace=True)


def not_yours(owner: str) -> Message:
    return ephemeral(f"Only {_user(owner)} can answer this confirmation. To run the job "
                     "yourself, type `/build` with the job.", replace=False)


def started_ack(job_name: str, daily: str, where: str | None, *, build_no: str = "") -> Message:
    """The confirmation, replaced once the build started; ``daily`` may still be unknown."""
    place = f" in {_channel(where)}" if where else ""
    if daily:
        started = f"Started {_job(job_name)}, build {_build_name(daily, build_no)}."
    else:
        number = f" (build {_build_name('', build_no)})" if build_no else ""
        started = (f"Started {_job(job_name)}{number}; its daily build number is not known "
                   "yet.")
    return ephemeral(f":rocket: {started} Follow it in the thread{place}.", replace=True)


# --- errors -------------------------------------------------------------------

def _error_detail(error_code: str | None, error_msg: str | None,
                  no_code: str = "?") -> str | None:
    """```CODE` message.``: the message ends with one full stop, never two."""
    if not (error_code or error_msg):
        return None
    words = (error_msg or "").strip().rstrip(".").rstrip()
    shown = escape(shorten(words, 500))
    if shown and not shown.endswith("…"):
        shown += "."
    error_code = error_code or no_code
    return _join(code(error_code, 100) if error_code else "", shown)


def request_id_text(request_id: str) -> str:
    """``request ID `abc``` as raw text, for a reason that is escaped where it is shown;
    the very words ``_request_line`` shows."""
    return "request ID `" + shorten(request_id, 100).replace("`", "ˋ") + "`"


def _request_line(answered: str | None, request_id: str | None) -> str | None:
    rid = escape(request_id_text(request_id)) if request_id else ""
    if answered and rid:
        return f"{answered}, {rid}"
    return answered or (rid[:1].upper() + rid[1:] if rid else None)


def _with_request_id(text: str, request_id: str | None) -> str:
    """``text``, then ``Request ID `abc``` on a line of its own when the answer had one."""
    line = _request_line(None, request_id)
    return f"{text}\n{line}" if line else text


def api_error(job_name: str, *, status: int | None, error_code: str | None,
              error_msg: str | None, hint: str, request_id: str | None) -> Message:
    parts = [f":x: CodeArts refused to run {_job(job_name)}; nothing was started.",
             _error_detail(error_code, error_msg), escape(shorten(hint, 500))]
    if status is not None or request_id:
        parts.append(_request_line(f"HTTP {status or '?'}", request_id))
    return ephemeral("\n".join(p for p in parts if p), replace=True)


def not_sent(job_name: str, reason: str) -> Message:
    return ephemeral(f":x: Could not reach CodeArts to run {_job(job_name)}; nothing was "
                     f"started ({escape(shorten(reason, 300))}). Try again in a minute.",
                     replace=True)


def outcome_unknown(job_name: str, *, unreadable: bool = False, request_id: str | None = None,
                    history_request_id: str | None = None) -> Message:
    """``request_id``: of the run call's answer, when it had one; ``history_request_id``:
    of the answer when the job's build history could not be read."""
    why = ("CodeArts answered with something buildbot could not read" if unreadable
           else "CodeArts did not answer in time")
    text = _with_request_id(
        f":warning: {why}: {_job(job_name)} *may or may not* have started. buildbot will "
        "not send it again by itself. Check the task's build history in CodeArts before "
        "running it again.", request_id)
    if history_request_id:
        text += f"\n{_request_line('The build history could not be read', history_request_id)}"
    return ephemeral(text, replace=True)


def found_after_restart(job_name: str, daily: str, build_no: str, where: str | None) -> Message:
    """A run whose answer was lost (no answer, or the bot restarted), found in the job's
    history."""
    place = f" in {_channel(where)}" if where else ""
    return ephemeral(f":rocket: The build history shows that CodeArts did start it: "
                     f"{_job(job_name)} build {_build_name(daily, build_no)}. Follow it in the "
                     f"thread{place}.", replace=True)


def announcement_uncertain(*, job_name: str, daily: str, build_no: str, channel: str,
                           link: str | None) -> Message:
    """To the requester, when the bot cannot tell whether its channel message was posted:
    it never posts twice, so the rest comes here."""
    name = _build_name(daily, build_no)
    shown = _link(link, name) if link else name
    text = (f":rocket: {_job(job_name)} build {shown} started. buildbot could not confirm "
            f"that its message in {_channel(channel)} was posted, so it will tell you here "
            "how the build ends.")
    return {"text": cut(text, SECTION_CHARS), "blocks": [_section(text)]}


def checking(job_name: str, *, status: int | None = None, error_code: str | None = None,
             error_msg: str | None = None, unreadable: bool = False,
             request_id: str | None = None) -> Message:
    """The run call's answer never came (or could not be read): the bot looks in the
    job's history and tells the outcome here; it never sends the run again."""
    if status is not None and status >= 500 and not unreadable:
        why = f"CodeArts answered HTTP {status}" + (
            f" {code(error_code, 64)}" if error_code else "") + (
            f" ({escape(shorten(error_msg, 300))})" if error_msg else "")
    elif unreadable:
        why = "CodeArts answered with something buildbot could not read"
    else:
        why = "CodeArts did not answer in time"
    return ephemeral(_with_request_id(
        f":hourglass_flowing_sand: {why}, so {_job(job_name)} *may* have started. buildbot "
        "is checking the task's build history and will tell you here; it will not send it "
        "again by itself.", request_id), replace=True)


def not_started_after_restart(job_name: str, *, request_id: str | None = None) -> Message:
    """``request_id``: of the run call's answer (a 5xx), when it had one."""
    return ephemeral(_with_request_id(
        f":x: CodeArts' build history has no build of {_job(job_name)} from this request: "
        "nothing was started. buildbot asks you again below.", request_id), replace=True)


def outcome_ambiguous(job_name: str, builds: Iterable[str], *,
                      request_id: str | None = None) -> Message:
    """``request_id``: of the run call's answer (a 5xx), when it had one."""
    numbers = ", ".join(f"#{escape(shorten(b, 20))}" for b in list(builds)[:20])
    return ephemeral(_with_request_id(
        f":warning: CodeArts' answer to {_job(job_name)} was lost, and its build history has "
        f"several builds that may be it ({numbers}); buildbot does not follow any of them "
        "and will not send it again. Check them in CodeArts.", request_id), replace=True)


def login_failed(job_name: str, *, status: int | None, error_code: str | None,
                 error_msg: str | None, hint: str, request_id: str | None) -> Message:
    parts = [(f":x: buildbot could not log in to Huawei Cloud to run {_job(job_name)}; "
              "nothing was started."), _error_detail(error_code, error_msg),
             escape(shorten(hint, 500))]
    if status is not None or request_id:
        where = f"IAM answered HTTP {status}" if status is not None else "No answer from IAM"
        parts.append(_request_line(where, request_id))
    return ephemeral("\n".join(p for p in parts if p), replace=True)


def _numbers(daily: str, build_no: str) -> str:
    """``build 20261123.7, #42``; ``build #42`` while the daily number is unknown."""
    if daily and build_no:
        return f"build {_build_name(daily, '')}, #{escape(shorten(build_no, 100))}"
    name = _build_name(daily, build_no)
    return f"build {name}" if name else "build number not known yet"


def started_unrecorded(job_name: str, daily: str, build_no: str, error_id: str) -> Message:
    return ephemeral(
        f":warning: {_job(job_name)} *was started* ({_numbers(daily, build_no)}), but "
        f"buildbot could not save it yet (error ID {code(error_id, 64)}). Once its database "
        "answers again it records the build and follows it in the channel; until then, "
        "follow it in CodeArts.",
        replace=True)


def started_unannounced(job_name: str, daily: str, build_no: str, error_id: str) -> Message:
    return ephemeral(
        f":warning: {_job(job_name)} *was started* ({_numbers(daily, build_no)}), but "
        f"buildbot could not post it in the channel yet (error ID {code(error_id, 64)}). It "
        "will try again and report how the build ends.", replace=True)


def result_elsewhere(reply: Message, *, channel: str, error: str) -> Message:
    """A build's result sent to its requester because Slack refused it in the thread."""
    note = (f"_buildbot could not post this in the build's thread in {_channel(channel)} "
            f"(Slack said {code(error, 100)}), so it is sent to you here._")
    shown = str(reply.get("text") or "")
    sections = _pack([cut(shown, SECTION_CHARS), note], SECTION_CHARS)
    text = _text(f"{cut(shown, TEXT_CHARS - len(note) - 1)}\n{note}")
    return {"text": text, "blocks": [_section(t) for t in sections]}


def busy() -> Message:
    return ephemeral(":hourglass: buildbot is very busy right now; nothing was started. "
                     "Try the command again in a minute.")


def button_not_valid() -> Message:
    """A click whose button value is not one buildbot gave (forged, or mangled)."""
    return ephemeral(":no_entry_sign: That button is no longer valid; nothing was done. "
                     "Type `/build` again to start over.", replace=False)


def other_workspace() -> Message:
    """A request from a Slack workspace other than the one the bot is installed in."""
    return ephemeral(":no_entry_sign: buildbot serves another Slack workspace; requests from "
                     "this one are not accepted, and nothing was done.", replace=False)


def internal_error(error_id: str) -> Message:
    return ephemeral(f":x: Something went wrong inside buildbot (error ID {code(error_id, 64)}). "
                     "Nothing was started. Tell your buildbot operator the error ID.")


# --- the build in the channel ----------------------------------------------------

def _result_words(result: str) -> tuple[str, str]:
    """Emoji and words for a result: one of ours, or ``ended:<WORD>`` from CodeArts."""
    if result.startswith(ENDED):
        word = " ".join(result[len(ENDED):].split()) or "?"
        return ENDED_EMOJI, f"ended: {escape(shorten(word, 60))}"
    return RESULT_WORDS.get(result, RESULT_WORDS["unknown"])


def _build_line(user_id: str, job_name: str, daily: str, build_no: str, link: str | None) -> str:
    """``@alice started *backend*: build 20261123.7 (#42)``; ``build #42`` without a daily
    number."""
    name = _build_name(daily, build_no)
    if link:
        name = _link(link, name or "open in CodeArts")
    number = f" (#{escape(shorten(build_no, 100))})" if daily and build_no else ""
    line = f"{_user(user_id)} started *{_job(job_name)}*"
    return f"{line}: build {name}{number}" if name else line


def announcement(*, build_id: str, user_id: str, job_name: str, description: str,
                 body: dict[str, Any], daily: str, build_no: str, link: str | None,
                 approvers: Sequence[str] = (), progress: str | None = None) -> Message:
    """The channel message whose thread carries every later word about the build: every
    parameter, the commit and the tag, over as many blocks as they need; and who approved
    it, for a job that needs approval. ``progress`` (escaped mrkdwn, e.g. ``Running for
    3 min · step 3 of 5: Build image``) is shown under the first line while it runs."""
    line = _build_line(user_id, job_name, daily, build_no, link)
    if approvers:
        line += f", approved by {', '.join(_user(u) for u in approvers[:20])}"
    params, scm = _param_lines(body)
    details = _fit([], params, scm, limit=CONTEXT_CHARS, room=MAX_BLOCKS - 2,
                   more=_more_params)
    running = f"running ({cut(progress, 300)})" if progress else "running"
    text = _fit([f"{line}: {running}"], params, scm, limit=TEXT_CHARS, room=1,
                more=_more_params)[0]
    head = f":hourglass_flowing_sand: {line}"
    if progress:
        head = cut(head, SECTION_CHARS - 510) + "\n" + cut(progress, 500)
    blocks = [_section(head), *(_context(d) for d in details), _running_buttons(build_id)]
    return {"text": _text(text), "blocks": blocks}


def _running_buttons(build_id: str) -> dict[str, Any]:
    """Stop, and Notify me (a DM to whoever clicks when the build ends), while it runs."""
    return {"type": "actions", "block_id": "buildbot.running",
            "elements": [_button("Stop", STOP, build_id, "danger"),
                         _button("\N{BELL} Notify me", NOTIFY, build_id)]}


def announcement_done(*, build_id: str, user_id: str, job_name: str, daily: str,
                      build_no: str, link: str | None, result: str,
                      duration_ms: int | None) -> Message:
    emoji, words = _result_words(result)
    line = _build_line(user_id, job_name, daily, build_no, link)
    took = f" in {duration(duration_ms)}" if duration_ms is not None else ""
    text = f"{emoji} {line}: {words}{took}"
    return {"text": _text(text), "blocks": [_section(text), {
        "type": "actions", "block_id": "buildbot.done",
        "elements": [_button("Rebuild", REBUILD, build_id)]}]}


def result_reply(*, build_id: str, user_id: str, job_name: str, daily: str, result: str,
                 duration_ms: int | None, link: str | None, build_no: str = "",
                 tail: Sequence[str] | None = None, tail_truncated: bool = False,
                 tail_error: str | None = None, outputs: Outputs | None = None) -> Message:
    """The thread reply when a build ends; the requester is mentioned when it failed or
    ended in a way buildbot does not know. ``tail``: the last lines of the build's log
    (already cleaned of control codes and secrets), shown in a code block; ``tail_error``:
    why the log could not be read, in one line instead; ``outputs``: what a successful
    build produced (``_output_blocks``)."""
    emoji, words = _result_words(result)
    took = f" in {duration(duration_ms)}" if duration_ms is not None else ""
    text = f"{_join(emoji, _job(job_name), _build_name(daily, build_no), words)}{took}."
    if result == "failure" or result.startswith(ENDED):
        text = f"{_user(user_id)} {text}"
    if link:
        text += " " + _link(link, "Open in CodeArts")
    blocks = [_section(text), *_output_blocks(outputs),
              *_log_blocks(tail, tail_truncated, tail_error, link)]
    buttons = [_button("Rebuild", REBUILD, build_id)]
    if failed(result):
        buttons.append(_on_it_button(build_id))
    return {"text": _text(text), "blocks": [*blocks, {
        "type": "actions", "block_id": "buildbot.next", "elements": buttons}]}


def failed(result: str) -> bool:
    """A result whose reply carries I'm on it: a failure, or an end that is no success."""
    return result in ("failure", "unknown") or result.startswith(ENDED)


def _on_it_button(build_id: str) -> dict[str, Any]:
    return _button("\N{HAPPY PERSON RAISING ONE HAND} I'm on it", ON_IT, build_id)


MAX_OUTPUTS = 10  # outputs listed in a success reply; the rest are counted
OUTPUT_KINDS = {"package": ":package: package", "image": ":whale: image"}


def _output_line(kind: str, name: str, version: str, address: str) -> str:
    """``• :package: package *app* `1.2.0` at `https://…/app-1.2.0.jar` ``: each value
    shortened, then escaped (CodeArts' text, already masked)."""
    line = f"• {OUTPUT_KINDS.get(kind, escape(kind))} *{escape(shorten(name, 100))}*"
    if version:
        line += " " + code(version, 60)
    if address:
        line += " at " + code(address, 300)
    return line


def _output_blocks(outputs: Outputs | None) -> list[dict[str, Any]]:
    """What a build produced: at most ``MAX_OUTPUTS`` lines, then "… and N more"; as few
    sections as hold them (each line is at most ~2,200 characters, so 10 lines and the
    heading never take more than 12 blocks). Nothing when none were read or listed."""
    if outputs is None or not outputs.items:
        return []
    shown = outputs.items[:MAX_OUTPUTS]
    lines = [_output_line(o.kind, o.name, o.version, o.address) for o in shown]
    left = max(outputs.total, len(outputs.items)) - len(shown)
    if left > 0:
        lines.append(f"… and {left} more")
    head = f"*What it produced* ({max(outputs.total, len(outputs.items))}):"
    return [_section(text) for text in _pack([head, *lines], SECTION_CHARS)]


_FENCE = "```"
_BACKTICKS = re.compile(r"`(?=`)")


def _log_line(line: str) -> str:
    """One log line inside a code block: escaped, and no run of backticks that could
    close the block early."""
    return _BACKTICKS.sub("`\u200b", escape(line))


def _code_block(lines: Sequence[str], limit: int = SECTION_CHARS) -> str:
    """The lines in a code block of at most ``limit`` characters: the last lines that
    fit, cut from the top (never inside an entity), "…" marking the cut."""
    room = limit - 2 * (len(_FENCE) + 1) - 2
    shown = _last_lines_that_fit([_log_line(line) for line in lines], room)
    body = "\n".join(shown) if shown else " "
    return f"{_FENCE}\n{body}\n{_FENCE}"


def _last_lines_that_fit(shown: list[str], room: int) -> list[str]:
    """The last of ``shown`` that fit in ``room`` characters joined by line breaks, with a
    "…" line above them when some were cut and it fits; a single line longer than the room
    keeps its end."""
    total = sum(len(line) + 1 for line in shown) - 1 if shown else 0
    cut_top = False
    while len(shown) > 1 and total > room:
        total -= len(shown.pop(0)) + 1
        cut_top = True
    if shown and total > room:  # one line longer than the block: keep its end
        shown[0] = _line_end(shown[0], room - 1)
    elif cut_top and total + 2 <= room:
        shown.insert(0, "…")
    return shown


def _line_end(line: str, width: int) -> str:
    """"…" and the last ``width`` characters of ``line``, fewer when the cut would fall
    inside an entity (``&amp;``, a mention)."""
    start = len(line) - width
    start = next((m.end() for m in _UNBREAKABLE.finditer(line) if m.start() < start < m.end()),
                 start)
    return "…" + line[start:]


def _log_blocks(tail: Sequence[str] | None, truncated: bool, error: str | None,
                link: str | None) -> list[dict[str, Any]]:
    """The log's last lines under a result (or one line saying why they are missing)."""
    full = f" {_link(link, 'Full log in CodeArts')}" if link else ""
    if error is not None:
        return [_context(f":warning: The build log could not be read "
                         f"({escape(shorten(error, 200))}).{full}")]
    if tail is None:
        return []
    if not [line for line in tail if line.strip()]:
        return [_context(f"The build log is empty.{full}")]
    note = f"Last {_plural(len(tail), 'line')} of the build log"
    if truncated:
        note += (" (the log is longer than buildbot reads: these are the last lines it "
                 "read)")
    return [_context(f"{note}:{full}"),
            {"type": "section", "text": {"type": "mrkdwn", "text": _code_block(tail)}}]


def gave_up(*, job_name: str, daily: str, hours: int, link: str | None,
            build_no: str = "") -> Message:
    name = _join(_job(job_name), _build_name(daily, build_no))
    text = (f":hourglass: {name} has not ended after {hours} hours; "
            "buildbot stopped following it. Check it in CodeArts.")
    if link:
        text += " " + _link(link, "Open in CodeArts")
    return {"text": _text(text)}


def stop_refused(problems: Iterable[str]) -> Message:
    head = (":no_entry: You can't stop this build: stopping needs the same permission as "
            "running it.")
    text, sections = _bullets(problems, head, room=MAX_BLOCKS)
    return ephemeral(text, [_section(t) for t in sections], replace=False)


def stop_requested(user_id: str, job_name: str, daily: str, build_no: str = "") -> Message:
    name = _join(_job(job_name), _build_name(daily, build_no))
    return {"text": f":octagonal_sign: {_user(user_id)} asked CodeArts to stop {name}."}


def stop_failed(job_name: str, daily: str = "", build_no: str = "", *,
                status: int | None = None, error_code: str | None = None,
                error_msg: str | None = None, request_id: str | None = None) -> Message:
    """Stop was clicked but CodeArts did not confirm it: its code, words and request ID,
    escaped, without the advice meant for a run."""
    name = _join(_job(job_name), _build_name(daily, build_no))
    parts = [f":x: CodeArts did not stop {name}.", _error_detail(error_code, error_msg, "")]
    if status is not None or request_id:
        parts.append(_request_line(f"HTTP {status}" if status is not None else None,
                                   request_id))
    parts.append("If the build is still running, try Stop again in a minute, or stop it "
                 "in CodeArts.")
    return ephemeral("\n".join(p for p in parts if p), replace=False)


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


# --- approvals (a second person approves a build before it starts) ---------------

APPROVE, REJECT, WITHDRAW = "buildbot.approve", "buildbot.reject", "buildbot.withdraw"


def _at(epoch: float) -> str:
    """A moment as ``14:32 UTC`` (Slack shows it as written, so no markup is needed)."""
    import time as _time

    return _time.strftime("%H:%M UTC", _time.gmtime(epoch))


def approvers_text(users: Sequence[str], groups: Sequence[str]) -> str:
    """``<@U1>, <@U2> or a member of user group `S1```: who may approve."""
    names = [_user(u) for u in users[:20]]
    if len(users) > 20:
        names.append(f"{len(users) - 20} more")
    names += [f"a member of user group {code(g, 64)}" for g in groups[:10]]
    if not names:
        return "nobody"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _approval_blocks(head: str, body: dict[str, Any], tail: str,
                     actions: list[dict[str, Any]] | None) -> tuple[str, list[dict[str, Any]]]:
    """The head, every parameter, the commit and the tag (as the confirmation shows them),
    then a context line and the buttons."""
    params, scm = _param_lines(body)
    if not params and not scm:
        scm = ["No parameters."]
    room = MAX_BLOCKS - 1 - (1 if actions else 0)
    sections = _fit([head], params, scm, limit=SECTION_CHARS, room=room, more=_more_params)
    text = _fit([head], params, scm, limit=TEXT_CHARS - len(tail) - 1, room=1,
                more=_more_params)[0]
    blocks = [*(_section(t) for t in sections), _context(tail)]
    if actions:
        blocks.append({"type": "actions", "block_id": "buildbot.approval", "elements": actions})
    return _text(f"{text}\n{tail}"), blocks


def _approval_head(requester: str, job_name: str, description: str) -> str:
    head = f"{_user(requester)} asks to run *{_job(job_name)}*"
    if description:
        head += f" ({escape(shorten(description, 200))})"
    return head


def approval_request(*, request_id: str, requester: str, job_name: str, description: str,
                     body: dict[str, Any], approvers: Sequence[str], groups: Sequence[str],
                     needed: int, approved_by: Sequence[str], expires_at: float) -> Message:
    """The approval question in the approval channel, with Approve and Reject; updated in
    place with each approval."""
    head = ":raised_hand: " + _approval_head(requester, job_name, description)
    so_far = (f" Approved so far by {', '.join(_user(u) for u in approved_by[:20])} "
              f"({len(approved_by)} of {needed})." if approved_by else "")
    tail = (f"Needs {_plural(needed, 'approval')} by {approvers_text(approvers, groups)}; "
            f"the requester cannot approve it.{so_far} Expires at {_at(expires_at)}.")
    text, blocks = _approval_blocks(head, body, tail, [
        _button("Approve", APPROVE, request_id, "primary"),
        _button("Reject", REJECT, request_id, "danger")])
    return {"text": text, "blocks": blocks}


APPROVAL_OUTCOMES = ("started", "queued", "not_started", "checking", "rejected", "expired",
                     "withdrawn", "refused",
                     "failed")


def approval_closed(*, requester: str, job_name: str, description: str, body: dict[str, Any],
                    outcome: str, by: Sequence[str] = (), daily: str = "",
                    build_no: str = "") -> Message:
    """The approval message once decided (no buttons): ``approved by @carol, started
    20261124.7``, ``rejected by @dave``, ``expired``, ``withdrawn``."""
    who = ", ".join(_user(u) for u in by[:20])
    name = _build_name(daily, build_no)
    words = {
        "started": (f":white_check_mark: Approved by {who}, started"
                    + (f" {name}." if name else ".")),
        "not_started": f":x: Approved by {who}, but CodeArts did not start it.",
        "checking": (f":grey_question: Approved by {who}; CodeArts' answer was lost, so "
                     "whether it started is being checked."),
        "rejected": f":no_entry: Rejected by {who}; nothing was started.",
        "expired": ":hourglass: Expired: not approved in time; nothing was started.",
        "withdrawn": f":leftwards_arrow_with_hook: Withdrawn by {who}; nothing was started.",
        "failed": ":x: Could not be asked here; nothing was started.",
        "queued": (f":hourglass_flowing_sand: Approved by {who}; the job is at its limit of "
                   "builds running at once, so it waits in the queue."),
        "refused": (f":no_entry_sign: Approved by {who}, but not started: checked again, "
                    "the configuration in force no longer allows it as asked."),
    }
    tail = words.get(outcome, words["failed"])
    text, blocks = _approval_blocks(_approval_head(requester, job_name, description), body,
                                    tail, None)
    return {"text": text, "blocks": blocks}


def awaiting_approval(request_id: str, job_name: str, *, approvers: Sequence[str],
                      groups: Sequence[str], needed: int, expires_at: float,
                      channel: str | None) -> Message:
    """The requester's confirmation, replaced while the request waits: who must approve,
    where, until when, and a Withdraw button."""
    where = f" in {_channel(channel)}" if channel else ""
    text = (f":hourglass_flowing_sand: {_job(job_name)} is waiting for approval by "
            f"{approvers_text(approvers, groups)}"
            + (f" ({needed} needed)" if needed > 1 else "")
            + f"{where}. It starts once approved, and expires at {_at(expires_at)}.")
    return ephemeral(text, [_section(text), {
        "type": "actions", "block_id": "buildbot.awaiting",
        "elements": [_button("Withdraw", WITHDRAW, request_id)]}], replace=True)


def approval_ended(job_name: str, outcome: str, *, by: str | None = None,
                   command: str = "") -> Message:
    """The requester's word when the wait ends without a build: rejected, expired,
    withdrawn, or the question could not be asked."""
    again = f" Type {_command(command)} to ask again." if command else ""
    words = {
        "rejected": f":no_entry: {_user(by or '?')} rejected {_job(job_name)}; nothing was "
                    "started.",
        "expired": f":hourglass: Nobody approved {_job(job_name)} in time; nothing was "
                   f"started.{again}",
        "withdrawn": f"Withdrawn: {_job(job_name)} was not started.",
    }
    text = words.get(outcome, f":x: The approval request for {_job(job_name)} could not be "
                              f"posted; nothing was started. Ask an admin to invite buildbot "
                              f"to the approval channel.{again}")
    return ephemeral(text, replace=True)


def approval_refused(reason: str, *, requester: str = "") -> Message:
    """Why an Approve, Reject or Withdraw click changed nothing: to the clicker alone."""
    words = {
        "self": "You cannot approve or reject your own request: another approver must. "
                "To take it back, use Withdraw.",
        "not_approver": "You are not an approver of this job; your click changed nothing.",
        "unchecked": "Your membership of the approver groups could not be checked; try "
                     "again in a minute.",
        "not_requester": f"Only {_user(requester or '?')} can withdraw this request.",
        "approved_already": "You have approved this request already; it needs another "
                            "approver.",
        "enough": "This request has all its approvals and is starting.",
        "running": "This request has all its approvals and is starting.",
        "started": "This request was approved and its build started.",
        "rejected": "This request was rejected; your click changed nothing.",
        "withdrawn": "This request was withdrawn; your click changed nothing.",
        "expired": "This approval request expired; your click changed nothing.",
        "failed": "This request ended without a build; your click changed nothing.",
        "unknown": "This request was approved; its build's outcome is being checked.",
        "cancelled": "This request was cancelled; your click changed nothing.",
        "pending": "This request was not sent for approval yet; your click changed nothing.",
        "missing": "This request is no longer known to buildbot; your click changed nothing.",
    }
    return ephemeral(words.get(reason, "This request is no longer waiting for approval; "
                                       "your click changed nothing."), replace=False)


def approval_noted(job_name: str, *, given: int, needed: int) -> Message:
    """To an approver whose approval was recorded but is not the last one needed."""
    return ephemeral(f":white_check_mark: Your approval of {_job(job_name)} is recorded "
                     f"({given} of {needed}); it starts once {needed - given} more "
                     f"approver(s) approve.", replace=False)


# --- one build at a time and the queue ------------------------------------------------

QUEUE, RUN_ANYWAY, LEAVE = "buildbot.queue", "buildbot.run_anyway", "buildbot.leave"


def _ago(seconds: float) -> str:
    minutes = max(0, int(seconds // 60))
    if minutes < 1:
        return "just now"
    hours, minutes = divmod(minutes, 60)
    return (f"{hours} h {minutes} min ago" if hours else f"{minutes} min ago")


def at_limit(request_id: str, job_name: str, description: str, body: dict[str, Any], *,
             running: Sequence[tuple[str, str, float]], limit: int, queue_minutes: int,
             admin: bool, minutes: int, replace: bool = True,
             elsewhere: str = "") -> Message:
    """The question when the job already runs as many builds as it may: what runs
    (``running``: name, who, seconds ago; ``elsewhere``: a build CodeArts says runs that
    buildbot did not start, or ``unknown`` when CodeArts could not be asked), then
    **Queue**, for an admin **Run anyway**, and **Cancel**; every parameter shown as the
    confirmation shows them."""
    head = (f":vertical_traffic_light: *{_job(job_name)}* is already running: "
            f"{_running_now(running, elsewhere)}.")
    if description:
        head += f"\n({escape(shorten(description, 200))})"
    head += (f"\nIt may run {_plural(limit, 'build')} at once. Queue this one to start "
             "when a build ends.")
    params, scm = _param_lines(body)
    if not params and not scm:
        scm = ["No parameters."]
    sections = _fit([head], params, scm, limit=SECTION_CHARS, room=MAX_BLOCKS - 2,
                    more=_more_params)
    text = _fit([head], params, scm, limit=TEXT_CHARS, room=1, more=_more_params)[0]
    blocks = [*(_section(t) for t in sections),
              {"type": "actions", "block_id": "buildbot.at_limit",
               "elements": _at_limit_buttons(request_id, admin=admin)},
              _context(f"Answer within {minutes} minutes; a queued build waits up to "
                       f"{queue_minutes} minutes for its turn. Only you can see this.")]
    return ephemeral(text, blocks, replace=replace)


def _running_now(running: Sequence[tuple[str, str, float]], elsewhere: str) -> str:
    """What runs, for ``at_limit``: up to five builds by name, who and when, then the rest
    counted, then a build CodeArts runs that buildbot did not start."""
    shown = [f"{_build_name(name, '') or 'a build'} by {_user(who)}, {_ago(age)}"
             for name, who, age in running[:5]]
    if len(running) > 5:
        shown.append(f"{len(running) - 5} more")
    shown += _elsewhere(elsewhere)
    return "; ".join(shown) if shown else "a build is being started"


def _elsewhere(elsewhere: str) -> list[str]:
    """A build started outside buildbot, by its number; or that CodeArts could not say."""
    if elsewhere == "unknown":
        return ["CodeArts could not be asked whether it runs, so buildbot does not start it "
                "unasked"]
    if elsewhere:
        return [f"build #{escape(shorten(elsewhere, 64))}, started outside buildbot"]
    return []


def _at_limit_buttons(request_id: str, *, admin: bool) -> list[dict[str, Any]]:
    """Queue, Run anyway (for an admin only) and Cancel."""
    buttons = [_button("Queue", QUEUE, request_id, "primary")]
    if admin:
        buttons.append(_button("Run anyway", RUN_ANYWAY, request_id, "danger"))
    buttons.append(_button("Cancel", CANCEL, request_id))
    return buttons


def queued(request_id: str, job_name: str, *, position: int, expires_at: float) -> Message:
    """The requester's place in the queue, with Leave; replaced as the place changes."""
    place = "next in line" if position <= 1 else f"number {position} in line"
    text = (f":hourglass_flowing_sand: {_job(job_name)} is queued: {place}. It starts when "
            f"a running build of it ends; the queue gives up at {_at(expires_at)}.")
    return ephemeral(text, [_section(text), {
        "type": "actions", "block_id": "buildbot.queued",
        "elements": [_button("Leave the queue", LEAVE, request_id)]}], replace=True)


def queue_ended(job_name: str, outcome: str, *, command: str = "", minutes: int = 0) -> Message:
    """The requester's word when a queued request ends without a build: left, or its
    time in the queue ran out."""
    if outcome == "left":
        return ephemeral(f"You left the queue: {_job(job_name)} was not started.",
                         replace=True)
    again = f" Type {_command(command)} to try again." if command else ""
    return ephemeral(f":hourglass: {_job(job_name)} waited {minutes} minutes in the queue "
                     f"without a free slot; nothing was started.{again}", replace=True)


def queue_refused(reason: str, *, requester: str = "") -> Message:
    """Why a Queue, Run anyway or Leave click changed nothing: to the clicker alone."""
    words = {
        "not_yours": f"Only {_user(requester or '?')} can answer this request.",
        "not_admin": "Only admins may run a build past the job's limit; use Queue.",
        "needs_approval": "This job needs approval first: click Run to ask for it (an "
                          "approved request is queued when the job is at its limit).",
        "queued": "This request is already in the queue.",
        "running": "This request is being started.",
        "started": "This request's build already started.",
        "withdrawn": "This request left the queue; your click changed nothing.",
        "expired": "This request expired; your click changed nothing.",
        "cancelled": "This request was cancelled; your click changed nothing.",
        "over_limit": "You have reached your hourly limit of builds of this job.",
        "missing": "This request is no longer known to buildbot; your click changed nothing.",
    }
    return ephemeral(words.get(reason, "This request is no longer waiting; your click "
                                       "changed nothing."), replace=False)


# --- status and stop ---------------------------------------------------------------
# /build status [job] and /build stop <job> <build_no>: answers to the typist alone.
# ``rows`` are bot.status.BuildRow-like: build_no, daily, result ("running" or a stored
# result), started_at (epoch seconds or None), duration_ms, started_by (a Slack user or
# None: started outside Slack).

STOP_CONFIRM, STOP_KEEP = "buildbot.stop.confirm", "buildbot.stop.keep"
STATUS_RUNNING = "running"


def _when(epoch: float | None) -> str:
    """``23 Nov 14:03 UTC``; empty when unknown."""
    import time as _time

    return _time.strftime("%d %b %H:%M UTC", _time.gmtime(epoch)) if epoch is not None else ""


def _row_line(row: Any) -> str:
    """``• 20261123.7 (#42) ✅ succeeded in 6 min 12 s · 23 Nov 14:03 UTC · by @alice``"""
    name = _build_name(row.daily, row.build_no) or "?"
    if row.daily and row.build_no:
        name += f" (#{escape(shorten(row.build_no, 100))})"
    if row.result == STATUS_RUNNING:
        took = f" for {duration(row.duration_ms)}" if row.duration_ms is not None else ""
        state = f":hourglass_flowing_sand: running{took}"
    else:
        emoji, words = _result_words(row.result)
        took = f" in {duration(row.duration_ms)}" if row.duration_ms is not None else ""
        state = f"{emoji} {words}{took}"
    who = f"by {_user(row.started_by)}" if row.started_by else started_words(
        trigger=getattr(row, "trigger", None), codearts_user=getattr(row, "codearts_user", None),
        person=getattr(row, "person", None))
    taker = getattr(row, "on_it", None)  # I'm on it (issue 28)
    on_it = f"\N{HAPPY PERSON RAISING ONE HAND} {_user(taker)} is on it" if taker else ""
    return " · ".join(p for p in (f"• {name} {state}", _when(row.started_at), who, on_it)
                      if p)


def _status_tail(job_name: str, *, running: bool, hidden: int) -> list[str]:
    tail = ([f"Stop one with `/build stop {escape(shorten(job_name, 200))} &lt;build "
             "number&gt;`."] if running else [])
    if hidden:
        tail.append(f"{_plural(hidden, 'more build')} of this build task not shown: "
                    "started under a job entry you may not use here.")
    return tail


def job_status(job_name: str, rows: Sequence[Any], *, hidden: int = 0) -> Message:
    """The last builds of a job, newest first, and whether one is running; ``hidden``
    builds of its build task belong to a job entry this user may not use here."""
    running = [r for r in rows if r.result == STATUS_RUNNING]
    if not rows:
        head = f"*{_job(job_name)}* has no builds yet."
    elif running:
        numbers = ", ".join(_build_name(r.daily, r.build_no) for r in running[:5])
        head = (f"*{_job(job_name)}*: {_plural(len(running), 'build')} running ({numbers}). "
                f"Last {_plural(len(rows), 'build')}:")
    else:
        head = f"*{_job(job_name)}*: nothing running. Last {_plural(len(rows), 'build')}:"
    lines = [_row_line(r) for r in rows[:20]]
    tail = _status_tail(job_name, running=bool(running), hidden=hidden)
    sections = _fit([head], lines, [], limit=SECTION_CHARS, room=MAX_BLOCKS - 1,
                    more=lambda n: f"… and {_plural(n, 'more build')}")
    text = _fit([head], lines, tail, limit=TEXT_CHARS, room=1,
                more=lambda n: f"… and {_plural(n, 'more build')}")[0]
    blocks = [_section(t) for t in sections] + [_context(t) for t in tail]
    return ephemeral(text, blocks)


def jobs_status(results: Sequence[tuple[str, Any, bool]], *, left: int = 0,
                request_ids: Mapping[str, str | None] | None = None) -> Message:
    """``/build status``: each job this user may run here, with its newest build (None: no
    builds yet) or, when CodeArts could not be asked in time, ``unknown``; ``left`` jobs
    were not asked (only the first ``HELP_PAGE_JOBS`` are). ``request_ids``: by job name,
    of CodeArts' error answer for a job shown ``unknown``."""
    head = "*Your jobs here and their last build*"
    lines = []
    for name, row, failed in results:
        if failed:
            why = _request_line("CodeArts did not answer", (request_ids or {}).get(name))
            lines.append(f"• {code(name)} :grey_question: unknown ({why})")
        elif row is None:
            lines.append(f"• {code(name)} no builds yet")
        else:
            lines.append(f"• {code(name)} " + _row_line(row).removeprefix("• "))
    if not lines:
        lines = ["None. Ask an admin to add you to a job in buildbot.toml."]
    tail = ["`/build status &lt;job&gt;` shows a job's last builds."]
    if left > 0:
        tail[0] = f"{_plural(left, 'more job')} not shown: {tail[0]}"

    def more(n: int) -> str:
        return f"… and {_plural(n, 'more job')}"

    sections = _fit([head], lines, [], limit=SECTION_CHARS, room=MAX_BLOCKS - 1, more=more)
    text = _fit([head], lines, tail, limit=TEXT_CHARS, room=1, more=more)[0]
    return ephemeral(text, [*(_section(t) for t in sections), _context(tail[0])])


def status_refused(problems: Iterable[str]) -> Message:
    """``/build status <job>`` for a job this user may not run here (or no such job)."""
    head = (":no_entry: You can't see this job's builds here: that needs the same permission "
            "as running it.")
    text, sections = _bullets(problems, head, room=MAX_BLOCKS - 1)
    return ephemeral(text, [*(_section(t) for t in sections),
                            _context("Type `/build help` for usage.")])


def status_failed(job_name: str, reason: str, *, request_id: str | None = None) -> Message:
    """CodeArts could not be asked for a job's builds; ``reason`` is a few plain words;
    ``request_id``: of CodeArts' answer, when it had one."""
    return ephemeral(_with_request_id(
        f":warning: buildbot could not read the builds of {code(job_name, 200)}: "
        f"{escape(shorten(reason, 300))}. Try again in a minute.", request_id), replace=False)


def _stop_name(job_name: str, daily: str, build_no: str) -> str:
    name = f"build #{escape(shorten(build_no, 100))}"
    if daily:
        name = f"build {escape(shorten(daily, 100))} (#{escape(shorten(build_no, 100))})"
    return f"*{_job(job_name)}* {name}"


def stop_question(job_name: str, daily: str, build_no: str, *, value: str,
                  started_by: str | None) -> Message:
    """Stop / Keep running, before ``/build stop`` asks CodeArts to stop a build."""
    who = f"started by {_user(started_by)}" if started_by else "started outside Slack"
    text = f"Stop {_stop_name(job_name, daily, build_no)} ({who})? It is running."
    return ephemeral(text, [
        _section(text),
        {"type": "actions", "block_id": "buildbot.stop.ask",
         "elements": [_button("Stop", STOP_CONFIRM, value, "danger"),
                      _button("Keep running", STOP_KEEP, value)]},
        _context("Only you can see this.")])


def stop_not_running(job_name: str, daily: str, build_no: str, result: str) -> Message:
    """The build has already ended: nothing to stop."""
    emoji, words = _result_words(result)
    return ephemeral(f"{emoji} {_stop_name(job_name, daily, build_no)} has already ended "
                     f"({words}): nothing to stop.", replace=False)


def stop_no_such_build(job_name: str, build_no: str) -> Message:
    return ephemeral(f":warning: {code(job_name, 200)} has no build "
                     f"#{escape(shorten(build_no, 30))}: `/build status "
                     f"{escape(shorten(job_name, 200))}` shows its last builds and their "
                     "numbers.", replace=False)


def stop_kept(job_name: str, build_no: str) -> Message:
    return ephemeral(f"Kept running: {_stop_name(job_name, '', build_no)} was not stopped.",
                     replace=True)


def stop_asked(job_name: str, daily: str, build_no: str) -> Message:
    """CodeArts accepted the stop (the result follows in the build's thread, for ours)."""
    return ephemeral(f":octagonal_sign: Asked CodeArts to stop "
                     f"{_stop_name(job_name, daily, build_no)}.", replace=True)


# --- subscriptions: builds started outside Slack, announced in subscribed channels ------

FILTER_WORDS = {"all": "every build", "failures": "failed builds only",
                "changes": "only when a branch breaks or is fixed"}
_MODE_WHAT = {
    "all": ("announces each build of *{job}* started outside Slack (the console, a push, "
            "a timer, a pipeline) when it starts, and its result in the thread"),
    "failures": ("announces each build of *{job}* that fails, with the last lines of its "
                 "log (builds started from Slack in this channel are left to their thread)"),
    "changes": ("says when *{job}* breaks on a branch (the first failure after a success, "
                "with the last lines of its log) and when it is fixed (the first success "
                "after a failure); builds started from Slack in this channel are left to "
                "their thread"),
}


def _filter_words(filter: str, branch: str | None = None) -> str:
    words = FILTER_WORDS.get(filter, escape(shorten(filter, 20)))
    return words + (f", branches {code(branch, 100)}" if branch else "")


def subscribed(job_name: str, filter: str, *, user_id: str,
               previous: tuple[str, str | None] | None, branch: str | None = None) -> Message:
    """In the channel: someone subscribed it to a job's builds (or replaced its mode and
    branch filter: it says what they were)."""
    what = _MODE_WHAT.get(filter, _MODE_WHAT["all"]).format(job=_job(job_name))
    if branch:
        what += f", on branches matching {code(branch, 100)}"
    changed = ""
    if previous is not None:
        was = _filter_words(*previous)
        changed = (f" (replaces: {was})" if previous != (filter, branch)
                   else " (as it already was)")
    text = (f":bell: {_user(user_id)} subscribed this channel to *{_job(job_name)}*: "
            f"{_filter_words(filter, branch)}{changed}. buildbot now {what}.")
    tail = (f"`/build unsubscribe {escape(shorten(job_name, 200))}` stops it; "
            "`/build subscriptions` lists this channel's.")
    return {"response_type": "in_channel", "replace_original": False, "text": _text(text),
            "blocks": [_section(cut(text, SECTION_CHARS)), _context(tail)]}


def unsubscribed(job_name: str, *, user_id: str, existed: bool) -> Message:
    """``/build unsubscribe``: said in the channel when it ended a subscription."""
    if not existed:
        return ephemeral(f"This channel is not subscribed to {code(job_name, 200)}: nothing "
                         "changed. `/build subscriptions` lists this channel's.")
    text = (f":no_bell: {_user(user_id)} unsubscribed this channel from *{_job(job_name)}*: "
            "no new builds of it will be announced here (builds already announced still "
            "get their result).")
    return {"response_type": "in_channel", "replace_original": False, "text": _text(text)}


def subscriptions_list(rows: Sequence[tuple[str, str, str, float, str | None]]) -> Message:
    """``/build subscriptions``: this channel's (job, mode, who, since, branch filter), to
    the typist."""
    if not rows:
        return ephemeral("This channel is subscribed to no job. `/build subscribe &lt;job&gt; "
                         "[all|failures|changes] [branch=&lt;glob&gt;]` announces here the "
                         "builds of a job started outside Slack.")
    head = f"*This channel's subscriptions* ({len(rows)})"
    lines = [f"• {code(job)}: {_filter_words(f, branch)} · since {_when(at)}"
             + (f" · by {_user(who)}" if who else "") for job, f, who, at, branch in rows]
    tail = ["`/build unsubscribe &lt;job&gt;` ends one."]

    def more(n: int) -> str:
        return f"… and {_plural(n, 'more subscription')}"

    sections = _fit([head], lines, [], limit=SECTION_CHARS, room=MAX_BLOCKS - 1, more=more)
    text = _fit([head], lines, tail, limit=TEXT_CHARS, room=1, more=more)[0]
    return ephemeral(text, [*(_section(t) for t in sections), _context(tail[0])])


def subscribe_refused(problems: Iterable[str]) -> Message:
    """Subscribing (or unsubscribing) needs the permission of a run in this channel."""
    head = (":no_entry: You can't change this channel's subscription to this job: that "
            "needs the same permission as running it here.")
    text, sections = _bullets(problems, head, room=MAX_BLOCKS - 1)
    return ephemeral(text, [*(_section(t) for t in sections),
                            _context("Type `/build help` for usage.")])


def subscribe_channel_refused(problem: str) -> Message:
    """Subscribing a conversation the bot may not announce builds in (Slack said so)."""
    text, sections = _bullets([problem], ":no_entry: This conversation cannot be subscribed; "
                              "nothing was changed.", room=MAX_BLOCKS - 1)
    return ephemeral(text, [_section(t) for t in sections])


# a build record's trigger_type, in words (any other word: none)
TRIGGER_WORDS = {
    "MANUAL": "manually", "MANUALLY": "manually", "SCHEDULER": "by a timer",
    "SCHEDULE": "by a timer", "TIMER": "by a timer", "TIMING": "by a timer",
    "CRON": "by a timer", "PUSH": "by a push", "GIT_PUSH": "by a push",
    "CODE_PUSH": "by a push", "CODEHUB": "by a push", "WEBHOOK": "by a push",
    "MERGE_REQUEST": "by a merge request", "MR": "by a merge request",
    "PIPELINE": "by a pipeline", "API": "through the API",
}
OUTSIDE = "started outside Slack"


def started_words(*, trigger: str | None, codearts_user: str | None,
                  person: str | None) -> str:
    """Who and what started a followed build: ``started by <@U01ZHANG> (by a push)``
    for a person the jobs file maps, ``started by zhang.san in CodeArts (manually)``
    for one it does not, ``started from Slack by <@U…> in another channel`` for a build
    of another channel (``trigger`` SLACK, ``person`` its requester), and ``started
    outside Slack`` when the record said nothing."""
    if trigger == "SLACK":
        by = f" by {_user(person)}" if person else ""
        return f"started from Slack{by} in another channel"
    how = TRIGGER_WORDS.get((trigger or "").upper())
    if person:
        who = f"started by {_user(person)}"
    elif codearts_user:
        who = f"started by {escape(shorten(codearts_user, 60))} in CodeArts"
    else:
        who = OUTSIDE
    return f"{who} ({how})" if how else who


def _followed_line(job_name: str, daily: str, build_no: str, link: str | None,
                   started: str | None = None) -> str:
    name = _build_name(daily, build_no) or "?"
    if daily and build_no:
        name += f" (#{escape(shorten(build_no, 100))})"
    if link:
        name = _link(link, name)
    return f"*{_job(job_name)}* build {name}, {started or OUTSIDE}"


def followed_announcement(*, build_id: str, job_name: str, daily: str, build_no: str,
                          link: str | None, progress: str | None = None,
                          started: str | None = None) -> Message:
    """The channel message of a build a subscription found (``all``); its thread gets the
    result. Stop works as on the bot's own builds. ``started``: ``started_words``."""
    line = _followed_line(job_name, daily, build_no, link, started)
    head = f":hourglass_flowing_sand: {line}"
    if progress:
        head = cut(head, SECTION_CHARS - 510) + "\n" + cut(progress, 500)
    running = f"running ({cut(progress, 300)})" if progress else "running"
    return {"text": _text(f"{line}: {running}"), "blocks": [
        _section(head), _running_buttons(build_id)]}


def followed_done(*, job_name: str, daily: str, build_no: str, link: str | None,
                  result: str, duration_ms: int | None,
                  started: str | None = None) -> Message:
    """The channel message of a followed build once it ended (no Rebuild: no command)."""
    emoji, words = _result_words(result)
    took = f" in {duration(duration_ms)}" if duration_ms is not None else ""
    text = f"{emoji} {_followed_line(job_name, daily, build_no, link, started)}: {words}{took}"
    return {"text": _text(text), "blocks": [_section(cut(text, SECTION_CHARS))]}


def followed_result(*, job_name: str, daily: str, build_no: str, result: str,
                    duration_ms: int | None, link: str | None,
                    tail: Sequence[str] | None = None, tail_truncated: bool = False,
                    tail_error: str | None = None,
                    outputs: Outputs | None = None, build_id: str = "",
                    started: str | None = None) -> Message:
    """The result of a followed build: its thread reply (``all``), or the one channel
    message of a failed build (``failures``), with the log's last lines, or what a
    successful one produced. ``started`` (``started_words``) mentions a person the
    jobs file maps."""
    emoji, words = _result_words(result)
    took = f" in {duration(duration_ms)}" if duration_ms is not None else ""
    text = (f"{emoji} {_followed_line(job_name, daily, build_no, None, started)}: "
            f"{words}{took}.")
    if link:
        text += " " + _link(link, "Open in CodeArts")
    blocks = [_section(cut(text, SECTION_CHARS)), *_output_blocks(outputs),
              *_log_blocks(tail, tail_truncated, tail_error, link)]
    if build_id and failed(result):  # I'm on it (issue 28)
        blocks.append({"type": "actions", "block_id": "buildbot.next",
                       "elements": [_on_it_button(build_id)]})
    return {"text": _text(text), "blocks": blocks}


# --- build link previews (a pasted build link, unfurled: bot.flow_unfurl) --------------

PREVIEW_BLOCK = "buildbot.preview"


def build_preview(*, job_name: str, description: str, daily: str, build_no: str,
                  result: str | None, duration_ms: int | None, progress: str | None,
                  started_by: str | None, stop_id: str | None = None,
                  rebuild_id: str | None = None) -> Message:
    """What a pasted link to a build shows under it (``chat.unfurl``), for everyone in the
    channel: the job, the build's daily and build numbers, its state while it runs
    (``progress``: escaped mrkdwn, the time and step) or its result and duration, and who
    started it. Stop (a running build the bot knows) and Rebuild (an ended build started
    from Slack) act with the clicker's permissions, as on the build's own messages."""
    name = _build_name(daily, build_no) or "?"
    if daily and build_no:
        name += f" (#{escape(shorten(build_no, 100))})"
    head = f"*{_job(job_name)}* build {name}"
    if description:
        head += f" · {escape(shorten(description, 200))}"
    if result is None:
        state = ":hourglass_flowing_sand: " + (cut(progress, 500) if progress else "Running")
    else:
        emoji, words = _result_words(result)
        took = f" in {duration(duration_ms)}" if duration_ms is not None else ""
        state = f"{emoji} {words[:1].upper()}{words[1:]}{took}"
    who = f"Started by {_user(started_by)}" if started_by else "Started outside Slack"
    blocks: list[dict[str, Any]] = [_section(f"{head}\n{state}"), _context(who)]
    buttons = []
    if result is None and stop_id:
        buttons.append(_button("Stop", STOP, stop_id, "danger"))
    if result is not None and rebuild_id:
        buttons.append(_button("Rebuild", REBUILD, rebuild_id))
    if buttons:
        blocks.append({"type": "actions", "block_id": PREVIEW_BLOCK, "elements": buttons})
    elif result is None:
        blocks.append(_context(f"`/build stop {escape(shorten(job_name, 200))} "
                               f"{escape(shorten(build_no, 30))}` stops it."))
    return {"text": _text(f"{head}: {state}"), "blocks": blocks}


# --- the Workflow Builder step "Run a CodeArts build" (bot.workflow) -------------------
# Slack shows a step's error as plain text in the workflow's activity: no markup here.

def step_refused(problems: Iterable[str]) -> str:
    """Why the step started nothing: the same problems /build would give."""
    listed = [" ".join(str(p).replace("`", "").split()) for p in problems][:10]
    text = "Nothing was started. " + " ".join(f"• {p}" for p in listed)
    return cut(text, 1000)


def step_not_started(job_name: str, state: str, detail: str | None = None) -> str:
    """The build was asked for but never started (cancelled, expired, rejected, refused,
    CodeArts refused it, or the bot stopped before it could start it)."""
    words = {"cancelled": "was cancelled", "expired": "waited too long and expired",
             "rejected": "was rejected by an approver", "withdrawn": "was withdrawn",
             "refused": "is no longer allowed", "failed": "was refused by CodeArts",
             "lost": "could not be started (the bot stopped before it could start it): "
                     "run the workflow again"}.get(state, f"was not started ({state})")
    text = f"{shorten(job_name, 200)} {words}."
    if detail:
        text += " " + " ".join(detail.replace("`", "").split())
    return cut(text, 1000)


def step_failed(job_name: str, daily: str, build_no: str, result: str,
                duration_ms: int | None) -> str:
    """The build ran and did not succeed."""
    words = _result_words(result)[1]
    took = f" in {duration(duration_ms)}" if duration_ms is not None else ""
    name = shorten(daily, 100) if daily else f"#{shorten(build_no, 30)}"
    return cut(f"{shorten(job_name, 200)} build {name} {words}{took}.", 1000)


# --- Notify me: a direct message when a build ends (issue 28) --------------------------

def _notify_name(job_name: str, daily: str, build_no: str) -> str:
    return _join(f"*{_job(job_name)}*", _build_name(daily, build_no))


def notify_on(job_name: str, daily: str, build_no: str = "") -> Message:
    """To the clicker alone: asked."""
    return ephemeral(f"\N{BELL} You'll get a DM when {_notify_name(job_name, daily, build_no)}"
                     " ends. Click *Notify me* again to undo it.", replace=False)


def notify_off(job_name: str, daily: str, build_no: str = "") -> Message:
    """To the clicker alone: undone."""
    return ephemeral(f"\N{BELL WITH CANCELLATION STROKE} You won't get a DM when "
                     f"{_notify_name(job_name, daily, build_no)} ends.", replace=False)


def notify_ended(job_name: str, daily: str, build_no: str = "", *,
                 on_its_way: bool = False) -> Message:
    """To the clicker alone: the build has ended (its DM, if they asked, is on its way)."""
    name = _notify_name(job_name, daily, build_no)
    if on_its_way:
        return ephemeral(f"{name} has ended: your DM is on its way.", replace=False)
    return ephemeral(f"{name} has already ended: its result is in this message and its "
                     "thread.", replace=False)


def notify_refused(reason: str) -> Message:
    """To the clicker alone: why a Notify me click changed nothing."""
    return ephemeral(f":warning: {escape(shorten(reason, 300))}", replace=False)


def notify_dm(*, job_name: str, daily: str, build_no: str, result: str,
              duration_ms: int | None, thread: str | None, link: str | None,
              channel: str) -> Message:
    """The direct message to someone who clicked Notify me: the result, how long it took,
    and a link to the build's thread (else the channel it is in)."""
    emoji, words = _result_words(result)
    took = f" in {duration(duration_ms)}" if duration_ms is not None else ""
    text = f"{emoji} {_notify_name(job_name, daily, build_no)} {words}{took}."
    where = _link(thread, "Open the thread") if thread else f"See {_channel(channel)}"
    lines = [text, where + (" · " + _link(link, "Open in CodeArts") if link else "")]
    return {"text": _text(text), "blocks": [_section("\n".join(lines))]}


# --- I'm on it: who is on a failed build (issue 28) --------------------------------------

def with_taker(reply: Message, taker: str | None) -> Message:
    """A failure reply as posted, showing who is on it (``taker``), or nobody: its line
    about that, just above its buttons, is replaced; the rest is kept as it was."""
    blocks = [b for b in reply.get("blocks") or []
              if isinstance(b, dict) and b.get("block_id") != ON_IT_BLOCK]
    if taker:
        line = {**_context(f"\N{HAPPY PERSON RAISING ONE HAND} {_user(taker)} is on it."),
                "block_id": ON_IT_BLOCK}
        at = next((i for i, b in enumerate(blocks) if b.get("type") == "actions"),
                  len(blocks))
        blocks.insert(at, line)
    text = reply.get("text") if isinstance(reply.get("text"), str) else ""
    return {"text": _text(text or "A build failed."), "blocks": blocks[:MAX_BLOCKS]}


def already_on_it(taker: str) -> Message:
    """To the clicker alone: someone else took it."""
    return ephemeral(f"{_user(taker)} is already on it.", replace=False)


def on_it_closed(job_name: str, build_no: str) -> Message:
    """To the clicker alone: a later build succeeded; nobody needs to be on it."""
    return ephemeral(f"*{_job(job_name)}* has succeeded since (build "
                     f"#{escape(shorten(build_no, 100))}): nobody needs to be on this "
                     "failure any more.", replace=False)


def on_it_refused(reason: str) -> Message:
    """To the clicker alone: why an I'm on it click changed nothing."""
    return ephemeral(f":warning: {escape(shorten(reason, 300))}", replace=False)


def on_it_released(job_name: str) -> Message:
    """To the clicker alone: they are no longer on it."""
    return ephemeral(f"You are no longer on this *{_job(job_name)}* failure.", replace=False)


# --- ``changes`` subscriptions: a branch broke, a branch is fixed (issue 28) --------------

def changes_broke(*, job_name: str, branch: str, daily: str, build_no: str, last_good: str,
                  link: str | None, tail: Sequence[str] | None = None,
                  tail_truncated: bool = False, tail_error: str | None = None,
                  mention: str | None = None, build_id: str = "") -> Message:
    """One channel message: the first failure after a success on a branch, with the last
    lines of its log; ``mention``: the Slack user who started it (a mapped person);
    with ``build_id``, I'm on it."""
    name = _build_name(daily, build_no) or "?"
    if link:
        name = _link(link, name)
    text = (f"🔴 *{_job(job_name)}* broke on {code(branch, 100)}: build {name} failed "
            f"(last good: {escape(shorten(last_good, 100))})")
    if mention:
        text += f". Started by {_user(mention)}"
    blocks = [_section(cut(text, SECTION_CHARS)),
              *_log_blocks(tail, tail_truncated, tail_error, link)]
    if build_id:  # I'm on it (issue 28)
        blocks.append({"type": "actions", "block_id": "buildbot.next",
                       "elements": [_on_it_button(build_id)]})
    return {"text": _text(text), "blocks": blocks}


def changes_fixed(*, job_name: str, branch: str, daily: str, build_no: str, failed: int,
                  broken_for: float | None, link: str | None,
                  on_it: str | None = None) -> Message:
    """One channel message: the first success after a failure on a branch, how long it
    was broken and how many builds failed meanwhile; ``on_it``: the Slack user who was
    on it, if someone was."""
    name = _build_name(daily, build_no) or "?"
    if link:
        name = _link(link, name)
    took = f"broken for {_span(broken_for)}, " if broken_for is not None else ""
    text = (f"🟢 *{_job(job_name)}* is fixed on {code(branch, 100)}: build {name} "
            f"succeeded ({took}{_plural(failed, 'build')} failed in between)")
    if on_it:
        text += f". {_user(on_it)} was on it"
    return {"text": _text(text), "blocks": [_section(cut(text, SECTION_CHARS))]}


def _span(seconds: float) -> str:
    """A span of time in words: ``45 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``."""
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"
