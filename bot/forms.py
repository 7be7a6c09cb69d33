"""The build form: a Block Kit modal that asks for a job and its parameters. Pure.

The form is another way to write a ``/build`` command, nothing more: ``read_form`` turns
what was entered into the very ``BuildCommand`` the typed text parses to, and the flow
checks it with the same ``policy.decide``; each problem comes back on its field.

Layout (one modal, at most Slack's 100 blocks):

* ``job``: a select of the jobs this user may run in this channel; picking one makes the
  bot update the view in place (``views.update``) with that job's fields. Slack refuses
  an ``input`` block in a view without ``submit``, so a view with nothing to submit (the
  first one, before a job is picked; a job too big for a form) holds the select as a
  ``section`` block's accessory, and a view with fields holds it as an ``input`` block
  with ``dispatch_action`` (so a problem can be shown on it). Either way a pick arrives
  as the same ``block_actions`` (action_id ``JOB_ACTION``), and the submitted state
  holds the pick under block_id ``job``;
* one field per declared parameter, in the jobs file's order: a select for ``choices``
  (the default picked), otherwise a text field holding the default; required ones are
  not optional; a field left empty is left out (its default applies, as when typed);
* ``extra`` (jobs with ``allow_extra_params``): more ``name=value`` lines;
* ``commit`` and ``tag``, optional.

A job with more parameters than a form holds (or a value longer than a text field takes)
gets a form that says so and points to the typed command.

``private_metadata`` carries who asked and where (user, channel, the command's
``response_url``, the request being edited, the job the fields were built for), signed
with an HMAC (``seal``/``unseal``): a view that comes back altered is refused. The flow
re-checks the user and the channel's permissions on every submission anyway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.command import SCM_NAMES, BuildCommand
from bot.config import JobConfig, ParamSpec
from bot.messages import escape, shorten

CALLBACK = "buildbot.form"  # the modal's callback_id
SHORTCUT = "run_build"  # the global shortcut "Run a build" (manifest.yml) opens the form
JOB_ACTION = "buildbot.form.job"  # picking a job in the form's select
JOB_BLOCK = "job"
PARAM_BLOCK = "param."  # + the parameter's name
COMMIT_BLOCK, TAG_BLOCK, EXTRA_BLOCK = "scm.commit", "scm.tag", "extra"
CHANNEL_BLOCK = "channel"  # the shortcut's form: where to run (a conversations select)
VALUE = "value"  # the action_id of every input element but the job select

# Slack's documented limits for modals and their elements.
MAX_VIEW_BLOCKS = 100
MAX_OPTIONS = 100
OPTION_TEXT = 75
OPTION_VALUE = 150
LABEL_CHARS = 2000
HINT_CHARS = 2000
INPUT_CHARS = 3000  # a plain_text_input's max_length and initial_value
METADATA_CHARS = 3000
FIXED_BLOCKS = 5  # job, extra, commit, tag, the closing note
MAX_PARAMS = MAX_VIEW_BLOCKS - FIXED_BLOCKS
TITLE = "Run a build"


# --- private_metadata -----------------------------------------------------------------

def form_key(secret: str) -> bytes:
    """The key that signs the form's metadata, derived from a secret the bot already has
    (the signing secret), so no key of its own needs storing or sharing between replicas."""
    return hmac.new(secret.encode(), b"buildbot form metadata v1", hashlib.sha256).digest()


def seal(key: bytes, data: Mapping[str, str]) -> str:
    """``data`` as text with its signature; fields that do not fit Slack's 3,000
    characters are dropped, the response_url (``r``) first."""
    fields = {k: v for k, v in data.items() if v}
    while True:
        body = json.dumps(fields, separators=(",", ":"), sort_keys=True)
        text = f"{_sign(key, body)}.{body}"
        if len(text) <= METADATA_CHARS or not fields:
            return text
        fields.pop("r" if "r" in fields else max(fields))


def unseal(key: bytes, text: Any) -> dict[str, str] | None:
    """The data, or None when the text is not what ``seal`` made with this key."""
    if not isinstance(text, str) or "." not in text:
        return None
    signature, _, body = text.partition(".")
    # bytes: compare_digest raises on a str with non-ASCII characters (a forged one)
    if not hmac.compare_digest(signature.encode(), _sign(key, body).encode()):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def _sign(key: bytes, body: str) -> str:
    digest = hmac.new(key, body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode()


# --- the view -------------------------------------------------------------------------

def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": shorten(text, limit) or " ", "emoji": False}


def _mrkdwn_section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:2000]}]}


def _option(text: str, value: str, description: str = "") -> dict[str, Any]:
    option: dict[str, Any] = {"text": _plain(text, OPTION_TEXT), "value": value}
    if description:
        option["description"] = _plain(description, OPTION_TEXT)
    return option


def _selectable(value: str) -> bool:
    return 0 < len(value) <= OPTION_VALUE


def _job_block(jobs: Sequence[tuple[str, str]], job: str | None, *, submittable: bool
               ) -> tuple[dict[str, Any] | None, int]:
    """The job select (None when there is no job to list), and how many runnable jobs it
    could not list. ``submittable``: the view will have a submit button, so the select
    may be an input block; otherwise it is a section's accessory (Slack refuses an input
    block in a view without submit)."""
    listed = _listed_jobs(jobs, job)
    if not listed:
        return None, len(jobs)
    select = _job_select(listed, job)
    if submittable:
        block = {"type": "input", "block_id": JOB_BLOCK, "dispatch_action": True,
                 "label": _plain("Job", LABEL_CHARS), "element": select}
    else:
        block = {"type": "section", "block_id": JOB_BLOCK,
                 "text": {"type": "mrkdwn", "text": "*Job*"}, "accessory": select}
    return block, len(jobs) - len(listed)


def _listed_jobs(jobs: Sequence[tuple[str, str]], job: str | None) -> list[tuple[str, str]]:
    """The jobs a select can list, each once with its first description, at most
    ``MAX_OPTIONS``; the job being edited is always among them."""
    unique: dict[str, str] = {}
    for name, desc in jobs:
        if _selectable(name):
            unique.setdefault(name, desc)
    listed = list(unique.items())[:MAX_OPTIONS]
    if job is not None and _selectable(job) and job not in {n for n, _ in listed}:
        listed = [(job, ""), *listed][:MAX_OPTIONS]
    return listed


def _job_select(listed: list[tuple[str, str]], job: str | None) -> dict[str, Any]:
    """The select of the listed jobs, ``job`` picked in it when it is listed."""
    select: dict[str, Any] = {"type": "static_select", "action_id": JOB_ACTION,
                              "placeholder": _plain("Pick a job", OPTION_TEXT),
                              "options": [_option(n, n, d) for n, d in listed]}
    for name, desc in listed:
        if name == job:
            select["initial_option"] = _option(name, name, desc)
    return select


def _hint(spec: ParamSpec) -> str:
    parts = []
    if spec.pattern is not None:
        parts.append(f"Must match {shorten(spec.pattern, 1500)}.")
    if spec.default:
        parts.append(f"Left empty: {shorten(spec.default, 300)}.")
    return " ".join(parts)


def _uses_select(spec: ParamSpec) -> bool:
    return (spec.choices is not None and len(spec.choices) <= MAX_OPTIONS
            and all(_selectable(c) for c in spec.choices))


def _param_block(name: str, spec: ParamSpec, value: str | None) -> dict[str, Any]:
    """One parameter's field; ``value`` is what it shows (the default, or what an edited
    request had)."""
    element: dict[str, Any]
    if _uses_select(spec):
        assert spec.choices is not None
        element = {"type": "static_select", "action_id": VALUE,
                   "placeholder": _plain(f"Pick {name}", OPTION_TEXT),
                   "options": [_option(c, c) for c in dict.fromkeys(spec.choices)]}
        if value is not None and value in spec.choices:
            element["initial_option"] = _option(value, value)
    else:
        element = {"type": "plain_text_input", "action_id": VALUE, "max_length": INPUT_CHARS}
        if value:
            element["initial_value"] = value
    block: dict[str, Any] = {"type": "input", "block_id": PARAM_BLOCK + name,
                             "optional": not spec.required,
                             "label": _plain(name, LABEL_CHARS), "element": element}
    hint = _hint(spec)
    if hint:
        block["hint"] = _plain(hint, HINT_CHARS)
    return block


def _text_block(block_id: str, label: str, value: str | None, *, hint: str, max_length: int,
                multiline: bool = False) -> dict[str, Any]:
    element: dict[str, Any] = {"type": "plain_text_input", "action_id": VALUE,
                               "max_length": max_length, "multiline": multiline}
    if value:
        element["initial_value"] = value
    return {"type": "input", "block_id": block_id, "optional": True,
            "label": _plain(label, LABEL_CHARS), "hint": _plain(hint, HINT_CHARS),
            "element": element}


def too_big(job: JobConfig, prefill: BuildCommand | None = None) -> bool:
    """Whether the job's fields (or the values to show in them) do not fit a form."""
    if len(job.params) > MAX_PARAMS:
        return True
    shown = [v for _, v in prefill.params] if prefill else []
    return any(len(v) > INPUT_CHARS for v in shown) or len(_extra_text(job, prefill)) > INPUT_CHARS


