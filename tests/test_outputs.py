"""What a successful build produced, in its result reply (issue 28, "Build outputs on
success"): read from ``GET /v3/jobs/{job_id}/{build_no}/output-info`` just before the reply,
for builds started from Slack and builds a subscription follows. Signed requests into the
real endpoint, FakeSlack and FakeCodeArts on loopback, a real database; time moves through
the harness clock (only the slow-answer test waits, on the real 5 s bound it checks).

Also the client's reading of odd answers, against FakeCodeArts."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot import messages as msg
from bot.codearts.answers import OUTPUTS_READ, Output, Outputs
from bot.codearts.auth import TokenAuth
from bot.codearts.client import OUTPUTS_BUDGET, CodeArtsClient
from bot.codearts.errors import ApiError, BadResponseError, CodeArtsError
from bot.lifecycle import Lease, WatchState
from bot.metrics import call_name
from bot.notifier import BUILD_EVENT, RESULT_EVENT
from bot.recovery import INTENT_GRACE
from bot.watcher import Watcher
from tests.fakes.codearts import FakeCodeArts
from tests.harness import BACKEND_ID, Bot, running_bot

POLL = 15.0
OUTPUT_INFO = f"/v3/jobs/{BACKEND_ID}/1/output-info"
CONFIG = f"""
admins = ["UADMIN"]

[jobs.backend]
id = "{BACKEND_ID}"
description = "Backend CI"
users = ["UALICE"]
channels = ["CBUILDS"]
"""


def record(name: str, version: str = "", uri: str = "", kind: str = "maven") -> dict[str, Any]:
    """One ``OutPutResult`` as CodeArts writes it."""
    return {"project_id": "p" * 32, "name": name, "version": version, "package_type": kind,
            "uri": uri, "type": kind, "daily_build_number": "20261207.1"}


JAR = record("backend.jar", "1.4.2", "https://deploy:s3cr3tpass@nexus.example.com/repo/"
             "backend-1.4.2.jar?X-Obs-Signature=abcdef0123456789&Expires=1700000000")
IMAGE = record("backend-api", "v1.4.2", "swr.example.com/team/backend-api:v1.4.2", "docker")
PRODUCED = {"package_info": JAR,
            "package_infos": {"backend.jar": JAR,  # the same as package_info: listed once
                              "<!channel> & co": record("<!channel> & co", "`2`",
                                                        "obs://bucket/<b>&.tgz", "npm")},
            "image_infos": {"backend-api": IMAGE}}


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path, poll=POLL, config=CONFIG) as b:
        b.codearts.add_job(BACKEND_ID, duration=3600, log="[INFO] compiling\n[ERROR] boom\n")
        yield b


def start_backend(bot: Bot) -> str:
    """Type, confirm, Run; wait until the channel message's ts is saved. The build id."""
    rid, url = bot.confirmation("backend")
    assert bot.click(msg.RUN, rid, response_url=url).status_code == 200
    bot.wait_idle()
    bot.slack.wait_for(lambda: (b := bot.store.get_build(rid)) is not None and b.message_ts)
    return rid


def tick(bot: Bot, seconds: float = POLL + 1) -> int:
    bot.clock.advance(seconds)
    return bot.runtime.watcher.run_once()


def results(bot: Bot) -> list[dict[str, Any]]:
    return [c for c in bot.slack.calls("chat.postMessage")
            if (c.get("metadata") or {}).get("event_type") == RESULT_EVENT]


def shown(message: dict[str, Any]) -> str:
    """Everything a person reads in a message: its text and its blocks' texts."""
    parts = [message.get("text", "")]
    for block in message.get("blocks") or []:
        if block.get("type") == "section":
            parts.append(block["text"]["text"])
        elif block.get("type") == "context":
            parts += [e["text"] for e in block["elements"]]
    return "\n".join(parts)


def not_read_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "bot.outputs" and "not read" in r.getMessage()]


# --- own builds -------------------------------------------------------------------------

