"""How the demo shows what the bot sent Slack, as the people in it would see it: messages
with their numbered buttons, replies to a ``response_url``, updates, and the form.

``DemoScreen`` is mixed into ``bot.demo.Demo``, whose state (who and where you are, the
stand-in Slack, the buttons shown) it reads and adds to.
"""

from __future__ import annotations

import html
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TextIO

from bot.standins.slack import Call, FakeSlack

EMOJI = {"warning": "⚠️", "rocket": "🚀", "hourglass": "⌛", "hourglass_flowing_sand": "⏳",
         "white_check_mark": "✅", "x": "❌", "octagonal_sign": "🛑", "no_entry": "⛔",
         "grey_question": "❔", "white_circle": "⚪", "memory": "📝",
         "raised_hand": "✋", "double_vertical_bar": "⏸️"}
_EMOJI = re.compile(r":([a-z0-9_+-]+):")
HOME_KEY = "home:"  # + a user ID: the key of the buttons on that user's Home
_ANGLE = re.compile(r"<([^<>]*)>")


@dataclass
class Button:
    number: int
    label: str
    action_id: str
    value: str
    channel: str
    ts: str | None  # the message's ts; None for an ephemeral message
    message: str  # the message's first line, to say what a click's answer replaces
    key: str  # which message it is on: when that message is replaced, the button goes


@dataclass
class Origin:
    """What a ``response_url`` belongs to: who typed or clicked, where, and the message a
    ``replace_original`` answer replaces."""

    user: str
    channel: str
    message: str | None
    public: bool = False
    key: str | None = None