def _extra_text(job: JobConfig, prefill: BuildCommand | None) -> str:
    if prefill is None:
        return ""
    return "\n".join(f"{n}={v}" for n, v in prefill.params if n not in job.params)


def channel_block(channel: str | None) -> dict[str, Any]:
    """The shortcut's Channel field: a conversations select whose submission brings a
    ``response_url`` for that conversation (``response_url_enabled``)."""
    element: dict[str, Any] = {
        "type": "conversations_select", "action_id": VALUE, "response_url_enabled": True,
        "default_to_current_conversation": True,
        "placeholder": _plain("Pick a channel", OPTION_TEXT),
        "filter": {"include": ["public", "private"], "exclude_bot_users": True}}
    if channel:
        element["initial_conversation"] = channel
    return {"type": "input", "block_id": CHANNEL_BLOCK, "element": element,
            "label": _plain("Channel", LABEL_CHARS),
            "hint": _plain("Where the build is announced; the job must be allowed there.",
                           HINT_CHARS)}


def picked_channel(values: Any) -> str | None:
    """The conversation picked in the Channel field, or None."""
    found = _dict(_dict(_dict(values).get(CHANNEL_BLOCK)).get(VALUE)).get(
        "selected_conversation")
    return found if isinstance(found, str) and found else None


