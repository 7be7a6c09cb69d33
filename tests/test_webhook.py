"""POST /codearts/events: CodeArts' generic webhook as a nudge to poll now (issue 16, section
3). Real signed Slack requests start the builds; the webhook is called over HTTP like
CodeArts calls it; time is moved with the clock seam, never slept."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot import messages as msg
from bot.settings import SettingsError, load_settings
from bot.webhook import HEADER, MAX_BODY, Pacer, job_ids_in
from tests.harness import BACKEND_ID, DOCS_ID, Bot, run_value, running_bot

POLL = 600.0  # so long that only a nudge brings a result within a test
HOOK = "webhook-secret-0123456789abcdef"


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path, poll=POLL, codearts_webhook_secret=HOOK) as b:
        b.codearts.add_job(BACKEND_ID, duration=0)  # ends as soon as it starts
        b.codearts.add_job(DOCS_ID, duration=0)
        yield b


def start(bot: Bot, text: str = "backend", channel: str = "CBUILDS") -> str:
    """A build started from Slack (backend asks Run/Cancel first, docs does not); its id."""
    before = len(bot.slack.calls("chat.postMessage"))
    resp, url = bot.command(text, channel=channel)
    assert resp.status_code == 200
    if text.startswith("backend"):
        (question,) = bot.wait_response(url)
        bot.click(msg.RUN, run_value(question), response_url=url)
    bot.slack.wait_for(lambda: len(bot.slack.calls("chat.postMessage")) > before)
    bot.wait_idle()
    return [r for r in bot.store.audit_rows() if r["decision"] == "started"][-1]["request_id"]


def call(bot: Bot, body: bytes | str = b"{}", *, secret: str | None = HOOK,
         headers: dict[str, str] | None = None) -> httpx.Response:
    sent = {"Content-Type": "application/json", **(headers or {})}
    if secret is not None:
        sent[HEADER] = secret
    return httpx.post(bot.url + "/codearts/events", content=body, headers=sent)


def results(bot: Bot) -> list[dict]:
    return [c for c in bot.slack.calls("chat.postMessage")
            if c.get("thread_ts") and "succeeded" in c.get("text", "")]


def status_calls(bot: Bot) -> list:
    """Status reads: a job's history (one for all its followed builds) or a build's record."""
    return [r for r in bot.codearts.requests if r.method == "GET" and (
        r.path.startswith("/v4/jobs/") or r.path.endswith("/history"))]


def test_a_nudge_brings_the_result_before_the_next_poll(bot: Bot) -> None:
    rid = start(bot)
    assert bot.runtime.watcher.run_once() == 0  # not due for ten minutes
    resp = call(bot, f'{{"job_id": "{BACKEND_ID}", "result": "FAILED"}}')
    assert resp.status_code == 204
    assert bot.runtime.watcher.run_once() == 1
    (reply,) = results(bot)
    assert reply["thread_ts"] == bot.store.get_build(rid).message_ts
    assert "succeeded" in reply["text"]  # CodeArts' answer, never the body's "FAILED"


def test_a_nudge_naming_one_job_polls_only_that_job(bot: Bot) -> None:
    start(bot)
    start(bot, "docs", channel="CRANDOM")
    assert call(bot, json.dumps({"data": {"jobId": DOCS_ID.upper()}})).status_code == 204
    assert bot.runtime.watcher.run_once() == 1
    (polled,) = status_calls(bot)
    assert DOCS_ID in polled.path


@pytest.mark.parametrize("body", ['{"event": "build succeeded"}', "[]", "null", '"text"',
                                  '{"job_id": "aaaabbbbccccddddeeeeffff00001111"}'])
def test_a_nudge_naming_no_followed_job_polls_every_followed_build(bot: Bot,
                                                                   body: str) -> None:
    start(bot)
    start(bot, "docs", channel="CRANDOM")
    assert call(bot, body).status_code == 204
    assert bot.runtime.watcher.run_once() == 2
    assert len(results(bot)) == 2


def test_with_the_watcher_running_the_result_arrives_within_two_seconds(bot: Bot) -> None:
    start(bot)
    bot.runtime.watcher.start()
    began = time.monotonic()
    assert call(bot, f'{{"job_id": "{BACKEND_ID}"}}').status_code == 204
    bot.slack.wait_for(lambda: results(bot), timeout=5)
    assert time.monotonic() - began < 2.0


def test_nudges_are_paced_so_a_flood_cannot_hammer_codearts(bot: Bot) -> None:
    bot.codearts.add_job(BACKEND_ID, duration=3600)  # keeps running
    start(bot)
    every = bot.runtime.webhook.pacer.every = 30.0  # one second is too short to test with
    assert call(bot).status_code == 204
    assert bot.runtime.watcher.run_once() == 1  # the first nudge: polled at once
    for _ in range(30):  # a flood within the pacing interval
        assert call(bot).status_code == 204
    assert bot.runtime.watcher.run_once() == 0  # the flood waits for the next slot
    bot.clock.advance(every + 0.1)
    assert bot.runtime.watcher.run_once() == 1  # one more poll, for all thirty
    bot.clock.advance(5)
    assert bot.runtime.watcher.run_once() == 0
    assert len(status_calls(bot)) == 2


def test_a_nudge_takes_no_lease(bot: Bot) -> None:
    rid = start(bot)
    store = bot.store
    now = bot.runtime.clock()
    (held,) = store.lease_due(owner="other-replica", now=now + POLL + 1, lease_seconds=POLL * 2,
                              limit=10)
    assert call(bot).status_code == 204
    assert bot.runtime.watcher.run_once() == 0  # the other replica still holds it
    after = store.get_build(rid)
    assert (after.lease_owner, after.lease_token) == ("other-replica", held.lease_token)


# --- refusals: nothing changes ----------------------------------------------------------

def _unchanged(bot: Bot, rid: str, before: float) -> None:
    assert bot.store.get_build(rid).next_check_at == before
    assert bot.runtime.watcher.run_once() == 0
    assert status_calls(bot) == []


@pytest.mark.parametrize(("secret", "headers"), [
    (None, {}),
    ("", {}),
    ("wrong-secret-0123456789abcdef", {}),
    (HOOK[:-1], {}),
    (HOOK + "x", {}),
    (None, {"Authorization": f"Bearer {HOOK}"}),
])
def test_a_call_without_the_secret_is_refused_with_401(bot: Bot, secret: str | None,
                                                       headers: dict[str, str],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    rid = start(bot)
    before = bot.store.get_build(rid).next_check_at
    caplog.set_level(logging.DEBUG)
    resp = call(bot, f'{{"job_id": "{BACKEND_ID}"}}', secret=secret, headers=headers)
    assert resp.status_code == 401
    _unchanged(bot, rid, before)
    assert HOOK not in caplog.text and HOOK not in resp.text


def test_a_huge_body_is_refused_with_413_even_when_sent_in_chunks(bot: Bot) -> None:
    rid = start(bot)
    before = bot.store.get_build(rid).next_check_at
    big = b'{"x": "' + b"a" * MAX_BODY + b'"}'
    assert call(bot, big).status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BODY // 1024 + 2):
            yield b"a" * 1024

    resp = httpx.post(bot.url + "/codearts/events", content=chunks(), headers={HEADER: HOOK})
    assert resp.status_code == 413
    _unchanged(bot, rid, before)


@pytest.mark.parametrize("body", [b"not json", b"{", b"\xff\xfe", b"", b'{"a": NaN'])
def test_a_body_that_is_not_json_is_refused_with_400(bot: Bot, body: bytes) -> None:
    rid = start(bot)
    before = bot.store.get_build(rid).next_check_at
    assert call(bot, body).status_code == 400
    _unchanged(bot, rid, before)


def test_without_the_setting_the_route_is_off(db_url: str, tmp_path: Path) -> None:
    with running_bot(db_url, tmp_path, poll=POLL) as off:
        resp = httpx.post(off.url + "/codearts/events", content=b"{}", headers={HEADER: HOOK})
        assert resp.status_code == 404


def test_the_route_takes_only_post(bot: Bot) -> None:
    assert httpx.get(bot.url + "/codearts/events", headers={HEADER: HOOK}).status_code == 404


# --- the pieces -----------------------------------------------------------------------

def test_job_ids_are_found_under_plausible_keys_anywhere_in_the_body() -> None:
    job = "F9D6C8466D614A9788E9A0ACF6C15F46"
    assert job_ids_in({"job_id": job}) == [job.lower()]
    assert job_ids_in({"event": {"build": {"task-id": job}}}) == [job.lower()]
    assert job_ids_in([{"jobId": job}, {"JOB_ID": job}]) == [job.lower()]
    assert job_ids_in({"job_id": "short"}) == []
    assert job_ids_in({"name": job}) == []  # not a key that names a job
    assert job_ids_in({"job_id": 12}) == []
    deep: object = {"job_id": job}
    for _ in range(5000):
        deep = [deep]
    assert job_ids_in(deep) == []  # looked at within a bound, never recursed


def test_the_pacer_lets_one_nudge_a_second_per_key() -> None:
    pacer = Pacer(1.0)
    assert pacer.slot("*", 100.0) == 100.0
    assert pacer.slot("*", 100.2) == 101.0  # moved to the end of the second, not lost
    assert pacer.slot("*", 100.5) is None  # the one waiting covers it
    assert pacer.slot("job", 100.5) == 100.5  # keys are paced apart
    assert pacer.slot("*", 101.5) == 102.0
    assert pacer.slot("*", 110.0) == 110.0


def test_the_setting_is_a_secret_and_must_be_long_enough(tmp_path: Path) -> None:
    base = {"slack_bot_token": "xoxb-1-2-abc", "slack_signing_secret": "s" * 32,
            "codearts_endpoint": "https://example.com", "codearts_token": "t" * 40}
    settings = load_settings(**base, codearts_webhook_secret=HOOK)
    assert HOOK not in repr(settings)
    assert settings.codearts_webhook_secret is not None
    with pytest.raises(SettingsError) as short:
        load_settings(**base, codearts_webhook_secret="short")
    assert "CODEARTS_WEBHOOK_SECRET" in str(short.value) and "short" not in str(
        short.value).replace("too short", "")
    assert load_settings(**base, codearts_webhook_secret="").codearts_webhook_secret is None