class DemoScreen:
    """What the bot said, printed: the half of the demo that reads Slack's side."""

    # The demo's state (``Demo.__init__`` sets it), read and added to here.
    out: TextIO
    lock: threading.RLock
    prompting: bool
    slack: FakeSlack
    user: str
    channel: str
    user_names: dict[str, str]
    channel_names: dict[str, str]
    buttons: dict[int, Button]
    gone: set[int]  # buttons whose message was replaced or deleted
    messages: int
    hooks: dict[str, Origin]
    ts_labels: dict[str, str]
    pasted: dict[str, tuple[str, str, str]]  # a pasted link's unfurl_id -> (ts, who, where)
    seen: int
    form_open: bool

    def prompt(self) -> str:
        raise NotImplementedError  # the demo's: who and where you are

    # --- what the bot said ------------------------------------------------------------

    def drain(self) -> None:
        """Show every Slack call made since the last time, in the order Slack got them."""
        with self.lock:
            calls = self.slack.all_calls()
            new, self.seen = calls[self.seen:], len(calls)
            for call in new:
                self.show_call(call)

    def show_call(self, call: Call) -> None:
        """Show what the bot sent Slack, as the people in the demo would see it."""
        show = self._SHOWN.get(call.method)
        if show is not None:
            show(self, call.params, call)

    def _show_response(self, p: dict[str, Any], call: Call) -> None:
        origin = self.hooks.get(call.path) or Origin(self.user, self.channel, None)
        if p.get("delete_original"):
            self._retire(origin.key)
            self.say(f"┌ deleted: \"{origin.message or 'the message'}\"\n")
            return
        head, public, replacing = self._response_head(p, origin)
        if replacing:
            self._retire(origin.key)
        key = self._key()
        label = self.show(p, head, channel=origin.channel, key=key)
        if replacing or origin.key is None:
            origin.message, origin.public, origin.key = label, public, key

    def _response_head(self, p: dict[str, Any], origin: Origin) -> tuple[str, bool, bool]:
        """Where a response_url message shows, whether everyone sees it, and whether it
        replaces the message it answers."""
        public = p.get("response_type") == "in_channel" or (
            bool(p.get("replace_original")) and origin.public)
        head = self._public(origin.channel) if public else self._ephemeral_to(
            origin.user, origin.channel)
        replacing = bool(p.get("replace_original")) and origin.key is not None
        if replacing:
            head += f", replacing \"{origin.message}\""
        return head, public, replacing

    def _show_post(self, p: dict[str, Any], call: Call) -> None:
        channel = str(p.get("channel", ""))
        if channel.startswith(("U", "W", "D")):
            head = f"direct message to {self._name(channel)}"
        elif p.get("thread_ts"):
            parent = self.ts_labels.get(str(p["thread_ts"]), "a message")
            head = f"#{self._channel_name(channel)}, in the thread of \"{parent}\""
        else:
            head = self._public(channel)
        label = self.show(p, head, channel=channel, ts=call.ts,
                          key=f"ts:{call.ts}" if call.ts else self._key())
        if call.ts:
            self.ts_labels[call.ts] = label

    def _show_update(self, p: dict[str, Any], call: Call) -> None:
        channel, ts = str(p.get("channel", "")), str(p.get("ts", ""))
        head = (f"#{self._channel_name(channel)}, the message \""
                f"{self.ts_labels.get(ts, 'a message')}\" now reads")
        self._retire(f"ts:{ts}")
        self.ts_labels[ts] = self.show(p, head, channel=channel, ts=ts, key=f"ts:{ts}")

    def _show_view(self, p: dict[str, Any], call: Call) -> None:
        self.form_open = True
        self.show_form()

    def _show_ephemeral(self, p: dict[str, Any], call: Call) -> None:
        channel = str(p.get("channel", ""))
        self.show(p, self._ephemeral_to(str(p.get("user", "")), channel), channel=channel,
                  key=self._key())

    def _show_home(self, p: dict[str, Any], call: Call) -> None:
        """A published App Home: shown as the person it is for sees their Home tab, its
        buttons numbered (a section's Run… button on a line of its own)."""
        view = p.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        if not isinstance(view, dict) or call.error:
            return
        blocks: list[dict[str, Any]] = []
        for block in view.get("blocks") or []:
            accessory = block.get("accessory") or {}
            if block.get("type") == "section" and accessory.get("type") == "button":
                blocks += [{k: v for k, v in block.items() if k != "accessory"},
                           {"type": "actions", "elements": [accessory]}]
            else:
                blocks.append(block)
        user = str(p.get("user_id", ""))
        self._retire(HOME_KEY + user)  # the Home shown before is replaced
        self.show({"blocks": blocks}, f"the Home tab of {self._name(user)} (only they see it)",
                  channel="", key=HOME_KEY + user)

    def _show_unfurl(self, p: dict[str, Any], call: Call) -> None:
        """Link previews, each under the pasted message (buttons clicked in its channel)."""
        if call.error is not None or call.problem is not None:
            return
        ts, who, channel = self.pasted.get(str(p.get("unfurl_id")), (
            str(p.get("ts") or ""), "", str(p.get("channel") or self.channel)))
        unfurls = p.get("unfurls")
        for url, unfurl in (unfurls.items() if isinstance(unfurls, dict) else []):
            head = (f"{self._public(channel)}: the preview of {url}"
                    + (f" under {self._name(who)}'s message" if who else ""))
            self.show(unfurl if isinstance(unfurl, dict) else {}, head, channel=channel,
                      ts=ts or None, key=self._key())

    _SHOWN: ClassVar[dict[str, Callable[[DemoScreen, dict[str, Any], Call], None]]] = {
        "response_url": _show_response, "chat.postMessage": _show_post,
        "chat.update": _show_update, "views.open": _show_view, "views.update": _show_view,
        "chat.postEphemeral": _show_ephemeral, "views.publish": _show_home,
        "chat.unfurl": _show_unfurl}

    # --- the form -------------------------------------------------------------------
    # A modal is shown as numbered fields; ``pick`` and ``submit`` act on the newest one.

    def _form(self) -> dict[str, Any] | None:
        views = list(self.slack.views.values())
        return views[-1] if views and self.form_open else None

    def show_form(self, errors: dict[str, str] | None = None) -> None:
        view = self._form()
        if view is None:
            return
        lines = []
        number = 0
        for block in view.get("blocks", []):
            picker = _picker_line(block)
            if picker is not None:
                lines.append(picker)
                continue
            if block.get("type") != "input":
                lines += self._block(block, channel=self.channel, ts=None, key="form",
                                     label=lambda: "")
                continue
            number += 1
            lines += _input_lines(block, number, errors)
        submit = (view.get("submit") or {}).get("text")
        lines.append(f"[{submit}: type submit]  [Cancel]" if submit else "[Cancel]")
        body = "\n".join(f"│ {line}".rstrip() for line in lines)
        self.say(f"┌ form \"{view['title']['text']}\" (only {self._name(self.user)} sees it)"
                 f"\n{body}\n")

    def show(self, message: dict[str, Any], head: str, *, channel: str, key: str,
             ts: str | None = None) -> str:
        """Print one message under its header; return its first line (its label)."""
        lines: list[str] = []
        blocks = message.get("blocks")
        if isinstance(blocks, list) and blocks:
            for block in blocks:
                lines += self._block(block, channel=channel, ts=ts, key=key,
                                     label=lambda lines=lines: _first(lines))
        else:
            lines += self.mrkdwn(str(message.get("text", ""))).splitlines()
        label = _first(lines)
        body = "\n".join(f"│ {line}".rstrip() for line in lines)
        self.say(f"┌ {head}\n{body}\n")
        return label

    def _block(self, block: dict[str, Any], *, channel: str, ts: str | None, key: str,
               label: Any) -> list[str]:
        kind = block.get("type")
        if kind in ("section", "header"):
            return self._section(block)
        if kind == "context":
            parts = [self.mrkdwn(str(e.get("text", ""))) for e in block.get("elements") or []
                     if e.get("text")]
            return "  ".join(parts).splitlines()
        if kind == "divider":
            return ["──────"]
        if kind == "actions":
            return self._buttons(block, channel=channel, ts=ts, key=key, label=label)
        return [f"({kind} block)"]

    def _section(self, block: dict[str, Any]) -> list[str]:
        out = []
        text = block.get("text") or {}
        if text.get("text"):
            out += self.mrkdwn(str(text["text"])).splitlines()
        for f in block.get("fields") or []:
            out += self.mrkdwn(str(f.get("text", ""))).splitlines()
        return out

    def _buttons(self, block: dict[str, Any], *, channel: str, ts: str | None, key: str,
                 label: Any) -> list[str]:
        """An actions block's buttons, numbered so that typing the number clicks one."""
        shown = []
        for element in block.get("elements") or []:
            if element.get("type") != "button":
                continue
            number = len(self.buttons) + 1
            text = str((element.get("text") or {}).get("text", element.get("action_id")))
            self.buttons[number] = Button(number, text, str(element.get("action_id")),
                                          str(element.get("value", "")), channel, ts,
                                          label(), key)
            shown.append(f"[{number}] {text}")
        return ["  ".join(shown)] if shown else []

    def mrkdwn(self, text: str) -> str:
        """Slack's markup as a person reads it: mentions by name, links by label, emoji."""
        def angle(m: re.Match[str]) -> str:
            inner = m.group(1)
            target, _, label = inner.partition("|")
            if target.startswith("@"):
                return "@" + (label or self._name(target[1:]))
            if target.startswith("#"):
                return "#" + (label or self._channel_name(target[1:]))
            if target.startswith("!"):
                return "@" + (label or target[1:].split("^")[0])
            return label or target

        text = _ANGLE.sub(angle, text)
        text = _EMOJI.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text)
        return html.unescape(text)

    # --- helpers ----------------------------------------------------------------------

    def say(self, text: str) -> None:
        with self.lock:
            if self.prompting:
                self.out.write("\r\033[K")
            self.out.write(text + "\n")
            if self.prompting:
                self.out.write(self.prompt())
            self.out.flush()

    def _key(self) -> str:
        self.messages += 1
        return f"m{self.messages}"

    def _retire(self, key: str | None) -> None:
        self.gone |= {b.number for b in self.buttons.values() if b.key == key}

    def _name(self, user: str) -> str:
        return self.user_names.get(user, user)

    def _channel_name(self, channel: str) -> str:
        return self.channel_names.get(channel, channel)

    def _names(self, channel: str | None = None) -> dict[str, str]:
        return {"user_name": self._name(self.user),
                "channel_name": self._channel_name(channel or self.channel)}

    def _who(self) -> str:
        return (f"{self._name(self.user)} ({self.user}) in #{self._channel_name(self.channel)} "
                f"({self.channel})")

    def _ephemeral_to(self, user: str, channel: str) -> str:
        return f"only {self._name(user)} sees this (ephemeral), in #{self._channel_name(channel)}"

    def _public(self, channel: str) -> str:
        return f"#{self._channel_name(channel)}, everyone sees"