def form_view(jobs: Sequence[tuple[str, str]], job: JobConfig | None, *, metadata: str,
              prefill: BuildCommand | None = None, more_jobs_hint: bool = True,
              channel_field: bool = False, channel: str | None = None) -> dict[str, Any]:
    """The modal: the job select, then (once a job is picked) its fields.

    ``jobs`` are the (name, description) pairs this user may run in this channel;
    ``prefill`` the values to show (an edited request's), else the defaults.
    ``channel_field``: the shortcut's form, with a Channel field first (``channel``
    picked in it) and the job select an input from the start."""
    submittable = job is not None and not too_big(job, prefill)  # fields, and submit
    first, _ = _job_block(jobs, None, submittable=True)
    if channel_field and job is None and first is not None:
        modal = form_view(jobs, None, metadata=metadata, more_jobs_hint=more_jobs_hint)
        modal["blocks"] = [channel_block(channel), first, *modal["blocks"][1:]]
        modal["submit"] = _plain("Continue", 24)
        return modal
    if channel_field and submittable:
        modal = form_view(jobs, job, metadata=metadata, prefill=prefill,
                          more_jobs_hint=more_jobs_hint)
        if modal.get("submit"):
            modal["blocks"] = [channel_block(channel), *modal["blocks"]][:MAX_VIEW_BLOCKS]
        return modal
    block, unlisted = _job_block(jobs, job.name if job else None, submittable=submittable)
    view: dict[str, Any] = {"type": "modal", "callback_id": CALLBACK,
                            "title": _plain(TITLE, 24), "close": _plain("Cancel", 24),
                            "private_metadata": metadata}
    notes = _job_notes(jobs, unlisted, more_jobs_hint=more_jobs_hint)
    blocks: list[dict[str, Any]] = [block] if block else []
    if job is None:
        view["blocks"] = (blocks + _notes_or_pick(notes))[:MAX_VIEW_BLOCKS]
    elif not submittable:  # more fields, or longer values, than a form can show
        view["blocks"] = [*blocks, _too_big_section(job.name),
                          *[_context(n) for n in notes][:1]]
    elif block is None:  # a job whose name no select can hold: typing is the way
        view["blocks"] = [_mrkdwn_section(
            f"*{escape(shorten(job.name, 200))}* cannot be picked in a form: type "
            f"`/build {escape(shorten(job.name, 200))} name=value ...` instead.")]
    else:
        view.update(_with_fields(block, job, prefill, notes))
    return view


