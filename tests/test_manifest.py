"""manifest.yml creates the app the code expects: the command, buttons, scopes, Socket Mode."""

from __future__ import annotations

from pathlib import Path

import yaml

MANIFEST = yaml.safe_load((Path(__file__).resolve().parent.parent / "manifest.yml").read_text())


def test_the_build_command_is_declared_with_escaping() -> None:
    (command,) = MANIFEST["features"]["slash_commands"]
    assert command["command"] == "/build" and command["should_escape"] is True


def test_scopes_are_exactly_what_the_bot_calls() -> None:
    # commands: /build; chat:write: chat.postMessage / chat.update; chat:write.public: post
    # without joining; usergroups:read: usergroups.users.list; channels:history and
    # groups:history: conversations.history / conversations.replies (public / private);
    # channels:read, groups:read, im:read, mpim:read: conversations.info (/build subscribe);
    # im:write, im:history: conversations.open and conversations.history (Notify me's DM)
    assert sorted(MANIFEST["oauth_config"]["scopes"]["bot"]) == \
        ["channels:history", "channels:read", "chat:write", "chat:write.public", "commands",
         "groups:history", "groups:read", "im:history", "im:read", "im:write", "mpim:read",
         "usergroups:read"]


def test_buttons_and_socket_mode_are_on() -> None:
    settings = MANIFEST["settings"]
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["socket_mode_enabled"] is True
    assert MANIFEST["features"]["app_home"]["messages_tab_enabled"] is True  # DM fallback
