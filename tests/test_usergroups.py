"""User-group lookups against the loopback Slack stand-in."""

from __future__ import annotations

from bot.slack_io import make_web_client
from bot.usergroups import CachedOnly, SlackUserGroups
from tests.fakes.slack import FakeSlack


def test_members_are_fetched_once_and_cached() -> None:
    with FakeSlack() as slack:
        slack.usergroups["S1"] = ["U1", "U2"]
        groups = SlackUserGroups(make_web_client("xoxb-test", slack.api_url, backoff=0.0))
        assert groups.members("S1") == {"U1", "U2"}
        assert groups.members("S1") == {"U1", "U2"}
        assert len(slack.calls("usergroups.users.list")) == 1


def test_cache_expires_after_its_ttl() -> None:
    now = [0.0]
    with FakeSlack() as slack:
        slack.usergroups["S1"] = ["U1"]
        groups = SlackUserGroups(make_web_client("xoxb-test", slack.api_url, backoff=0.0), ttl=300,
                                 clock=lambda: now[0])
        groups.members("S1")
        slack.usergroups["S1"] = ["U9"]
        now[0] = 301.0
        assert groups.members("S1") == {"U9"}


def test_failed_lookup_is_unknown_not_empty() -> None:
    with FakeSlack() as slack:
        groups = SlackUserGroups(make_web_client("xoxb-test", slack.api_url, backoff=0.0))
        assert groups.members("S404") is None
        slack.usergroups["S1"] = ["U1"]
        slack.fail("usergroups.users.list", status=500, count=10)
        assert groups.members("S1") is None


def test_cached_only_view_never_calls_slack_and_notes_the_miss() -> None:
    with FakeSlack() as slack:
        slack.usergroups["S1"] = ["U1"]
        groups = SlackUserGroups(make_web_client("xoxb-test", slack.api_url, backoff=0.0))
        view = CachedOnly(groups)
        assert view.members("S1") is None and view.missed
        groups.members("S1")
        view = CachedOnly(groups)
        assert view.members("S1") == {"U1"} and not view.missed
        assert len(slack.calls("usergroups.users.list")) == 1