def _with_fields(block: dict[str, Any], job: JobConfig, prefill: BuildCommand | None,
                 notes: list[str]) -> dict[str, Any]:
    """The blocks and submit button of a form with a job picked: the select, the job's
    fields, and a word on what submitting does."""
    after = ("You are asked Run/Cancel next." if job.confirm
             else "This job starts as soon as you submit.")
    return {"blocks": [block, *_field_blocks(job, prefill), _context(" ".join([after, *notes]))],
            "submit": _plain("Continue" if job.confirm else "Start", 24)}


def _job_notes(jobs: Sequence[tuple[str, str]], unlisted: int, *,
               more_jobs_hint: bool) -> list[str]:
    """What the form says about the jobs: those the select could not list, or none."""
    notes: list[str] = []
    if unlisted and more_jobs_hint:
        notes.append(f"{unlisted} more jobs are not listed here: type `/build &lt;job&gt;` to "
                     "run them (`/build list` shows them all).")
    if not jobs:
        notes.append("There is no job you may run in this channel. "
                     "Ask an admin to add you to a job in buildbot.toml.")
    return notes


def _notes_or_pick(notes: list[str]) -> list[dict[str, Any]]:
    """Under the select before a job is picked: the notes, else a word to pick one."""
    return [_context(n) for n in notes] or [_context("Pick a job to see its parameters.")]


def _too_big_section(name: str) -> dict[str, Any]:
    shown = escape(shorten(name, 200))
    return _mrkdwn_section(
        f"*{shown}* has more parameters (or longer values) than a form can show. Type the "
        f"command instead: `/build {shown} name=value ...` (`/build help` shows how).")


def _field_blocks(job: JobConfig, prefill: BuildCommand | None) -> list[dict[str, Any]]:
    """The job's fields, showing ``prefill``'s values or the defaults: its parameters in
    the file's order, other parameters (when it allows them), commit and tag."""
    given = dict(prefill.params) if prefill else {}
    blocks = [_param_block(name, spec, given.get(name, spec.default))
              for name, spec in job.params.items()]
    if job.allow_extra_params:
        blocks.append(_text_block(EXTRA_BLOCK, "Other parameters", _extra_text(job, prefill),
                                  hint="One name=value per line.", max_length=INPUT_CHARS,
                                  multiline=True))
    blocks.append(_text_block(COMMIT_BLOCK, "Commit", prefill.commit if prefill else None,
                              hint="A commit ID: 1 to 64 hexadecimal digits.", max_length=64))
    blocks.append(_text_block(TAG_BLOCK, "Tag", prefill.tag if prefill else None,
                              hint="A tag to build, e.g. v1.2.0.", max_length=255))
    return blocks


def notice_view(title: str, lines: Sequence[str]) -> dict[str, Any]:
    """A modal that only says something (a refusal, a form that cannot be used): plain
    text lines (problems may hold user input: they are escaped here)."""
    text = "\n".join(f"• {escape(shorten(line, 600))}" for line in lines)
    return {"type": "modal", "callback_id": CALLBACK, "title": _plain(title, 24),
            "close": _plain("Close", 24),
            "blocks": [_mrkdwn_section(f":warning: Nothing was started.\n{text}")]}


# --- reading what was entered ----------------------------------------------------------

@dataclass(frozen=True)
class Entered:
    """What a submitted form says: the job picked, the command, and problems that belong
    to the form itself (a line of ``extra`` with no ``=``), by block_id."""

    job: str | None
    command: BuildCommand | None
    problems: dict[str, str]


