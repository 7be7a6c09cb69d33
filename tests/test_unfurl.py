"""Build link previews (issue 29): a link to a build pasted in Slack (``link_shared``,
sent signed as Slack sends events) gets a preview through ``chat.unfurl``, only where the
job may be shown, with Stop and Rebuild checked for whoever clicks. The Slack and CodeArts
stand-ins on loopback, a real database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import messages as msg
from bot.links import LinkMatcher, domain_of, why_no_previews
from bot.slack_budget import DEFAULT_LIMITS
from tests.fakes.codearts import FakeCodeArts
from tests.harness import BACKEND_ID, DOCS_ID, OTHER_ID, Bot, button_value, running_bot

TEMPLATE = "https://console.example.com/cloudbuild/job/{job_id}/build/{build_no}?d={daily_build_number}"


def link(job_id: str, build_no: str, daily: str = "1") -> str:
    return f"https://console.example.com/cloudbuild/job/{job_id}/build/{build_no}?d={daily}"


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path, build_link_template=TEMPLATE) as b:
        b.codearts.add_job(BACKEND_ID, duration=3600)  # runs until stopped
        b.codearts.add_job(DOCS_ID, duration=0)  # ends as soon as it starts
        b.codearts.add_job(OTHER_ID, duration=0)  # in CodeArts, not in the jobs file
        yield b


def from_slack(bot: Bot, text: str = "backend", user: str = "UALICE") -> str:
    """Run a build through the whole flow (Run clicked when the job asks); return its id,
    read from its announcement's metadata."""
    before = len(bot.slack.calls("chat.postMessage"))
    resp, url = bot.command(text, user=user)
    answer = bot.reply(resp, url)
    if any(b.get("type") == "actions" for b in answer.get("blocks", [])):
        bot.click(msg.RUN, button_value(answer, msg.RUN), user=user)
    posts = bot.slack.wait_for(
        lambda: (p := bot.slack.calls("chat.postMessage")) and len(p) > before and p)
    bot.wait_idle()
    return str(posts[before]["metadata"]["event_payload"]["build_id"])


def from_console(bot: Bot, job_id: str) -> str:
    answer = httpx.post(bot.codearts.url + "/v3/jobs/build", json={"job_id": job_id},
                        headers={"X-Auth-Token": FakeCodeArts.token})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["actual_build_number"])


def paste(bot: Bot, *urls: str, user: str = "UALICE", channel: str = "CBUILDS",
          **kw: Any) -> dict[str, Any]:
    """Someone posts a message with these links: Slack's link_shared event, signed."""
    envelope = bot.slack.link_shared(list(urls), channel=channel, user=user, **kw)
    resp = bot.sender.event(envelope)
    assert resp.status_code == 200, resp.text
    bot.wait_idle()
    return envelope["event"]


def preview_text(unfurl: dict[str, Any]) -> str:
    return "\n".join(e["text"] for b in unfurl["blocks"]
                     for e in ([b["text"]] if "text" in b else b.get("elements", []))
                     if isinstance(e, dict) and "text" in e and isinstance(e["text"], str))


def one_preview(bot: Bot, url: str) -> dict[str, Any]:
    (unfurl,) = bot.slack.wait_for(lambda: bot.slack.unfurled(url))
    assert bot.slack.refused() == []
    return unfurl


# --- the preview ---------------------------------------------------------------------

def test_a_running_build_of_ours_shows_its_state_who_started_it_and_stop(bot: Bot) -> None:
    rid = from_slack(bot)
    build = bot.store.get_build(rid)
    url = link(BACKEND_ID, build.build_no, build.daily_build_number)
    event = paste(bot, url)
    unfurl = one_preview(bot, url)
    text = preview_text(unfurl)
    assert "*backend* build" in text and build.daily_build_number in text
    assert f"#{build.build_no}" in text and "Backend CI" in text
    assert "Running for" in text and "Started by <@UALICE>" in text
    assert button_value(unfurl, msg.STOP) == rid
    (call,) = bot.slack.calls("chat.unfurl")
    assert call["unfurl_id"] == event["unfurl_id"]
    assert call["source"] == "conversations_history"


