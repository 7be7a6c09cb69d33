"""The Slack budget: one bucket per method (per channel for chat.postMessage), paced to
Slack's limits, spent most urgent first, paused for everyone by a 429. Time is a seam:
the budget and the Slack stand-in share a clock that moves only when a call waits, so
these tests pace calls without sleeping."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import messages as msg
from bot.lifecycle import PROGRESS_MAX_DELAY, progress_line, progress_pace
from bot.notifier import Notifier
from bot.settings import SettingsError, load_settings
from bot.slack_budget import (
    DEFAULT_LIMITS,
    PER_CHANNEL,
    Priority,
    SlackBudget,
    parse_limits,
)
from bot.slack_io import make_web_client
from bot.standins.slack import FakeSlack
from tests.harness import running_bot


class FakeTime:
    """A clock that moves only when a call waits (single-threaded tests)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wait(self, cond: threading.Condition, seconds: float) -> None:
        self.now += seconds


def budget(limits: dict[str, int] | None = None, **kw: object) -> tuple[SlackBudget, FakeTime]:
    time = FakeTime()
    return SlackBudget(limits, clock=time, wait=time.wait, **kw), time  # type: ignore[arg-type]


# --- pacing ---------------------------------------------------------------------------------

def test_calls_are_paced_to_the_methods_limit_after_a_short_burst() -> None:
    b, time = budget({"chat.update": 60})  # one a second, bursts of 3, one kept in hand
    start, at = time.now, []
    for _ in range(8):
        assert b.acquire("chat.update", "C1", priority=Priority.RESULT)
        at.append(round(time.now - start, 6))
    assert at == [0, 0, 1, 2, 3, 4, 5, 6]


def test_slacks_documented_limits_are_the_defaults() -> None:
    b, time = budget()
    b.acquire("chat.update")  # chat.update, Tier 3: a burst of 3 s of calls (2.5), less
    assert time.now == 1000.0  # the one kept in hand: 1.5 at once
    b.acquire("chat.update")
    assert time.now == pytest.approx(1000.0 + 60 / 50 * 0.5, abs=0.01)  # then 50 a minute
    b.acquire("chat.update")
    assert time.now == pytest.approx(1000.0 + 60 / 50 * 1.5, abs=0.01)
    assert parse_limits(None) == DEFAULT_LIMITS
    assert DEFAULT_LIMITS["chat.postEphemeral"] == 100 and "chat.postMessage" in PER_CHANNEL


def test_chat_post_message_is_paced_per_channel() -> None:
    b, time = budget({"chat.postMessage": 60})
    for _ in range(2):  # a burst of 3, one kept in hand
        b.acquire("chat.postMessage", "C1")
    b.acquire("chat.postMessage", "C2")  # another channel has its own second
    assert time.now == 1000.0
    b.acquire("chat.postMessage", "C1")
    assert time.now == 1001.0


def test_replicas_split_the_limit() -> None:
    b, time = budget({"chat.update": 60}, share=lambda: 2)  # each takes half
    for _ in range(2):  # a burst of 3 s at half a call a second: 1.5 tokens, 0.5 in hand
        b.acquire("chat.update")
    assert time.now == pytest.approx(1002.0)


def test_a_method_with_no_known_limit_is_not_paced() -> None:
    b, time = budget({})
    for _ in range(100):
        assert b.acquire("chat.update") and b.take("chat.update")
    assert time.now == 1000.0


def test_a_call_that_gets_no_token_in_time_gives_up() -> None:
    b, time = budget({"chat.update": 1})  # one a minute
    assert b.acquire("chat.update")
    assert not b.acquire("chat.update", max_wait=10.0)
    assert time.now == pytest.approx(1010.0)


# --- a 429 pauses everyone ----------------------------------------------------------------------

def test_a_429_pauses_the_method_for_every_caller() -> None:
    b, time = budget({"chat.update": 600})
    b.pause("chat.update", None, 7.0)
    assert not b.take("chat.update") and b.busy("chat.update")
    assert b.acquire("chat.update", priority=Priority.ANSWER)
    assert time.now >= 1007.0
    b.pause("chat.postMessage", "C1", 5.0)  # per channel: only C1 waits
    before = time.now
    b.acquire("chat.postMessage", "C2")
    assert time.now == before


# --- who is waiting -------------------------------------------------------------------------

def test_progress_never_waits_and_spends_only_what_the_others_leave() -> None:
    b, time = budget({"chat.update": 60})  # bursts of 3; progress keeps half of it free
    assert b.take("chat.update")  # 3 -> 2
    assert not b.take("chat.update")  # 2 left: taking one would leave less than half
    assert time.now == 1000.0 and b.skipped == 1
    assert b.acquire("chat.update", priority=Priority.RESULT)  # a result still may
    assert b.acquire("chat.update", priority=Priority.PROGRESS) is False  # never waits