def test_a_success_reply_lists_what_the_build_produced_escaped_and_masked(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    rid = start_backend(bot)
    bot.codearts.set_outputs(BACKEND_ID, 1, PRODUCED)
    bot.codearts.set_status(BACKEND_ID, 1, "SUCCESS")
    tick(bot)
    (reply,) = results(bot)
    assert reply["thread_ts"] == bot.store.get_build(rid).message_ts
    text = shown(reply)
    assert "succeeded" in text and "*What it produced* (3):" in text
    assert ":package: package *backend.jar* `1.4.2` at `https://deploy:****@nexus.example.com/" \
        in text
    assert "nexus.example.com/repo/backend-1.4.2.jar?X-Obs-Signature=****&amp;Expires=****" \
        in text
    assert "s3cr3tpass" not in text and "abcdef0123456789" not in text
    assert ":whale: image *backend-api* `v1.4.2` at " \
           "`swr.example.com/team/backend-api:v1.4.2`" in text
    assert "&lt;!channel&gt; &amp; co" in text and "<!channel>" not in text
    assert "`ˋ2ˋ`" in text and "obs://bucket/&lt;b&gt;&amp;.tgz" in text
    assert text.count("backend.jar") == 1  # package_info is also in package_infos
    assert [r.path for r in bot.codearts.requests_to(OUTPUT_INFO)] == [OUTPUT_INFO]
    assert call_name(OUTPUT_INFO) == "outputs"  # its own metrics label, no IDs in it
    assert not_read_lines(caplog) == []
    tick(bot)  # posted once
    assert len(results(bot)) == 1
    assert bot.store.get_build(rid).watch is WatchState.DONE


def test_more_than_ten_outputs_show_ten_and_how_many_more(bot: Bot) -> None:
    start_backend(bot)
    bot.codearts.set_outputs(BACKEND_ID, 1, {
        "package_info": None,
        "package_infos": {f"lib{i:02d}": record(f"lib{i:02d}", f"1.0.{i}",
                                                f"obs://b/lib{i:02d}.tgz")
                          for i in range(12)},
        "image_infos": {f"img{i}": record(f"img{i}", "v1", f"swr.example.com/t/img{i}:v1")
                        for i in range(3)}})
    bot.codearts.set_status(BACKEND_ID, 1, "SUCCESS")
    tick(bot)
    (reply,) = results(bot)
    text = shown(reply)
    assert "*What it produced* (15):" in text
    assert [f"lib{i:02d}" in text for i in range(12)] == [True] * 10 + [False] * 2
    assert "img0" not in text
    assert "… and 5 more" in text


def test_a_build_that_produced_nothing_says_nothing_of_it(bot: Bot) -> None:
    start_backend(bot)
    bot.codearts.set_status(BACKEND_ID, 1, "SUCCESS")  # the fake's default: nothing
    tick(bot)
    (reply,) = results(bot)
    assert "succeeded" in shown(reply) and "produced" not in shown(reply)
    assert len(bot.codearts.requests_to(OUTPUT_INFO)) == 1


def test_a_failed_build_does_not_ask_for_outputs(bot: Bot) -> None:
    start_backend(bot)
    bot.codearts.set_outputs(BACKEND_ID, 1, PRODUCED)
    bot.codearts.set_status(BACKEND_ID, 1, "FAILED")
    tick(bot)
    (reply,) = results(bot)
    assert "failed" in shown(reply) and "[ERROR] boom" in shown(reply)
    assert "produced" not in shown(reply)
    assert bot.codearts.requests_to(OUTPUT_INFO) == []


# --- when the outputs cannot be read -------------------------------------------------------

@pytest.mark.parametrize("spoil, why", [
    (lambda fake: fake.fail_next(500, count=5, path_prefix=OUTPUT_INFO),
     "CodeArts answered HTTP 500"),
    (lambda fake: fake.fail_next(403, path_prefix=OUTPUT_INFO), "CodeArts answered HTTP 403"),
    (lambda fake: fake.fail_next(200, body="{not json", path_prefix=OUTPUT_INFO), "answer"),
    (lambda fake: fake.html_next(200, path_prefix=OUTPUT_INFO), "answer"),
    (lambda fake: fake.set_outputs(BACKEND_ID, 1, ["not", "an", "object"]), "answer"),
    (lambda fake: fake.drop_next(count=5, path_prefix=OUTPUT_INFO), ""),
], ids=["5xx", "403", "not-json", "html", "garbage-result", "dropped"])
def test_unreadable_outputs_leave_the_reply_without_the_list_and_one_log_line(
        bot: Bot, caplog: pytest.LogCaptureFixture, spoil: Any, why: str) -> None:
    rid = start_backend(bot)
    spoil(bot.codearts)
    bot.codearts.set_status(BACKEND_ID, 1, "SUCCESS")
    with caplog.at_level(logging.INFO):
        tick(bot)
    (reply,) = results(bot)
    assert "succeeded" in shown(reply) and "produced" not in shown(reply)
    (line,) = not_read_lines(caplog)
    assert f"outputs of build={rid} job=backend no=1 not read, reply sent without" in line
    assert why in line
    assert len(bot.codearts.requests_to(OUTPUT_INFO)) <= 2  # one retry at most
    assert bot.store.get_build(rid).watch is WatchState.DONE


def test_a_slow_output_info_holds_the_reply_back_5_s_at_most(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    rid = start_backend(bot)
    bot.codearts.set_outputs(BACKEND_ID, 1, PRODUCED)
    bot.codearts.hang(60, count=5, path_prefix=OUTPUT_INFO)
    bot.codearts.set_status(BACKEND_ID, 1, "SUCCESS")
    began = time.monotonic()
    tick(bot)
    took = time.monotonic() - began
    (reply,) = results(bot)
    assert "succeeded" in shown(reply) and "produced" not in shown(reply)
    assert OUTPUTS_BUDGET - 0.5 <= took < OUTPUTS_BUDGET + 2.5  # waited for the bound, no more
    (line,) = not_read_lines(caplog)
    assert f"outputs of build={rid}" in line
    assert len(bot.codearts.requests_to(OUTPUT_INFO)) == 1  # no retry past the budget


# --- crash-proof -----------------------------------------------------------------------

class Died(BaseException):
    """The process dies here (as a SIGKILL would stop it): nothing after runs."""


def test_a_holder_dead_between_reading_the_outputs_and_posting_still_posts_once(
        bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    rid = start_backend(bot)
    bot.codearts.set_outputs(BACKEND_ID, 1, PRODUCED)
    bot.codearts.set_status(BACKEND_ID, 1, "SUCCESS")
    engine, store = bot.runtime.engine, bot.store
    dead = Watcher(engine, poll_seconds=POLL, owner="dead", clock=bot.clock)
    bot.clock.advance(POLL + 1)
    (leased,) = store.lease_due(owner="dead", now=bot.clock(), lease_seconds=dead.lease,
                                limit=10)
    lease = Lease("dead", leased.lease_token, dead.lease)
    assert store.begin_report(id=rid, owner="dead", token=lease.token, result="success",
                              duration_ms=1000, now=bot.clock())
    outputs = engine.reports.outputs
    real_read = outputs.read

    def read_then_die(build: Any, result: str) -> Outputs | None:
        real_read(build, result)
        raise Died

    monkeypatch.setattr(outputs, "read", read_then_die)
    build = store.get_build(rid)
    with pytest.raises(Died):
        engine.report(replace(build, watch=WatchState.REPORTING), lease)
    monkeypatch.setattr(outputs, "read", real_read)
    assert results(bot) == [] and len(bot.codearts.requests_to(OUTPUT_INFO)) == 1
    # its lease runs out; after the grace another holder takes the report over, looks in
    # the thread, reads the outputs again and posts the reply once
    bot.clock.advance(dead.lease + 1 + INTENT_GRACE)
    assert bot.runtime.watcher.run_once() == 1
    (reply,) = results(bot)
    assert "*What it produced* (3):" in shown(reply)
    assert len(bot.codearts.requests_to(OUTPUT_INFO)) == 2
    tick(bot)
    assert len(results(bot)) == 1
    assert [r["decision"] for r in store.audit_rows(request_id=rid)].count("finished") == 1
    dead.stop(1)


def test_a_reply_slack_refused_for_now_reads_the_outputs_again_and_posts_once(
        bot: Bot) -> None:
    rid = start_backend(bot)
    bot.codearts.set_outputs(BACKEND_ID, 1, PRODUCED)
    bot.codearts.set_status(BACKEND_ID, 1, "SUCCESS")
    bot.slack.error("chat.postMessage", "internal_error")
    tick(bot)
    assert results(bot) == [] and bot.store.get_build(rid).watch is WatchState.REPORTING
    tick(bot, 60)
    (reply,) = results(bot)
    assert "*What it produced* (3):" in shown(reply)
    assert len(bot.codearts.requests_to(OUTPUT_INFO)) == 2
    tick(bot, 900)
    assert len(results(bot)) == 1


# --- followed builds -------------------------------------------------------------------------

def test_a_followed_build_lists_what_it_produced_in_its_thread(bot: Bot) -> None:
    resp, url = bot.command("subscribe backend")
    assert "subscribed" in bot.reply(resp, url)["text"]
    bot.wait_idle()
    console = bot.codearts.start_elsewhere(BACKEND_ID)
    tick(bot)
    (announced,) = [c for c in bot.slack.calls("chat.postMessage")
                    if (c.get("metadata") or {}).get("event_type") == BUILD_EVENT]
    bot.codearts.set_outputs(BACKEND_ID, console.number, PRODUCED)
    bot.codearts.set_status(BACKEND_ID, console.number, "SUCCESS")
    tick(bot)
    (reply,) = results(bot)
    assert reply.get("thread_ts") and announced["channel"] == reply["channel"] == "CBUILDS"
    text = shown(reply)
    assert "in CodeArts" in text and "succeeded" in text  # started by its executor
    assert "*What it produced* (3):" in text and ":whale: image *backend-api*" in text
    assert "s3cr3tpass" not in text


def test_a_followed_build_whose_outputs_cannot_be_read_still_gets_its_result(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    resp, url = bot.command("subscribe backend")
    bot.reply(resp, url)
    bot.wait_idle()
    console = bot.codearts.start_elsewhere(BACKEND_ID)
    tick(bot)
    bot.codearts.set_outputs(BACKEND_ID, console.number, "garbage")
    bot.codearts.set_status(BACKEND_ID, console.number, "SUCCESS")
    tick(bot)
    (reply,) = results(bot)
    assert "succeeded" in shown(reply) and "produced" not in shown(reply)
    assert len(not_read_lines(caplog)) == 1


# --- the client's reading ---------------------------------------------------------------------

@pytest.fixture
def client() -> Iterator[tuple[FakeCodeArts, CodeArtsClient]]:
    with FakeCodeArts() as fake:
        fake.add_job(BACKEND_ID)
        with CodeArtsClient(fake.url, auth=TokenAuth(fake.token), backoff=0.0) as api:
            api.run_build({"job_id": BACKEND_ID})
            yield fake, api


@pytest.mark.parametrize("result, expected", [
    (None, []),
    ({}, []),
    ({"package_info": None, "package_infos": None, "image_infos": None}, []),
    ({"package_info": "odd", "package_infos": [1, "x", None], "image_infos": 7}, []),
    ({"package_infos": {"by-key": {"version": 3, "uri": None}}},
     [("package", "by-key", "3", "")]),
    ({"image_infos": [{"uri": "swr.example.com/a:1"}, {"name": "", "uri": ""}]},
     [("image", "(no name)", "", "swr.example.com/a:1")]),
    ({"package_info": {"name": "a\nb\x1b[31m", "version": "1", "uri": "x", "extra": [1]}},
     [("package", "a b [31m", "1", "x")]),
    ({"package_info": {"name": "n" * 900, "version": "v", "uri": "u"}},
     [("package", "n" * 499 + "…", "v", "u")]),
])
def test_odd_records_are_skipped_or_read_defensively(
        client: tuple[FakeCodeArts, CodeArtsClient], result: Any,
        expected: list[tuple[str, str, str, str]]) -> None:
    fake, api = client
    fake.set_outputs(BACKEND_ID, 1, result)
    got = api.build_outputs(BACKEND_ID, 1)
    assert [(o.kind, o.name, o.version, o.address) for o in got.items] == expected
    assert got.total == len(expected)


@pytest.mark.parametrize("result", ["garbage", ["a", "list"], 42, True])
def test_a_result_that_is_not_an_object_is_unreadable(
        client: tuple[FakeCodeArts, CodeArtsClient], result: Any) -> None:
    fake, api = client
    fake.set_outputs(BACKEND_ID, 1, result)
    with pytest.raises(BadResponseError):
        api.build_outputs(BACKEND_ID, 1)


def test_an_envelope_saying_fail_is_an_error_and_the_bots_token_is_never_shown(
        client: tuple[FakeCodeArts, CodeArtsClient]) -> None:
    fake, api = client
    fake.fail_next(200, body={"status": "fail", "result": None, "error": {
        "error_code": "DEVCB.00031006", "error_msg": "Build record not found."}},
        path_prefix=OUTPUT_INFO)
    with pytest.raises(ApiError):
        api.build_outputs(BACKEND_ID, 1)
    fake.set_outputs(BACKEND_ID, 1, {"package_info": record(
        f"app-{fake.token}", "1", f"https://repo.example.com/{fake.token}/app")})
    (out,) = api.build_outputs(BACKEND_ID, 1).items
    assert fake.token not in out.address + out.name and "**********" in out.address


def test_a_huge_answer_is_read_within_bounds(
        client: tuple[FakeCodeArts, CodeArtsClient]) -> None:
    fake, api = client
    many = {f"p{i}": record(f"p{i}", "1", f"obs://b/p{i}") for i in range(OUTPUTS_READ + 50)}
    fake.set_outputs(BACKEND_ID, 1, {"package_infos": many})
    got = api.build_outputs(BACKEND_ID, 1)
    assert len(got.items) == OUTPUTS_READ and got.total == OUTPUTS_READ + 50


def test_a_budget_spent_on_a_failed_try_leaves_no_retry_past_it(
        client: tuple[FakeCodeArts, CodeArtsClient]) -> None:
    fake, api = client
    fake.hang(0.6, path_prefix=OUTPUT_INFO)  # the first try: a 503 after 0.6 s
    fake.fail_next(503, path_prefix=OUTPUT_INFO)
    fake.hang(10, path_prefix=OUTPUT_INFO)  # the retry: no answer in time
    began = time.monotonic()
    with pytest.raises(CodeArtsError):
        api.build_outputs(BACKEND_ID, 1, budget=1.0)
    assert time.monotonic() - began < 1.4  # the retry had what was left: 0.4 s, not 1 s
    assert len(fake.requests_to(OUTPUT_INFO)) == 2


def test_the_longest_list_keeps_to_slacks_limits() -> None:
    long = "<!channel>&`" * 50
    outputs = Outputs(items=tuple(Output(kind="package", name=long[:500], version=long[:500],
                                         address=long[:500]) for _ in range(OUTPUTS_READ)),
                      total=10_000)
    reply = msg.result_reply(build_id="b" * 32, user_id="U1", job_name="backend",
                             daily="20261207.1", result="success", duration_ms=1000,
                             link=None, outputs=outputs)
    sections = [b["text"]["text"] for b in reply["blocks"] if b["type"] == "section"]
    assert all(len(t) <= msg.SECTION_CHARS for t in sections)
    assert len(reply["blocks"]) <= 13
    assert sum(t.count("\n• ") + t.startswith("• ") for t in sections) == msg.MAX_OUTPUTS
    assert "… and 9990 more" in sections[-1]