def test_an_event_without_an_unfurl_id_is_answered_by_channel_and_ts(bot: Bot) -> None:
    build_no = from_console(bot, DOCS_ID)
    url = link(DOCS_ID, build_no)
    event = paste(bot, url, unfurl_id=False)
    one_preview(bot, url)
    (call,) = bot.slack.calls("chat.unfurl")
    assert call["channel"] == "CBUILDS" and call["ts"] == event["message_ts"]
    assert "unfurl_id" not in call


def test_an_ended_build_of_ours_shows_its_result_and_rebuild(bot: Bot) -> None:
    rid = from_slack(bot, "docs")
    ended(bot, rid)
    build = bot.store.get_build(rid)
    url = link(DOCS_ID, build.build_no, build.daily_build_number)
    reads = len(bot.codearts.requests_to(f"/v4/jobs/{DOCS_ID}/", "GET"))
    paste(bot, url, channel="CRANDOM")  # docs may be run anywhere, by anyone
    unfurl = one_preview(bot, url)
    assert ":white_check_mark: Succeeded in" in preview_text(unfurl)
    assert button_value(unfurl, msg.REBUILD) == rid
    # the result the bot reported is shown as it is: CodeArts is not asked again
    assert len(bot.codearts.requests_to(f"/v4/jobs/{DOCS_ID}/", "GET")) == reads


def ended(bot: Bot, rid: str) -> None:
    """The watcher's next pass (a poll interval on) reads the build's end."""
    bot.clock.advance(16)
    bot.runtime.watcher.run_once()
    assert bot.store.get_build(rid).result == "success"


def test_a_build_started_outside_slack_is_previewed_without_buttons(bot: Bot) -> None:
    build_no = from_console(bot, DOCS_ID)
    url = link(DOCS_ID, build_no)
    paste(bot, url, user="UBOB")
    unfurl = one_preview(bot, url)
    text = preview_text(unfurl)
    assert "Succeeded" in text and "Started outside Slack" in text
    assert not [b for b in unfurl["blocks"] if b["type"] == "actions"]


def test_a_running_build_started_elsewhere_says_how_to_stop_it(bot: Bot) -> None:
    build_no = from_console(bot, BACKEND_ID)
    url = link(BACKEND_ID, build_no)
    paste(bot, url)
    text = preview_text(one_preview(bot, url))
    assert "Running for" in text and f"/build stop backend {build_no}" in text


def test_several_links_in_one_message_are_previewed_in_one_call(bot: Bot) -> None:
    first, second = from_console(bot, DOCS_ID), from_console(bot, DOCS_ID)
    urls = [link(DOCS_ID, first), link(DOCS_ID, second), "https://example.org/other"]
    paste(bot, *urls)
    (call,) = bot.slack.wait_for(lambda: bot.slack.calls("chat.unfurl"))
    assert sorted(call["unfurls"]) == sorted(urls[:2])


def test_a_link_still_in_the_composer_is_previewed_by_its_unfurl_id(bot: Bot) -> None:
    """Slack does not say where a message being written will go (channel COMPOSER): only
    a job that may be run in any channel is previewed there."""
    build_no = from_console(bot, DOCS_ID)
    url = link(DOCS_ID, build_no)
    event = paste(bot, url, source="composer")
    assert event["channel"] == "COMPOSER"
    one_preview(bot, url)
    (call,) = bot.slack.calls("chat.unfurl")
    assert call["unfurl_id"] == event["unfurl_id"] and call["source"] == "composer"
    assert "ts" not in call and "channel" not in call
    paste(bot, link(BACKEND_ID, from_console(bot, BACKEND_ID)), source="composer")
    assert len(bot.slack.calls("chat.unfurl")) == 1  # backend is for CBUILDS alone


# --- where no preview is given -------------------------------------------------------

def no_preview(bot: Bot) -> None:
    assert bot.slack.calls("chat.unfurl") == []


