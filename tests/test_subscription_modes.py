"""Subscription modes and filters (issue 28): ``changes`` (a branch breaks, a branch is
fixed), ``branch=<glob>``, ``failures`` and ``changes`` taking builds started from Slack
in another channel, one subscription per job and channel, and each flip said once per
channel across a restart, a bot that was down, and two replicas. Signed requests into the
real endpoint, the Slack and CodeArts stand-ins on loopback, a real database; time moves
through the harness clock (the stand-in's builds end on it)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bot import messages as msg
from bot.command import ParseError, SubscribeCommand, parse
from bot.notifier import BUILD_EVENT, RESULT_EVENT
from tests.harness import BACKEND_ID, Bot, run_value, running_bot

POLL = 15.0
TAKES = 60.0  # seconds a build of the stand-in runs
CONFIG = f"""
admins = ["UADMIN"]

[jobs.backend]
id = "{BACKEND_ID}"
description = "Backend CI"
users = ["UALICE"]
channels = ["CBUILDS", "CRELEASE"]

[jobs.backend.params.codeBranch]
default = "master"
"""


@pytest.fixture
def bot(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path, poll=POLL, config=CONFIG) as b:
        b.codearts.add_job(BACKEND_ID, duration=TAKES, log="[INFO] compiling\n[ERROR] boom\n")
        yield b


def say(bot: Bot, text: str, *, user: str = "UALICE", channel: str = "CBUILDS") -> dict:
    resp, url = bot.command(text, user=user, channel=channel)
    shown = bot.reply(resp, url)
    bot.wait_idle()
    return shown


def console(bot: Bot, outcome: str, branch: str = "master", **kw: Any) -> str:
    """A build started outside Slack (the console, a push, a timer) that will end with
    ``outcome`` after ``TAKES`` seconds; its number."""
    return str(bot.codearts.start_elsewhere(BACKEND_ID, branch=branch, outcome=outcome,
                                            **kw).number)


def from_slack(bot: Bot, channel: str, branch: str = "master") -> str:
    """A backend build run from Slack in ``channel`` (Run clicked); its number."""
    before = len(bot.codearts.builds(BACKEND_ID))
    resp, url = bot.command(f"backend codeBranch={branch}", channel=channel)
    question = bot.reply(resp, url)
    bot.click(msg.RUN, run_value(question), response_url=url, channel=channel)
    bot.slack.wait_for(lambda: len(bot.codearts.builds(BACKEND_ID)) > before)
    bot.wait_idle()
    return str(len(bot.codearts.builds(BACKEND_ID)))


def passes(bot: Bot, n: int = 1, seconds: float = POLL + 1) -> None:
    for _ in range(n):
        bot.clock.advance(seconds)
        bot.runtime.watcher.run_once()


def ended(bot: Bot) -> None:
    """Past the end of every build started so far, and the bot has seen them end."""
    passes(bot, 1, TAKES + 1)
    passes(bot, 2)


def posts(bot: Bot, channel: str | None = None, event: str = RESULT_EVENT) -> list[dict]:
    return [c for c in bot.slack.calls("chat.postMessage")
            if (c.get("metadata") or {}).get("event_type") == event
            and (channel is None or c.get("channel") == channel)]


def daily(bot: Bot, no: str) -> str:
    return bot.codearts.builds(BACKEND_ID)[int(no) - 1].daily


# --- the words -------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("subscribe backend changes", SubscribeCommand("backend", "changes")),
    ("subscribe backend CHANGES branch=release/*",
     SubscribeCommand("backend", "changes", "release/*")),
    ("subscribe backend branch=ma?ter", SubscribeCommand("backend", "all", "ma?ter")),
    ("subscribe backend Branch=main failures", SubscribeCommand("backend", "failures", "main")),
])
def test_modes_and_branch_filters_are_read(text: str, expected: Any) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(("text", "words"), [
    ("subscribe backend sometimes", "`sometimes` is not a mode"),
    ("subscribe backend branch=", "needs a branch or a pattern"),
    ("subscribe backend branch=rel[ea]se", "characters a branch filter does not take ([])"),
    ("subscribe backend branch=a;b", "(;)"),
    ("subscribe backend branch=" + "x" * 101, "at most 100 characters"),
    ("subscribe backend branch=a branch=b", "`branch=` is given twice"),
    ("subscribe branch=main", "needs a job name first"),
    ("subscribe backend codeBranch=x", "looks like a parameter"),
    ("unsubscribe backend branch=x", "looks like a parameter"),
])
def test_bad_modes_and_filters_say_how_to_fix_them(text: str, words: str) -> None:
    parsed = parse(text)
    assert isinstance(parsed, ParseError) and words in parsed.message, parsed


# --- one subscription per job and channel ---------------------------------------------------

def test_subscribing_again_replaces_mode_and_filter_and_says_so(bot: Bot) -> None:
    first = say(bot, "subscribe backend changes branch=release/*")
    assert first["response_type"] == "in_channel"
    assert "only when a branch breaks or is fixed, branches `release/*`" in first["text"]
    listed = say(bot, "subscriptions")["text"]
    assert "`backend`: only when a branch breaks or is fixed, branches `release/*`" in listed
    again = say(bot, "subscribe backend failures")
    assert ("failed builds only (replaces: only when a branch breaks or is fixed, branches "
            "`release/*`)") in again["text"]
    (sub,) = bot.store.subscriptions_of()
    assert (sub.filter, sub.branch) == ("failures", None)
    assert "`backend`: failed builds only ·" in say(bot, "subscriptions")["text"]


# --- changes: broke, fixed, once -------------------------------------------------------------

def test_changes_says_when_a_branch_breaks_and_when_it_is_fixed(bot: Bot) -> None:
    say(bot, "subscribe backend changes")
    good = console(bot, "SUCCESS")
    ended(bot)
    assert posts(bot) == [] and posts(bot, event=BUILD_EVENT) == []  # no flip, no start
    broke = console(bot, "FAILED")
    other = console(bot, "SUCCESS", branch="dev")  # another branch: its own history
    ended(bot)
    (red,) = posts(bot, "CBUILDS")
    assert red["text"].startswith(f"🔴 *backend* broke on `master`: build {daily(bot, broke)} "
                                  f"failed (last good: {daily(bot, good)})")
    assert "[ERROR] boom" in str(red["blocks"])
    assert not red.get("thread_ts")
    again = console(bot, "FAILED")
    bot.clock.advance(600)  # broken for a while longer
    ended(bot)
    assert len(posts(bot)) == 1  # still broken: nothing new
    fixed = console(bot, "SUCCESS")
    ended(bot)
    green = posts(bot, "CBUILDS")[-1]
    assert green["text"].startswith(f"🟢 *backend* is fixed on `master`: build "
                                    f"{daily(bot, fixed)} succeeded (broken for 1")
    assert "min, 2 builds failed in between)" in green["text"]
    console(bot, "SUCCESS")
    ended(bot)
    passes(bot, 3)
    assert len(posts(bot)) == 2
    assert other and again
    details = [r["detail"] for r in bot.store.audit_rows() if r["decision"] == "finished"]
    assert "failure; broke" in details and "success; fixed" in details


def test_a_branch_filter_takes_only_its_branches_in_every_mode(bot: Bot) -> None:
    say(bot, "subscribe backend branch=release/*")
    say(bot, "subscribe backend failures branch=hotfix-?", channel="CRELEASE")
    kept = console(bot, "FAILED", branch="release/1.2")
    console(bot, "FAILED", branch="master")
    console(bot, "FAILED", branch="hotfix-12")  # ? is one character
    hot = console(bot, "FAILED", branch="hotfix-1")
    ended(bot)
    (started,) = posts(bot, "CBUILDS", BUILD_EVENT)
    assert f"(#{kept})" in started["text"]
    (failed,) = posts(bot, "CRELEASE")
    assert f"(#{hot})" in failed["text"]
    record_calls = bot.codearts.requests_to(f"/v1/record/{BACKEND_ID}/", "GET")
    assert len(record_calls) == 4  # one per build, however many channels looked


def test_failures_and_changes_take_slack_builds_of_other_channels_only(bot: Bot) -> None:
    say(bot, "subscribe backend failures")  # in #builds
    say(bot, "subscribe backend changes", channel="CRELEASE")
    here = from_slack(bot, "CBUILDS")  # succeeds; #builds has it in its thread already
    ended(bot)
    there_good = from_slack(bot, "CRELEASE")  # succeeds
    ended(bot)
    there_bad = from_slack(bot, "CBUILDS")
    bot.codearts.set_status(BACKEND_ID, int(there_bad), "FAILED")
    ended(bot)
    # #release: #builds' failure after its own success (the previous finished build on
    # master, whatever channel started it) broke master; #builds' success said nothing
    (red,) = [p for p in posts(bot, "CRELEASE") if not p.get("thread_ts")]
    assert red["text"].startswith(f"🔴 *backend* broke on `master`: build "
                                  f"{daily(bot, there_bad)} failed (last good: "
                                  f"{daily(bot, there_good)})")
    # #builds: its own builds only in their threads; #release's success is no failure
    assert [p for p in posts(bot, "CBUILDS") if not p.get("thread_ts")] == []
    followed = _followed_numbers(bot)
    assert ("CBUILDS", here) not in followed and ("CBUILDS", there_bad) not in followed
    assert ("CBUILDS", there_good) in followed and ("CRELEASE", here) in followed
    assert ("CRELEASE", there_good) not in followed


def test_a_failed_slack_build_of_another_channel_is_shown_without_its_parameters(
        bot: Bot) -> None:
    say(bot, "subscribe backend failures", channel="CRELEASE")
    number = from_slack(bot, "CBUILDS", branch="secret-branch")
    bot.codearts.set_status(BACKEND_ID, int(number), "FAILED")
    ended(bot)
    (failed,) = posts(bot, "CRELEASE")
    assert (f"(#{number}), started from Slack by <@UALICE> in another channel: failed"
            in failed["text"])
    assert "secret-branch" not in str(failed) and "codeBranch" not in str(failed)


def _followed_numbers(bot: Bot) -> set[tuple[str, str]]:
    from bot.store import builds

    with bot.store.engine.connect() as c:
        return {(str(ch), str(no)) for ch, no in c.execute(
            sa.select(builds.c.channel_id, builds.c.build_no)
            .where(builds.c.origin == "subscription"))}


# --- once, across a restart, downtime and replicas ----------------------------------------

def test_a_bot_that_was_down_says_the_flip_once_when_it_comes_back(db_url: str,
                                                                  tmp_path: Path) -> None:
    (tmp_path / "two").mkdir()
    with running_bot(db_url, tmp_path, poll=POLL, config=CONFIG) as one:
        one.codearts.add_job(BACKEND_ID, duration=TAKES)
        say(one, "subscribe backend changes")
        console(one, "SUCCESS")
        ended(one)
        # down: nothing runs the watcher while a build fails and is fixed
        broke = console(one, "FAILED")
        one.clock.advance(TAKES + 1)
        fixed = console(one, "SUCCESS")
        one.clock.advance(TAKES + 1)
        with running_bot(db_url, tmp_path / "two", poll=POLL, config=CONFIG,
                         codearts_endpoint=one.codearts.url,
                         slack_api_url=one.slack.api_url) as two:
            two.clock.advance(one.clock.offset + 1)
            passes(two, 4)
            said = posts(one, "CBUILDS")
            assert [p["text"][:1] for p in said] == ["🔴", "🟢"]
            assert daily(one, broke) in said[0]["text"] and daily(one, fixed) in said[1]["text"]
            passes(two, 3)
            assert len(posts(one)) == 2


def test_a_flip_whose_post_died_is_said_once_after_a_restart(db_url: str,
                                                            tmp_path: Path) -> None:
    """The first process settles the flip and dies before Slack answers; the restart
    (same database, fresh memory) looks in the channel and says it once."""
    from bot.notifier import Delivery

    (tmp_path / "two").mkdir()
    with running_bot(db_url, tmp_path, poll=POLL, config=CONFIG) as one, \
            running_bot(db_url, tmp_path / "two", poll=POLL, config=CONFIG,
                        codearts_endpoint=one.codearts.url,
                        slack_api_url=one.slack.api_url) as two:
        one.codearts.add_job(BACKEND_ID, duration=TAKES)
        say(one, "subscribe backend changes")
        console(one, "SUCCESS")
        ended(one)
        console(one, "FAILED")
        real_post = one.runtime.engine.notifier.post

        def posts_then_dies(channel: str, message: dict, **kw: Any) -> Delivery:
            real_post(channel, message, **kw)  # Slack took it; the answer never came back
            return Delivery(False, error="killed")

        one.runtime.engine.notifier.post = posts_then_dies  # type: ignore[method-assign]
        ended(one)
        assert len(posts(one)) == 1
        two.clock.advance(one.clock.offset + 400)
        passes(two, 4)
        assert len(posts(one)) == 1  # found in the channel, not posted again


def test_two_replicas_on_postgresql_say_each_flip_once_per_channel(pg_url: str,
                                                                  tmp_path: Path) -> None:
    (tmp_path / "two").mkdir()
    with running_bot(pg_url, tmp_path, poll=POLL, config=CONFIG) as one, \
            running_bot(pg_url, tmp_path / "two", poll=POLL, config=CONFIG,
                        codearts_endpoint=one.codearts.url,
                        slack_api_url=one.slack.api_url) as two:
        one.codearts.add_job(BACKEND_ID, duration=TAKES)
        say(one, "subscribe backend changes")
        say(one, "subscribe backend changes", channel="CRELEASE")
        outcomes = ["SUCCESS", "FAILED", "FAILED", "SUCCESS", "FAILED"]

        def advance(seconds: float) -> None:
            """Both clocks move; both replicas beat at once (in real time they beat every
            3 s, so a live one never looks dead to the other)."""
            for replica in (one, two):
                replica.clock.advance(seconds)
            for replica in (one, two):
                assert replica.runtime.heartbeat.beat()

        def both() -> None:
            advance(POLL + 1)
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda r: r.runtime.watcher.run_once(), (one, two)))

        for outcome in outcomes:
            console(one, outcome)
            advance(TAKES + 1)
            for _ in range(3):
                both()
        for channel in ("CBUILDS", "CRELEASE"):
            said = posts(one, channel)
            assert [p["text"][:1] for p in said] == ["🔴", "🟢", "🔴"], [
                (p["text"][:60], p["metadata"]) for p in said]


# --- an older database -------------------------------------------------------------------

def test_subscriptions_made_before_modes_keep_their_meaning_after_the_upgrade(
        db_url: str, tmp_path: Path) -> None:
    """A database from before issue 28 (no branch filter, no record columns): the start
    adds the columns, each old subscription keeps its mode (its filter column) and has no
    branch filter, and it goes on working."""
    from bot.store import Store
    from bot.store.schema import builds, job_watch, subscriptions

    old = Store.from_url(db_url)  # make today's tables, then take the new columns away
    engine = old.engine
    with engine.begin() as c:
        c.execute(subscriptions.insert().values(
            channel_id="CBUILDS", job_name="backend", job_id=BACKEND_ID, filter="failures",
            created_by="UALICE", created_at=0.0, since_no=0))
        c.execute(job_watch.insert().values(job_id=BACKEND_ID, next_check_at=0.0, failures=0))
    for table, column in ((subscriptions, "branch"), (builds, "branch"),
                          (builds, "started_by"), (builds, "trigger"), (builds, "flip")):
        with engine.begin() as c:
            c.execute(sa.text(f'ALTER TABLE {table.name} DROP COLUMN "{column}"'))
    old.close()
    with running_bot(db_url, tmp_path, poll=POLL, config=CONFIG) as b:
        b.codearts.add_job(BACKEND_ID, duration=TAKES, log="[ERROR] boom\n")
        (sub,) = b.store.subscriptions_of()
        assert (sub.filter, sub.branch) == ("failures", None)
        assert "`backend`: failed builds only ·" in say(b, "subscriptions")["text"]
        failed = console(b, "FAILED", branch="anything")
        ended(b)
        (post,) = posts(b, "CBUILDS")
        assert f"(#{failed})" in post["text"] and "failed" in post["text"]


# --- who started it (the build record's executor and trigger, the jobs file's [people]) ----

PEOPLE = CONFIG + """
[people]
"Zhang.San" = "U01ZHANG"
"""


@pytest.fixture
def mapped(db_url: str, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(db_url, tmp_path, poll=POLL, config=PEOPLE) as b:
        b.codearts.add_job(BACKEND_ID, duration=TAKES, log="[ERROR] boom\n")
        yield b


def test_announcements_and_status_say_who_started_a_build_and_how(mapped: Bot) -> None:
    say(mapped, "subscribe backend")
    timer = console(mapped, "SUCCESS", executor="zhang.san", trigger="SCHEDULER")
    push = console(mapped, "FAILED", executor="<!channel> & li.si", trigger="PUSH")
    odd = console(mapped, "SUCCESS", executor="wang.wu", trigger="SOMETHING_NEW")
    passes(mapped)
    started = {p["text"].split("(#")[1].split(")")[0]: p["text"]
               for p in posts(mapped, "CBUILDS", BUILD_EVENT)}
    assert "started by <@U01ZHANG> (by a timer)" in started[timer]
    assert "started by &lt;!channel&gt; &amp; li.si in CodeArts (by a push)" in started[push]
    assert "<!channel>" not in started[push]
    assert started[odd].endswith("started by wang.wu in CodeArts: running")
    ended(mapped)
    (failed,) = [p for p in posts(mapped, "CBUILDS") if f"(#{push})" in p["text"]]
    assert "li.si in CodeArts" in failed["text"]
    status = say(mapped, "status backend")["text"]
    assert "started by <@U01ZHANG> (by a timer)" in status
    assert "started by wang.wu in CodeArts" in status


def test_failure_messages_mention_the_mapped_person_who_started_the_build(mapped: Bot) -> None:
    say(mapped, "subscribe backend failures")
    say(mapped, "subscribe backend changes", channel="CRELEASE")
    console(mapped, "SUCCESS", executor="someone")
    ended(mapped)
    broke = console(mapped, "FAILED", executor="zhang.san", trigger="MANUAL")
    ended(mapped)
    (failed,) = posts(mapped, "CBUILDS")
    assert f"(#{broke}), started by <@U01ZHANG> (manually): failed" in failed["text"]
    (red,) = posts(mapped, "CRELEASE")
    assert red["text"].startswith("🔴") and "Started by <@U01ZHANG>" in red["text"]


def test_stop_and_status_name_a_followed_build_by_its_daily_number(bot: Bot) -> None:
    say(bot, "subscribe backend failures")
    number = console(bot, "SUCCESS")
    passes(bot)  # found: its record read once
    status = say(bot, "status backend")["text"]
    assert f"{daily(bot, number)} (#{number})" in status
    question = say(bot, f"stop backend {number}")["text"]
    assert daily(bot, number) in question and "It is running" in question


def test_a_flip_that_cannot_be_decided_yet_is_said_once_on_a_later_pass(
        bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job's history (which says what came before) cannot be read when the build
    ends: nothing is posted and nothing crashes; a later pass says the flip, once."""
    from bot.codearts.errors import ApiError

    say(bot, "subscribe backend changes")
    console(bot, "SUCCESS")
    ended(bot)
    broke = console(bot, "FAILED")
    reports = bot.runtime.engine.reports
    decide = reports.flip
    failing = [True]

    def unreadable(build: Any) -> Any:
        if failing:
            raise ApiError(503, "CB.00060100", "Network busy, try again later.")
        return decide(build)

    monkeypatch.setattr(reports, "flip", unreadable)
    ended(bot)
    assert posts(bot) == []
    failing.clear()
    passes(bot, 3)
    (red,) = posts(bot, "CBUILDS")
    assert red["text"].startswith(f"🔴 *backend* broke on `master`: build {daily(bot, broke)}")
    passes(bot, 3)
    assert len(posts(bot)) == 1


