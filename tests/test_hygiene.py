"""Input hygiene (issue 26): invisible and reordering characters refused in the command and
the form alike, forged button values, requests from another workspace, where a
subscription may post. Signed requests into the real HTTP endpoint, the Slack and
CodeArts stand-ins on loopback, a real database (SQLite, and PostgreSQL when
TEST_DATABASE_URL is set)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import forms
from tests.harness import CONFIG, Bot, running_bot

HIDDEN = [("\u202e", "U+202E RIGHT-TO-LEFT OVERRIDE"), ("\u2066", "U+2066 LEFT-TO-RIGHT ISOLATE"),
          ("\u200f", "U+200F RIGHT-TO-LEFT MARK"), ("\u061c", "U+061C ARABIC LETTER MARK"),
          ("\u2028", "U+2028 LINE SEPARATOR"), ("\u2029", "U+2029 PARAGRAPH SEPARATOR"),
          ("\u200b", "U+200B ZERO WIDTH SPACE"), ("\u200d", "U+200D ZERO WIDTH JOINER"),
          ("\u2060", "U+2060 WORD JOINER"), ("\ufeff", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
          ("\u00ad", "U+00AD SOFT HYPHEN"), ("\U000e0041", "U+E0041 TAG LATIN CAPITAL LETTER A"),
          ("\u3164", "U+3164 HANGUL FILLER")]


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path, config=CONFIG) as b:
        yield b
        b.wait_idle()
        assert [(c.method, c.problem) for c in b.slack.refused()] == []


def runs(bot: Bot) -> list[Any]:
    return bot.codearts.requests_to("/v3/jobs/build", "POST")


def said(bot: Bot, text: str, *, user: str = "UALICE", channel: str = "CBUILDS") -> str:
    """What the typist was told (the ack's body or the first response), as text."""
    resp, url = bot.command(text, user=user, channel=channel)
    reply = bot.reply(resp, url)
    bot.wait_idle()
    assert reply.get("response_type") == "ephemeral", reply
    return str(reply["text"])


# --- invisible and reordering characters ------------------------------------------------

@pytest.mark.parametrize(("char", "named"), HIDDEN)
def test_a_value_with_an_invisible_character_is_refused_by_name(bot: Bot, char: str,
                                                                named: str) -> None:
    text = said(bot, f"docs msg=deploy{char}now", user="UANYONE", channel="CRANDOM")
    assert f"The value of `msg` holds an invisible character ({named})" in text
    assert "type it again without it" in text
    assert runs(bot) == [] and bot.slack.calls("chat.postMessage") == []


@pytest.mark.parametrize(("text", "expected"), [
    ("docs ms\u200bg=x", "The parameter name `ms[U+200B]g` holds an invisible character "
                         "(U+200B ZERO WIDTH SPACE)"),
    ("do\u202ecs", "The job name `do[U+202E]cs` holds an invisible character "
                   "(U+202E RIGHT-TO-LEFT OVERRIDE)"),
    ("docs tag=v1\u2069", "The tag holds an invisible character (U+2069 POP DIRECTIONAL "
                          "ISOLATE)"),
    ("docs msg=end\u2028", "The value of `msg` holds an invisible character (U+2028 LINE "
                           "SEPARATOR)"),
    ("docs msg=x\u2029tag=v1", "The value of `msg` holds an invisible character (U+2029 "
                               "PARAGRAPH SEPARATOR)"),
    ("status do\u200ccs", "The job name `do[U+200C]cs` holds an invisible character"),
    ("stop do\u200ecs 4", "The job name `do[U+200E]cs` holds an invisible character"),
])
def test_names_tags_and_job_names_with_invisible_characters_are_refused(
        bot: Bot, text: str, expected: str) -> None:
    shown = said(bot, text, user="UANYONE", channel="CRANDOM")
    assert expected in shown, shown
    assert runs(bot) == [] and bot.slack.calls("chat.postMessage") == []


def test_visible_unicode_still_runs(bot: Bot) -> None:
    """Accents, CJK, right-to-left letters, emoji and a tab are not invisible characters:
    they are sent as typed."""
    resp, _ = bot.command("docs msg=\"café 構築 שלום 🚀\tend\"", user="UANYONE",
                          channel="CRANDOM")
    assert resp.status_code == 200
    bot.slack.wait_for(lambda: runs(bot))
    bot.wait_idle()
    (sent,) = runs(bot)
    assert sent.body["parameter"] == [{"name": "msg", "value": "café 構築 שלום 🚀\tend"}]


def _form(bot: Bot, job: str, *, user: str, channel: str) -> dict[str, Any]:
    url = bot.slack.response_url()
    resp = bot.sender.command("", user=user, channel=channel, response_url=url)
    assert resp.status_code == 200
    bot.slack.wait_for(lambda: bot.slack.calls("views.open"))
    bot.wait_idle()
    v = list(bot.slack.views.values())[-1]
    before = len(bot.slack.calls("views.update"))
    assert bot.sender.pick(v, forms.JOB_BLOCK, forms.JOB_ACTION, job,
                           user=user).status_code == 200
    bot.slack.wait_for(lambda: len(bot.slack.calls("views.update")) > before)
    bot.wait_idle()
    return bot.slack.views[v["id"]]


@pytest.mark.parametrize(("entered", "block", "expected"), [
    ({"param.codeBranch": "main\u202e"}, "param.codeBranch",
     "The value of `codeBranch` holds an invisible character (U+202E RIGHT-TO-LEFT OVERRIDE)"),
    ({forms.TAG_BLOCK: "v1\u200b"}, forms.TAG_BLOCK,
     "The tag holds an invisible character (U+200B ZERO WIDTH SPACE)"),
    ({forms.COMMIT_BLOCK: "abc\ufeff"}, forms.COMMIT_BLOCK, "is not a commit ID"),
])
def test_the_form_refuses_invisible_characters_on_their_field(
        bot: Bot, entered: dict[str, str], block: str, expected: str) -> None:
    v = _form(bot, "backend", user="UALICE", channel="CBUILDS")
    resp = bot.sender.submit(v, entered, user="UALICE")
    assert resp.status_code == 200
    answer = resp.json()
    assert answer["response_action"] == "errors"
    assert expected in answer["errors"][block]
    bot.wait_idle()
    assert runs(bot) == []


@pytest.mark.parametrize(("extra", "expected"), [
    ("msg=a\u2028b", "The value of `msg` holds an invisible character (U+2028 LINE SEPARATOR)"),
    ("m\u200dsg=a", "The parameter name `m[U+200D]sg` holds an invisible character"),
    ("msg=x\u2066y\u2069", "The value of `msg` holds an invisible character (U+2066"),
])
def test_the_forms_extra_lines_refuse_invisible_characters(bot: Bot, extra: str,
                                                           expected: str) -> None:
    v = _form(bot, "docs", user="UANYONE", channel="CRANDOM")
    resp = bot.sender.submit(v, {forms.EXTRA_BLOCK: extra}, user="UANYONE")
    answer = resp.json()
    assert answer["response_action"] == "errors"
    assert expected in answer["errors"][forms.EXTRA_BLOCK]
    bot.wait_idle()
    assert runs(bot) == []