def test_no_preview_where_the_job_may_not_be_run(bot: Bot) -> None:
    """backend is for CBUILDS: its link pasted in another channel shows nothing, even by
    someone who may run it (the preview would be seen by the whole channel)."""
    build_no = from_console(bot, BACKEND_ID)
    paste(bot, link(BACKEND_ID, build_no), channel="CRANDOM")
    paste(bot, link(BACKEND_ID, build_no), channel="CRANDOM", user="UADMIN")
    no_preview(bot)


def test_no_preview_when_the_person_who_pasted_may_not_run_the_job(bot: Bot) -> None:
    build_no = from_console(bot, BACKEND_ID)
    paste(bot, link(BACKEND_ID, build_no), user="UBOB")
    no_preview(bot)


def test_no_preview_for_a_task_that_is_not_in_the_jobs_file(bot: Bot) -> None:
    """Even an admin, who may run any raw task ID, gets no preview of one."""
    build_no = from_console(bot, OTHER_ID)
    paste(bot, link(OTHER_ID, build_no), user="UADMIN")
    no_preview(bot)


def test_no_preview_for_an_unknown_build_or_a_link_not_ours(bot: Bot) -> None:
    paste(bot, link(DOCS_ID, "999"), "https://console.example.com/cloudbuild/other/1",
          link(DOCS_ID, "1").replace("/build/", "/build//"))
    no_preview(bot)


def test_no_preview_where_the_bot_is_not(bot: Bot) -> None:
    build_no = from_console(bot, DOCS_ID)
    paste(bot, link(DOCS_ID, build_no), bot_member=False)
    no_preview(bot)


def test_no_preview_without_a_link_template(db_url: str, tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path) as b:
        b.codearts.add_job(DOCS_ID, duration=0)
        build_no = from_console(b, DOCS_ID)
        paste(b, link(DOCS_ID, build_no))
        no_preview(b)


# --- the buttons act with the clicker's permissions ----------------------------------

def unfurl_click(bot: Bot, action_id: str, value: str, url: str, *, user: str,
                 channel: str = "CBUILDS", response_url: str | None = None) -> None:
    """A click on a preview's button, shaped as Slack sends it: the container is the
    app's unfurl (a message attachment) under the person's message."""
    payload = {
        "type": "block_actions", "team": {"id": "T1", "domain": "example"},
        "user": {"id": user, "username": "someone", "team_id": "T1"},
        "api_app_id": "A1", "token": "legacy-unused", "trigger_id": "1.2.t",
        "channel": {"id": channel, "name": "builds"},
        "container": {"type": "message_attachment", "message_ts": "1.000001",
                      "attachment_id": 1, "channel_id": channel, "is_ephemeral": False,
                      "is_app_unfurl": True, "app_unfurl_url": url},
        "app_unfurl": {"id": 1, "app_unfurl_url": url, "is_app_unfurl": True},
        "response_url": response_url or bot.slack.response_url(),
        "actions": [{"type": "button", "action_id": action_id, "block_id": "b",
                     "value": value, "action_ts": "1.1",
                     "text": {"type": "plain_text", "text": "Stop"}}]}
    resp = bot.sender.post(urlencode({"payload": json.dumps(payload)}).encode())
    assert resp.status_code == 200, resp.text
    bot.wait_idle()


def test_stop_on_a_preview_is_checked_for_whoever_clicks(bot: Bot) -> None:
    rid = from_slack(bot)
    build = bot.store.get_build(rid)
    url = link(BACKEND_ID, build.build_no, build.daily_build_number)
    paste(bot, url)
    stop = button_value(one_preview(bot, url), msg.STOP)
    stops = lambda: [r for r in bot.codearts.requests_to("/v3/jobs/", "POST")  # noqa: E731
                     if r.path.endswith("/stop")]
    refused_url = bot.slack.response_url()
    unfurl_click(bot, msg.STOP, stop, url, user="UBOB", response_url=refused_url)
    (refusal,) = bot.wait_response(refused_url)
    bot.wait_idle()
    assert "You can't stop this build" in refusal["text"]
    assert stops() == []
    unfurl_click(bot, msg.STOP, stop, url, user="UALICE")
    bot.slack.wait_for(stops)
    bot.wait_idle()
    assert len(stops()) == 1