def test_the_broke_post_carries_on_it_and_the_fixed_post_says_who_was_on_it(bot: Bot) -> None:
    """I'm on it on a ``changes`` failure: the first click takes it; the success that fixes
    the branch closes the claim and its post names who was on it."""
    say(bot, "subscribe backend changes")
    console(bot, "SUCCESS")
    ended(bot)
    console(bot, "FAILED")
    ended(bot)
    (red,) = posts(bot, "CBUILDS")
    (value,) = [e["value"] for b in red["blocks"] if b.get("type") == "actions"
                for e in b["elements"] if e.get("action_id") == msg.ON_IT]
    url = bot.slack.response_url()
    resp = bot.click(msg.ON_IT, value, user="UBOB", channel="CBUILDS", response_url=url)
    assert resp.status_code == 200, resp.text
    bot.wait_idle()
    (taken,) = [u for u in bot.slack.calls("chat.update") if "is on it." in str(u["blocks"])]
    assert "<@UBOB> is on it." in str(taken["blocks"]) and taken["text"] == red["text"]
    console(bot, "SUCCESS")
    ended(bot)
    green = posts(bot, "CBUILDS")[-1]
    assert green["text"].startswith("🟢 *backend* is fixed on `master`")
    assert green["text"].endswith(". <@UBOB> was on it"), green["text"]
    assert msg.ON_IT not in str(green["blocks"])
