"""What real Slack refuses in a view or a message, for the Slack stand-in (FakeSlack).

Each rule is a small function that looks at one thing and returns a ``Problem`` (the
error Slack answers and its ``[ERROR] ...`` line, with a JSON pointer to the spot), or
None. ``view_problem`` and ``message_problem`` run their rules in order and return the
first problem: to add a rule, write it and add it to ``VIEW_RULES`` / ``MESSAGE_RULES``
(or ``BLOCK_RULES``, for what holds in views and messages alike).

Every rule names the reference page it comes from. A view Slack refuses is answered
``invalid_arguments`` (``views.open``, ``views.update``); a message's blocks
``invalid_blocks``; a message's text ``msg_too_long`` (``chat.postMessage``,
``chat.update``, ``chat.postEphemeral``; a ``response_url`` answers HTTP 400 with the
error code as its body).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

VIEW_BLOCKS = 100
MESSAGE_BLOCKS = 50
VIEW_BUTTON_CHARS = 24  # title, submit, close
METADATA_CHARS = 3000
CALLBACK_ID_CHARS = 255
SECTION_TEXT_CHARS = 3000
MESSAGE_TEXT_CHARS = 40_000
OPTION_TEXT_CHARS = 75
SELECT_OPTIONS = 100
PLACEHOLDER_CHARS = 150


@dataclass(frozen=True)
class Problem:
    error: str  # Slack's error code: invalid_arguments, invalid_blocks, msg_too_long
    message: str  # what is wrong, worded like Slack's [ERROR] lines
    pointer: str  # where, as a JSON pointer into the call's arguments

    @property
    def line(self) -> str:
        return f"[ERROR] {self.message} [json-pointer:{self.pointer}]"

    def answer(self) -> dict[str, Any]:
        """The body Slack answers (HTTP 200) with; ``invalid_blocks`` also lists the
        problems under ``errors``."""
        body: dict[str, Any] = {"ok": False, "error": self.error,
                                "response_metadata": {"messages": [self.line]}}
        if self.error == "invalid_blocks":
            body["errors"] = [f"{self.message} [json-pointer:{self.pointer}]"]
        return body


Rule = Callable[[dict[str, Any], str], Problem | None]  # (view or message, error code)
BlockRule = Callable[[dict[str, Any], str, str], Problem | None]  # (block, pointer, code)


# --- blocks: views and messages alike ----------------------------------------------------

def _section_text(block: dict[str, Any], at: str, error: str) -> Problem | None:
    # api.slack.com/reference/block-kit/blocks#section: text, max 3000 characters
    text = _text(block.get("text")) if block.get("type") == "section" else ""
    if len(text) > SECTION_TEXT_CHARS:
        return Problem(error, f"must be less than {SECTION_TEXT_CHARS + 1} characters",
                       f"{at}/text/text")
    return None


def _action_ids(block: dict[str, Any], at: str, error: str) -> Problem | None:
    # api.slack.com/reference/block-kit/block-elements: an action_id "should be unique
    # among all other action_ids in the containing block"
    seen: set[str] = set()
    for where, element in _elements(block, at):
        action_id = element.get("action_id")
        if isinstance(action_id, str):
            if action_id in seen:
                return Problem(error, f"duplicate action_id `{action_id}` in the block",
                               f"{where}/action_id")
            seen.add(action_id)
    return None


def _select_options(block: dict[str, Any], at: str, error: str) -> Problem | None:
    # api.slack.com/reference/block-kit/block-elements#static_select: "Maximum number of
    # options is 100"; placeholder "Maximum length for the text in this field is 150"
    for where, element in _elements(block, at):
        options = element.get("options")
        if isinstance(options, list) and len(options) > SELECT_OPTIONS:
            return Problem(error, f"no more than {SELECT_OPTIONS} items allowed",
                           f"{where}/options")
        if len(_text(element.get("placeholder"))) > PLACEHOLDER_CHARS:
            return Problem(error, f"must be less than {PLACEHOLDER_CHARS + 1} characters",
                           f"{where}/placeholder/text")
    return None


def _option_text(block: dict[str, Any], at: str, error: str) -> Problem | None:
    # api.slack.com/reference/block-kit/composition-objects#option (the options of
    # api.slack.com/reference/block-kit/block-elements): text "Maximum length ... 75"
    for where, element in _elements(block, at):
        found = element.get("options")
        options: list[Any] = found if isinstance(found, list) else []
        for i, option in enumerate(options):
            if isinstance(option, dict) and len(_text(option.get("text"))) > OPTION_TEXT_CHARS:
                return Problem(error, f"must be less than {OPTION_TEXT_CHARS + 1} characters",
                               f"{where}/options/{i}/text/text")
        initial = element.get("initial_option")
        if isinstance(initial, dict) and len(_text(initial.get("text"))) > OPTION_TEXT_CHARS:
            return Problem(error, f"must be less than {OPTION_TEXT_CHARS + 1} characters",
                           f"{where}/initial_option/text/text")
    return None


BLOCK_RULES: tuple[BlockRule, ...] = (_section_text, _action_ids, _select_options,
                                      _option_text)


def _blocks(surface: dict[str, Any], error: str, at: str) -> Problem | None:
    """The rules every block keeps, then block_ids unique in the view or message."""
    seen: set[str] = set()
    for i, block in enumerate(_list(surface.get("blocks"))):
        if not isinstance(block, dict):
            continue
        for rule in BLOCK_RULES:
            problem = rule(block, f"{at}/{i}", error)
            if problem is not None:
                return problem
        # api.slack.com/reference/block-kit/blocks: block_id "should be unique for each
        # message or view"
        block_id = block.get("block_id")
        if isinstance(block_id, str):
            if block_id in seen:
                return Problem(error, f"duplicate block_id `{block_id}`", f"{at}/{i}/block_id")
            seen.add(block_id)
    return None


# --- views: views.open, views.update -----------------------------------------------------

def _submit_for_inputs(view: dict[str, Any], error: str) -> Problem | None:
    # api.slack.com/reference/surfaces/views: "submit is required when an input block is
    # within the blocks array"
    if view.get("type", "modal") == "modal" and not view.get("submit") and any(
            isinstance(b, dict) and b.get("type") == "input" for b in _list(view.get("blocks"))):
        return Problem(error, "must define `submit` to use `input` blocks", "/view/submit")
    return None


def _button_texts(view: dict[str, Any], error: str) -> Problem | None:
    # api.slack.com/reference/surfaces/views: title, close and submit each "max length of
    # 24 characters"
    for name in ("title", "submit", "close"):
        if len(_text(view.get(name))) > VIEW_BUTTON_CHARS:
            return Problem(error, f"must be less than {VIEW_BUTTON_CHARS + 1} characters",
                           f"/view/{name}/text")
    return None


def _view_block_count(view: dict[str, Any], error: str) -> Problem | None:
    # api.slack.com/reference/surfaces/views: blocks "Max of 100 blocks"
    if len(_list(view.get("blocks"))) > VIEW_BLOCKS:
        return Problem(error, f"no more than {VIEW_BLOCKS} items allowed", "/view/blocks")
    return None


def _metadata(view: dict[str, Any], error: str) -> Problem | None:
    # api.slack.com/reference/surfaces/views: private_metadata "Max length of 3000
    # characters"; callback_id "Max length of 255 characters"
    for name, most in (("private_metadata", METADATA_CHARS),
                       ("callback_id", CALLBACK_ID_CHARS)):
        value = view.get(name)
        if isinstance(value, str) and len(value) > most:
            return Problem(error, f"must be less than {most + 1} characters", f"/view/{name}")
    return None


def _view_blocks(view: dict[str, Any], error: str) -> Problem | None:
    return _blocks(view, error, "/view/blocks")


VIEW_RULES: tuple[Rule, ...] = (_submit_for_inputs, _button_texts, _view_block_count,
                                _metadata, _view_blocks)


def view_problem(view: Any) -> Problem | None:
    """Why Slack would refuse this view (views.open, views.update), or None."""
    if isinstance(view, str):
        try:
            view = json.loads(view)
        except ValueError:
            return Problem("invalid_arguments", "must be a JSON object", "/view")
    if not isinstance(view, dict):
        return Problem("invalid_arguments", "must be a JSON object", "/view")
    return _first(VIEW_RULES, view, "invalid_arguments")


# --- messages: chat.postMessage, chat.update, chat.postEphemeral, response_url -----------

def _message_block_count(message: dict[str, Any], error: str) -> Problem | None:
    # api.slack.com/reference/block-kit/blocks: "up to 50 blocks in each message"
    if len(_list(message.get("blocks"))) > MESSAGE_BLOCKS:
        return Problem(error, f"no more than {MESSAGE_BLOCKS} items allowed", "/blocks")
    return None


def _message_blocks(message: dict[str, Any], error: str) -> Problem | None:
    return _blocks(message, error, "/blocks")


def _message_text(message: dict[str, Any], error: str) -> Problem | None:
    # api.slack.com/methods/chat.postMessage: text "no more than 40,000 characters" (past
    # that Slack may truncate instead); its errors: msg_too_long "Message text is too
    # long". The stand-in always refuses, so the bot relies on neither.
    text = message.get("text")
    if isinstance(text, str) and len(text) > MESSAGE_TEXT_CHARS:
        return Problem("msg_too_long", "Message text is too long", "/text")
    return None


MESSAGE_RULES: tuple[Rule, ...] = (_message_block_count, _message_blocks, _message_text)


def message_problem(message: dict[str, Any]) -> Problem | None:
    """Why Slack would refuse this message (its arguments: text, blocks), or None."""
    blocks = message.get("blocks")
    if isinstance(blocks, str):
        try:
            message = {**message, "blocks": json.loads(blocks)}
        except ValueError:
            return Problem("invalid_blocks", "must be a JSON array", "/blocks")
    return _first(MESSAGE_RULES, message, "invalid_blocks")


# --- helpers ------------------------------------------------------------------------------

def _first(rules: tuple[Rule, ...], surface: dict[str, Any], error: str) -> Problem | None:
    for rule in rules:
        problem = rule(surface, error)
        if problem is not None:
            return problem
    return None


def _elements(block: dict[str, Any], at: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The block's interactive elements, each with its JSON pointer: an input's element,
    a section's accessory, an actions block's elements."""
    for name in ("element", "accessory"):
        if isinstance(block.get(name), dict):
            yield f"{at}/{name}", block[name]
    for i, element in enumerate(_list(block.get("elements")) if block.get("type") == "actions"
                                else []):
        if isinstance(element, dict):
            yield f"{at}/elements/{i}", element


def _text(obj: Any) -> str:
    text = obj.get("text") if isinstance(obj, dict) else None
    return text if isinstance(text, str) else ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