def test_rebuild_on_a_preview_asks_the_clicker_run_or_cancel(bot: Bot) -> None:
    rid = from_slack(bot, "docs")
    build = bot.store.get_build(rid)
    url = link(DOCS_ID, build.build_no, build.daily_build_number)
    paste(bot, url, channel="CRANDOM", user="UBOB")
    rebuild = button_value(one_preview(bot, url), msg.REBUILD)
    answer_url = bot.slack.response_url()
    bot.click(msg.REBUILD, rebuild, user="UBOB", channel="CRANDOM", response_url=answer_url)
    (question,) = bot.wait_response(answer_url)
    assert button_value(question, msg.RUN)  # asked first, never started by the click


# --- the stand-in refuses what Slack refuses -----------------------------------------

def test_the_stand_in_refuses_an_unfurl_of_a_link_that_was_not_shared(bot: Bot) -> None:
    client = WebClient(token="xoxb-test", base_url=bot.slack.api_url)
    shared = link(DOCS_ID, "1")
    event = bot.slack.link_shared([shared], channel="CBUILDS", user="UALICE")["event"]
    preview = {"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]}
    for where in ({"channel": "CBUILDS", "ts": "1.000001"},  # no such message
                  {"channel": "CBUILDS", "ts": event["message_ts"], "other": True},
                  {"unfurl_id": "nope", "source": "conversations_history"}):
        url = link(DOCS_ID, "2") if where.pop("other", False) else shared
        with pytest.raises(SlackApiError) as refused:
            client.chat_unfurl(unfurls={url: preview}, **where)
        assert refused.value.response["error"] == "cannot_unfurl_message"
    client.chat_unfurl(unfurls={shared: preview}, channel="CBUILDS", ts=event["message_ts"])
    assert bot.slack.unfurled(shared) == [preview]


def test_chat_unfurl_has_a_budget() -> None:
    assert DEFAULT_LIMITS["chat.unfurl"] == 50  # Tier 3


# --- reading links back --------------------------------------------------------------

def test_the_matcher_reads_the_job_and_build_back_and_nothing_else() -> None:
    m = LinkMatcher(TEMPLATE)
    assert m.domain == "console.example.com" == domain_of(TEMPLATE)
    found = m.match(link(BACKEND_ID.upper(), "42", "20261123.7"))
    assert found is not None and (found.job_id, found.build_no) == (BACKEND_ID, "42")
    for url in (link(BACKEND_ID, "42") + "&x=1",  # more than the template
                "https://evil.example.org/?" + link(BACKEND_ID, "42"),
                link(BACKEND_ID[:-1], "42"), link(BACKEND_ID, "4x2"),
                link(BACKEND_ID, "42").replace("console.example.com", "console-example.com"),
                link(BACKEND_ID, "4" * 19), "", "https://console.example.com/"):
        assert m.match(url) is None, url


def test_a_placeholder_used_twice_must_be_the_same_text() -> None:
    m = LinkMatcher("https://c.example.com/{job_id}/{build_no}/{job_id}")
    assert m.match(f"https://c.example.com/{BACKEND_ID}/1/{BACKEND_ID}") is not None
    assert m.match(f"https://c.example.com/{BACKEND_ID}/1/{DOCS_ID}") is None


@pytest.mark.parametrize(("template", "words"), [
    (None, "is not set"),
    ("https://c.example.com/{job_id}", "has no {build_no}"),
    ("https://c.example.com/{build_no}", "has no {job_id}"),
    ("{project_id}.example.com/{job_id}/{build_no}", "does not start with https://HOST/"),
    ("https://c.example.com{job_id}/{build_no}", "does not start with https://HOST/"),
])
def test_why_links_are_not_previewed(template: str | None, words: str) -> None:
    problem = why_no_previews(template)
    assert problem is not None and words in problem
    if template:
        with pytest.raises(ValueError, match="BUILD_LINK_TEMPLATE"):
            LinkMatcher(template)