def test_waiters_are_served_most_urgent_first() -> None:
    """Progress, an announcement, a result and an answer all want the last token of an
    empty bucket; they arrive least urgent first. Tokens go to the answer, the result,
    then the announcement; progress got none."""
    clock = {"now": 1000.0}
    b = SlackBudget({"chat.update": 60}, clock=lambda: clock["now"],
                    wait=lambda cond, s: cond.wait(0.002))
    b.pause("chat.update", None, 1.0)  # empty, for one second
    served: list[str] = []
    lock = threading.Lock()

    def call(name: str, priority: Priority) -> None:
        if b.acquire("chat.update", priority=priority, max_wait=60.0):
            with lock:
                served.append(name)

    assert not b.take("chat.update")
    threads = []
    for name, priority in (("announce", Priority.ANNOUNCE), ("result", Priority.RESULT),
                           ("answer", Priority.ANSWER)):
        t = threading.Thread(target=call, args=(name, priority))
        t.start()
        threads.append(t)
        bucket = b._buckets[("chat.update", "")]
        while len(bucket.waiting) < len(threads):  # each queued before the next comes
            threading.Event().wait(0.001)
    clock["now"] += 2.0  # the pause is over; the bucket starts empty, one call in hand
    for n in range(1, 4):  # then one token a second
        clock["now"] += 1.0
        deadline = threading.Event()
        for _ in range(2000):  # at most 2 s of real time for the waiter to wake
            with lock:
                if len(served) >= n:
                    break
            deadline.wait(0.001)
    for t in threads:
        t.join(5)
    assert served == ["answer", "result", "announce"]


# --- the limits as settings -----------------------------------------------------------------

def test_limits_are_settings_over_slacks_values() -> None:
    limits = parse_limits(" chat.update=40 , chat.postMessage=30,views.publish=200")
    assert limits["chat.update"] == 40 and limits["chat.postMessage"] == 30
    assert limits["views.publish"] == 200 and limits["chat.postEphemeral"] == 100


@pytest.mark.parametrize("text", ["chat.update", "chat.update=0", "chat.update=fast",
                                  "=50", "chat.update=²"])
def test_an_unreadable_limit_is_refused_with_what_to_write(text: str) -> None:
    with pytest.raises(ValueError, match="is not method=<calls a minute"):
        parse_limits(text)


