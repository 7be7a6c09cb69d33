"""The state machine on its own: the table of moves, and the pure decisions."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from slack_sdk.models.blocks import Block

from bot import lifecycle as lc
from bot.codearts.answers import BuildState
from bot.codearts.errors import (
    ApiError,
    AuthError,
    BadResponseError,
    NotSentError,
    OutcomeUnknownError,
)
from bot.lifecycle import AnnounceState, RequestState, WatchState
from bot.store import Store

ALL_STATES: list[lc.State] = [*RequestState, *AnnounceState, *WatchState]


def build(**changes: object) -> lc.Build:
    base = lc.Build(id="b" * 32, created_at=0.0, user_id="U1", channel_id="C1",
                    job_name="backend", job_id="f" * 32, build_no="7",
                    daily_build_number="20261130.7", response_url=None,
                    announce=AnnounceState.POSTED, announce_claimed_at=0.0,
                    message_channel="C1", message_ts="1.2", watch=WatchState.WATCHING,
                    next_check_at=0.0, lease_owner="me", lease_until=60.0, lease_token=1,
                    failures=0,
                    result=None, duration_ms=None, finished_at=None, age=30.0)
    return replace(base, **changes)  # type: ignore[arg-type]


# --- the table ----------------------------------------------------------------------

EXPECTED_MOVES = {
    ("pending", "running"), ("pending", "cancelled"), ("pending", "expired"),
    ("running", "started"), ("running", "failed"), ("running", "unknown"),
    ("posting", "posted"), ("posting", "fallback"),
    ("watching", "reporting"), ("reporting", "done"),
    # approval by a second person
    ("pending", "awaiting"), ("awaiting", "running"), ("awaiting", "rejected"),
    ("awaiting", "withdrawn"), ("awaiting", "expired"), ("awaiting", "failed"),
    # the queue (a job at its max_running)
    ("pending", "queued"), ("awaiting", "queued"), ("queued", "running"),
    ("queued", "withdrawn"), ("queued", "expired"),
    # the checks of a run, made again just before sending, say no
    ("running", "refused"),
}


def test_the_table_allows_exactly_the_documented_moves() -> None:
    moves = {(a.value, b.value) for a, b in itertools.product(ALL_STATES, ALL_STATES)
             if lc.allowed(a, b)}
    assert moves == EXPECTED_MOVES


def test_a_move_the_table_does_not_allow_is_refused_before_any_write() -> None:
    with pytest.raises(lc.IllegalTransition, match="started -> pending"):
        lc.check(RequestState.STARTED, RequestState.PENDING)
    with pytest.raises(lc.IllegalTransition):  # no move across kinds, even with equal words
        lc.check(RequestState.PENDING, WatchState.DONE)


def test_every_state_is_reachable_from_an_initial_state() -> None:
    seen = set(lc.INITIAL)
    frontier = list(lc.INITIAL)
    while frontier:
        for nxt in lc.TRANSITIONS.get(frontier.pop(), frozenset()):
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(ALL_STATES)


def test_the_store_refuses_a_move_the_table_does_not_allow(store: Store) -> None:
    store.add_request(id="r" * 32, state=RequestState.PENDING, now=1.0, ttl=60, user_id="U1",
                      team_id=None, channel_id="C1", job_name="backend", job_id="f" * 32,
                      command="backend", body={}, response_url=None)
    with pytest.raises(lc.IllegalTransition):
        store.move_request(id="r" * 32, old=RequestState.PENDING, new=RequestState.STARTED,
                           now=2.0)
    assert store.get_request("r" * 32).state is RequestState.PENDING  # type: ignore[union-attr]


# --- run answers ----------------------------------------------------------------------

@pytest.mark.parametrize(("exc", "state", "words"), [
    (ApiError(400, "CB.1", "bad"), RequestState.FAILED, "nothing was started"),
    (AuthError(401, "", ""), RequestState.FAILED, "nothing was started"),
    (NotSentError("POST", "/v3/jobs/build", 3, "connection refused"), RequestState.FAILED,
     "nothing was started"),
    (OutcomeUnknownError("POST", "/v3/jobs/build", "timed out"), RequestState.UNKNOWN,
     "checking the task's build history"),
    (BadResponseError(200, None, "<html>"), RequestState.UNKNOWN,
     "checking the task's build history"),
    (ApiError(502, "CB.00060100", "Network busy"), RequestState.UNKNOWN,
     "checking the task's build history"),
])
def test_a_run_error_is_worded_by_whether_anything_may_have_started(
        exc: Exception, state: RequestState, words: str) -> None:
    failure = lc.decide_run_failure("backend", exc)  # type: ignore[arg-type]
    assert failure.state is state
    assert words in failure.reply["text"]
    assert lc.allowed(RequestState.SENDING, failure.state)


@pytest.mark.parametrize(("exc", "shown"), [
    (ApiError(503, "CB.00060100", "Network busy", "rid-503"), "\nRequest ID `rid-503`"),
    (BadResponseError(502, "gw-1", "<html>"), "\nRequest ID `gw-1`"),
    (BadResponseError(200, "rid-200", "{}", "a run answer without a usable build number"),
     "\nRequest ID `rid-200`"),
    (ApiError(400, "CB.1", "bad", "rid-400"), "\nHTTP 400, request ID `rid-400`"),
    (AuthError(401, "x", "wrong", "iam-1"), "\nIAM answered HTTP 401, request ID `iam-1`"),
])
def test_a_run_error_from_an_answer_shows_its_request_id(exc: Exception, shown: str) -> None:
    failure = lc.decide_run_failure("backend", exc)  # type: ignore[arg-type]
    assert failure.reply["text"].endswith(shown)


@pytest.mark.parametrize("exc", [
    OutcomeUnknownError("POST", "/v3/jobs/build", "ReadTimeout"),
    OutcomeUnknownError("POST", "/v3/jobs/build", "RemoteProtocolError"),
    NotSentError("POST", "/v3/jobs/build", 4, "ConnectError"),
    ApiError(503, "CB.00060100", "Network busy"),  # an answer without the header
])
def test_a_run_error_without_a_request_id_says_nothing_of_one(exc: Exception) -> None:
    failure = lc.decide_run_failure("backend", exc)  # type: ignore[arg-type]
    assert "request id" not in failure.reply["text"].lower()


def test_a_settlement_carries_the_request_id_of_an_unreadable_history() -> None:
    assert lc.Settlement("unknown").request_id is None
    assert lc.Settlement("unknown", request_id="hist-1").request_id == "hist-1"


# --- polls ----------------------------------------------------------------------------

def running() -> BuildState:
    return BuildState(status="running", finished=False)


def test_a_running_build_is_checked_again_after_the_interval_for_its_age() -> None:
    assert lc.decide_poll(build(age=30), running(), poll=15).delay == 15
    assert lc.decide_poll(build(age=900), running(), poll=15).delay == 30
    assert lc.decide_poll(build(age=7200), running(), poll=15).delay == 60


def test_an_ended_build_moves_to_reporting_with_its_result_and_duration() -> None:
    start = datetime(2026, 11, 30, tzinfo=UTC)
    ended = BuildState(status="success", finished=True, outcome="success", start_time=start,
                       finish_time=start + timedelta(seconds=90))
    decision = lc.decide_poll(build(), ended, poll=15)
    assert (decision.watch, decision.result, decision.duration_ms) == \
        (WatchState.REPORTING, "success", 90_000)


def test_status_errors_back_off_with_a_cap_and_age_out() -> None:
    error = NotSentError("GET", "/v4/jobs", 3, "down")
    delays = [lc.decide_poll(build(failures=n), error, poll=15).delay for n in range(12)]
    assert delays == sorted(delays) and delays[-1] == lc.MAX_ERROR_BACKOFF
    old = build(age=lc.MAX_AGE + 1)
    assert lc.decide_poll(old, error, poll=15).result == "timeout"
    assert lc.decide_poll(old, running(), poll=15).result == "timeout"


# --- Slack refusing a result ----------------------------------------------------------

def test_a_final_slack_refusal_ends_the_watch_with_a_direct_message() -> None:
    decision = lc.decide_report_refused(build(watch=WatchState.REPORTING), permanent=True)
    assert decision.retry_in is None and decision.direct_message


def test_a_passing_slack_refusal_backs_off_with_a_cap_then_ages_out() -> None:
    waits = [lc.decide_report_refused(build(watch=WatchState.REPORTING, failures=n),
                                      permanent=False).retry_in for n in range(12)]
    assert waits[0] == lc.REPORT_RETRY and waits[-1] == lc.MAX_REPORT_BACKOFF
    assert waits == sorted(waits)  # type: ignore[type-var]
    aged = lc.decide_report_refused(build(watch=WatchState.REPORTING, age=lc.MAX_AGE + 1),
                                    permanent=False)
    assert aged.retry_in is None and aged.direct_message


def test_the_direct_message_fallback_is_valid_block_kit() -> None:
    from bot import messages as msg

    reply = msg.result_reply(build_id="b", user_id="U1", job_name="backend", daily="1.1",
                             result="failure", duration_ms=1000, link=None)
    sent = msg.result_elsewhere(reply, channel="C1", error="is_archived")
    assert "is_archived" in sent["text"] and "<#C1>" in sent["text"]
    for block in sent["blocks"]:
        assert Block.parse(block) is not None
        Block.parse(block).validate_json()  # type: ignore[union-attr]


def test_an_unknown_final_word_with_a_finish_time_is_reported_as_ended_with_the_word() -> None:
    start = datetime(2026, 11, 30, tzinfo=UTC)
    ended = BuildState(status="TIMEOUT", finished=True, outcome="ended", start_time=start,
                       finish_time=start + timedelta(seconds=5))
    decision = lc.decide_poll(build(), ended, poll=15)
    assert (decision.watch, decision.result) == (WatchState.REPORTING, "ended:TIMEOUT")