def _select_shown(element: dict[str, Any]) -> str:
    """A select as the demo shows it: what is picked, then (some of) its options."""
    picked = (element.get("initial_option") or {}).get("value", "")
    values = " | ".join(o["value"] for o in element.get("options", [])[:10])
    return f"{picked or '(none)'}   [{values}]"


def _first(lines: list[str]) -> str:
    for line in lines:
        if line.strip():
            text = line.strip()
            return text if len(text) <= 60 else text[:59] + "…"
    return "a message"


def _input_lines(block: dict[str, Any], number: int, errors: dict[str, str] | None) -> list[str]:
    """A form's input block as ``(n) label: value``, with its error under it."""
    element = block["element"]
    label = str(block["label"]["text"]) + ("" if block.get("optional") else " *")
    if element["type"] == "static_select":
        shown = _select_shown(element)
    elif element["type"] == "conversations_select":  # the shortcut's Channel
        shown = "(the channel you are in; type in #CHANNEL before submit to change it)"
    else:
        shown = element.get("initial_value") or "(empty)"
    lines = [f"({number}) {label}: {shown}"]
    if errors and block["block_id"] in errors:
        lines.append(f"    ⚠️ {errors[block['block_id']]}")
    return lines


def _picker_line(block: dict[str, Any]) -> str | None:
    """A select beside text (the form's job select, before there is anything to submit):
    picked, not submitted. None for any other block."""
    accessory = block.get("accessory") or {}
    if block.get("type") != "section" or accessory.get("type") != "static_select":
        return None
    label = str((block.get("text") or {}).get("text", "")).strip("*")
    return f"{label}: {_select_shown(accessory)}   (type pick <job>)"