def test_a_bad_slack_rate_limits_setting_stops_the_start(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setenv("SLACK_RATE_LIMITS", "chat.update=lots")
    with pytest.raises(SettingsError) as caught:
        load_settings(slack_bot_token="xoxb-1-2-abc", slack_signing_secret="s" * 32,
                      codearts_token="t" * 40, codearts_project_id="p" * 32)
    assert "SLACK_RATE_LIMITS" in str(caught.value)


# --- through the Slack stand-in, which enforces the same limits ---------------------------------

@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def notifier(slack: FakeSlack, time: FakeTime, limits: dict[str, int],
             paced: bool = True) -> Notifier:
    b = SlackBudget(limits, clock=time, wait=time.wait)
    client = make_web_client("xoxb-test", slack.api_url, backoff=0.0, limited=b.pause)
    if not paced:
        client.retry_handlers = []  # every 429 comes back to the caller at once
    return Notifier(client, backoff=0.0, budget=b if paced else None)


LIMITS = {"chat.postMessage": 60, "chat.update": 50}


def test_paced_calls_get_no_429_from_slacks_limits(slack: FakeSlack) -> None:
    time = FakeTime()
    slack.enforce_limits(LIMITS, per_channel=PER_CHANNEL, clock=time)
    voice = notifier(slack, time, LIMITS)
    for n in range(12):
        assert voice.post("C1", {"text": f"result {n}"}, thread_ts="1.1").ok
        assert voice.update("C1", "1.1", {"text": f"done {n}"}).ok
    assert slack.rate_limited() == []
    assert len(slack.calls("chat.postMessage")) == len(slack.calls("chat.update")) == 12
    assert 1000.0 + 8.0 <= time.now <= 1000.0 + 13.0  # about as fast as Slack allows


def test_unpaced_calls_hit_slacks_limits(slack: FakeSlack) -> None:
    """The same calls without the budget: the stand-in's limits are real."""
    time = FakeTime()
    slack.enforce_limits(LIMITS, per_channel=PER_CHANNEL, clock=time)
    voice = notifier(slack, time, LIMITS, paced=False)
    sent = [voice.post("C1", {"text": f"result {n}"}, thread_ts="1.1") for n in range(12)]
    assert sum(not s.ok for s in sent) == 9 and len(slack.rate_limited()) == 9
    assert all(s.error == "ratelimited" and not s.permanent for s in sent if not s.ok)


def test_paced_calls_reaching_slack_unevenly_late_get_no_429(slack: FakeSlack) -> None:
    """A call reaches Slack a little after its token was taken (threads, the network),
    and not by the same delay each time: Slack's bucket sees calls closer together than
    the budget spent them. The budget keeps one call in hand, so Slack's bucket is never
    the one that runs dry (bench.slack_limits found 429s from this alone)."""
    time = FakeTime()
    delays = itertools.cycle([0.5, 0.0, 0.3, 0.0])  # how late each call reaches Slack
    arrived = [time.now]

    def arrival() -> float:  # Slack's clock: the budget's, plus this call's delay
        arrived.append(max(arrived[-1], time.now + next(delays)))  # (in arrival order)
        return arrived[-1]

    slack.enforce_slack_limits(arrival)
    voice = notifier(slack, time, DEFAULT_LIMITS)
    for n in range(20):
        assert voice.update("C1", "1.1", {"text": f"done {n}"}).ok
    assert slack.rate_limited() == []
    # still at Slack's rate: 1.5 calls at once, then 50 a minute
    assert time.now - 1000.0 == pytest.approx((20 - 1.5) * 60 / 50, abs=0.05)


def test_a_429_from_slack_pauses_the_method_for_everyone(slack: FakeSlack) -> None:
    time = FakeTime()
    voice = notifier(slack, time, LIMITS)
    slack.fail("chat.update", status=429, retry_after=11, body={"ok": False,
                                                                "error": "ratelimited"})
    assert not voice.update("C1", "1.1", {"text": "result"}).ok  # 11 s: not waited in-call
    assert voice.budget is not None and voice.budget.busy("chat.update")
    progress = voice.update_now("C2", "2.2", {"text": "Running for 2 min"})
    assert not progress.ok and progress.error == "budget"  # progress puts itself off
    # a result waits its turn up to 10 s (the bound on a live call), then is retried later
    gave_up = voice.update("C3", "3.3", {"text": "another result"})
    assert not gave_up.ok and gave_up.error == "ratelimited" and not gave_up.permanent
    assert time.now == pytest.approx(1010.0)
    assert slack.calls("chat.update") == []  # nothing was sent into the pause
    assert voice.update("C3", "3.3", {"text": "another result"}).ok  # the pause is over
    assert time.now >= 1011.0
    assert [c["channel"] for c in slack.calls("chat.update")] == ["C3"]


# --- progress slows down, and says so -------------------------------------------------------

def test_progress_slows_down_as_the_budget_tightens_and_says_so() -> None:
    spare = 50 / 60 * 0.5  # what chat.update's default budget leaves progress, a second
    assert progress_pace(every=10.0, messages=3, spare_per_second=spare) == 10.0
    assert progress_pace(every=10.0, messages=100, spare_per_second=spare) == \
        pytest.approx(240.0)
    assert progress_pace(every=10.0, messages=5000, spare_per_second=spare) == \
        PROGRESS_MAX_DELAY
    assert progress_pace(every=10.0, messages=5000, spare_per_second=None) == 10.0
    line = progress_line(125.0, None, busy_every=240.0)
    assert line == "Running for over 2 min · updated every 4 min while Slack is busy"
    assert progress_line(125.0, None) == "Running for over 2 min"


# --- who waits, through the bot --------------------------------------------------------------

def test_a_run_clicks_channel_message_is_spent_as_an_answer(db_url: str,
                                                            tmp_path: Path) -> None:
    """The person who clicked Run waits for the build's channel message (their answer
    names the channel), so it is spent as an answer, ahead of results queued in that
    channel; a result's thread reply and message update are spent as results
    (bench.slack_limits found Run answers waiting up to 10 s behind a burst of results)."""
    with running_bot(db_url, tmp_path) as bot:
        asked: list[tuple[str, Priority]] = []
        acquire = bot.runtime.budget.acquire

        def noted(method: str, channel: str | None = None, *,
                  priority: Priority = Priority.ANSWER, max_wait: float = 30.0) -> bool:
            asked.append((method, priority))
            return acquire(method, channel, priority=priority, max_wait=max_wait)

        bot.runtime.budget.acquire = noted  # type: ignore[method-assign]
        rid, url = bot.confirmation("backend")
        assert bot.click(msg.RUN, rid, response_url=url).status_code == 200
        bot.wait_idle()
        assert ("chat.postMessage", Priority.ANSWER) in asked
        assert [c for c in bot.slack.calls("chat.postMessage") if not c.get("thread_ts")]
        asked.clear()
        bot.clock.advance(60)  # the build ends; its result is spent as a result
        bot.runtime.watcher.run_once()
        bot.slack.wait_for(lambda: [c for c in bot.slack.calls("chat.postMessage")
                                    if c.get("thread_ts")])
        assert ("chat.postMessage", Priority.RESULT) in asked
        assert ("chat.update", Priority.RESULT) in asked
        assert ("chat.postMessage", Priority.ANSWER) not in asked