def picked_job(values: Any) -> str | None:
    """The job picked in the form's select, or None."""
    return _selected(_dict(_dict(values).get(JOB_BLOCK)).get(JOB_ACTION))


def read_form(values: Any, job: JobConfig) -> Entered:
    """The form's state values as the command typing them would give: declared fields in
    the file's order, then the ``extra`` lines, then commit and tag. An empty field is
    left out, as an untyped ``name=value`` is. Nothing here is trusted: absent or
    odd-shaped state reads as empty."""
    state = _dict(values)
    params: list[tuple[str, str]] = []
    problems: dict[str, str] = {}
    for name in job.params:
        value = _value(state, PARAM_BLOCK + name)
        if value:
            params.append((name, value))
    if job.allow_extra_params:
        extra, problem = _extra_lines(_value(state, EXTRA_BLOCK) or "")
        params += extra
        if problem:
            problems[EXTRA_BLOCK] = problem
    commit = _trim(_value(state, COMMIT_BLOCK) or "") or None
    tag = _trim(_value(state, TAG_BLOCK) or "") or None
    return Entered(job.name, BuildCommand(job.name, tuple(params), commit, tag), problems)


def _extra_lines(text: str) -> tuple[list[tuple[str, str]], str | None]:
    params: list[tuple[str, str]] = []
    for line in _LINES.split(text):
        if not _trim(line):
            continue
        name, eq, value = _trim(line).partition("=")
        if not eq or not _trim(name):
            return params, (f"`{shorten(_trim(line), 60)}` is not name=value: write one "
                            "name=value per line.")
        if _trim(name).lower() in SCM_NAMES:
            return params, f"Give {_trim(name).lower()} in its own field below."
        params.append((_trim(name), value))
    return params, None


_LINES = re.compile(r"\r\n|[\r\n]")  # a line break; U+2028 and U+2029 are not (see _trim)
_ENDS = re.compile(r"^[^\S\u2028\u2029]+|[^\S\u2028\u2029]+$")


def _trim(text: str) -> str:
    """Whitespace off both ends, but not the line and paragraph separators (U+2028,
    U+2029): those stay in the value, where the checks refuse them as invisible."""
    return _ENDS.sub("", text)


def block_for(field: str | None, job: JobConfig) -> str | None:
    """The block a problem about ``field`` belongs on (None: the form as a whole)."""
    if field is None:
        return None
    if field in job.params:
        return PARAM_BLOCK + field
    if field in SCM_NAMES:
        return COMMIT_BLOCK if field == "commit" else TAG_BLOCK
    return EXTRA_BLOCK if job.allow_extra_params else None


def prefill_from_body(job_name: str, body: Mapping[str, Any]) -> BuildCommand:
    """What a request's run body holds, as a command (to show it in the form again)."""
    params = tuple((str(p.get("name", "")), str(p.get("value", "")))
                   for p in body.get("parameter") or [] if isinstance(p, dict))
    found = body.get("scm")
    scm: dict[str, Any] = found if isinstance(found, dict) else {}
    commit, tag = scm.get("build_commit_id"), scm.get("build_tag")
    return BuildCommand(job_name, params, commit if isinstance(commit, str) else None,
                        tag if isinstance(tag, str) else None)


def command_text(command: BuildCommand) -> str:
    """The command as it could have been typed (kept with the request and shown when its
    question expires)."""
    words = [command.job, *(f"{n}={_quoted(v)}" for n, v in command.params)]
    if command.commit is not None:
        words.append(f"commit={_quoted(command.commit)}")
    if command.tag is not None:
        words.append(f"tag={_quoted(command.tag)}")
    return " ".join(words)


def _quoted(value: str) -> str:
    if value and not any(c.isspace() or c in "\"'\u2018-\u201f" for c in value):
        return value
    return f"'{value}'" if '"' in value else f'"{value}"'


def _value(state: dict[str, Any], block_id: str) -> str | None:
    element = _dict(_dict(state.get(block_id)).get(VALUE))
    if element.get("type") == "static_select" or "selected_option" in element:
        return _selected(element)
    value = element.get("value")
    return value if isinstance(value, str) else None


def _selected(element: Any) -> str | None:
    value = _dict(_dict(element).get("selected_option")).get("value")
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
