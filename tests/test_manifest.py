"""manifest.yml creates the app the code expects: the command, buttons, scopes, Socket Mode."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from bot.links import domain_of, why_no_previews

MANIFEST = yaml.safe_load((Path(__file__).resolve().parent.parent / "manifest.yml").read_text())


def test_the_build_command_is_declared_with_escaping() -> None:
    (command,) = MANIFEST["features"]["slash_commands"]
    assert command["command"] == "/build" and command["should_escape"] is True


def test_scopes_are_exactly_what_the_bot_calls() -> None:
    # commands: /build; chat:write: chat.postMessage / chat.update; chat:write.public: post
    # without joining; usergroups:read: usergroups.users.list; channels:history and
    # groups:history: conversations.history / conversations.replies (public / private);
    # channels:read, groups:read, im:read, mpim:read: conversations.info (/build subscribe);
    # links:read, links:write: the link_shared event and chat.unfurl (build link previews)
    # im:write, im:history: conversations.open and conversations.history (Notify me's DM)
    assert sorted(MANIFEST["oauth_config"]["scopes"]["bot"]) == \
        ["channels:history", "channels:read", "chat:write", "chat:write.public", "commands",
         "groups:history", "groups:read", "im:history", "im:read", "im:write", "links:read",
         "links:write", "mpim:read", "usergroups:read"]


def test_link_previews_are_asked_for_the_readmes_build_link_host() -> None:
    """The unfurl domain is the host of the BUILD_LINK_TEMPLATE the README shows, and that
    template's links can be read back (job ID and build number)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    found = re.search(r"^\s*BUILD_LINK_TEMPLATE='([^']+)'$", readme, re.MULTILINE)
    assert found, "the README shows an example BUILD_LINK_TEMPLATE"
    template = found.group(1)
    assert why_no_previews(template) is None
    assert MANIFEST["features"]["unfurl_domains"] == [domain_of(template)]
    assert "link_shared" in MANIFEST["settings"]["event_subscriptions"]["bot_events"]


def test_the_workflow_step_is_declared_as_the_code_reads_it() -> None:
    """The step's callback_id is the one the listener answers; its inputs are those
    bot.flow_workflow reads (who runs it: the interactivity input, which a workflow's
    author cannot point at someone else); its outputs those bot.workflow completes with."""
    from bot.flow_workflow import CALLBACK_ID
    from bot.workflow import completion_for  # noqa: F401  (the outputs' maker)

    step = MANIFEST["functions"][CALLBACK_ID]
    inputs = step["input_parameters"]["properties"]
    assert set(inputs) == {"job", "parameters", "channel", "interactivity"}
    assert inputs["interactivity"]["type"] == "slack#/types/interactivity"
    assert inputs["channel"]["type"] == "slack#/types/channel_id"
    assert set(step["input_parameters"]["required"]) == {"job", "channel", "interactivity"}
    outputs = step["output_parameters"]["properties"]
    assert set(outputs) == {"build_number", "daily_build_number", "result", "link"}
    settings = MANIFEST["settings"]
    assert "function_executed" in settings["event_subscriptions"]["bot_events"]
    assert settings["function_runtime"] == "remote" and settings["org_deploy_enabled"] is True


def test_buttons_and_socket_mode_are_on() -> None:
    settings = MANIFEST["settings"]
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["socket_mode_enabled"] is True
    assert MANIFEST["features"]["app_home"]["messages_tab_enabled"] is True  # DM fallback


def test_the_home_tab_and_the_run_a_build_shortcut_are_declared() -> None:
    """Issue 29: the Home tab (app_home_opened -> views.publish) and the global shortcut
    whose callback_id the bot listens to (bot.forms.SHORTCUT)."""
    from bot import forms

    assert MANIFEST["features"]["app_home"]["home_tab_enabled"] is True
    assert "app_home_opened" in MANIFEST["settings"]["event_subscriptions"]["bot_events"]
    (shortcut,) = [s for s in MANIFEST["features"]["shortcuts"]
                   if s["callback_id"] == forms.SHORTCUT]
    assert shortcut["type"] == "global" and shortcut["name"] == "Run a build"
    assert len(shortcut["description"]) <= 80 and len(shortcut["name"]) <= 24
