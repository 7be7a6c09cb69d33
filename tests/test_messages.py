"""Block Kit builders: pure functions, tested without any fake."""

from __future__ import annotations

import pytest

from bot import messages as msg

BODY = {"job_id": "f" * 32, "parameter": [{"name": "codeBranch", "value": "master"}],
        "scm": {"build_commit_id": "abc1234"}}


def buttons(message: dict) -> list[tuple[str, str, str]]:
    return [(e["text"]["text"], e["action_id"], e["value"])
            for b in message.get("blocks", []) if b["type"] == "actions" for e in b["elements"]]


def test_confirmation_has_run_and_cancel_carrying_only_the_request_key() -> None:
    m = msg.confirmation("r" * 32, "backend", "Backend CI", BODY, minutes=10)
    assert buttons(m) == [("Run", msg.RUN, "r" * 32), ("Cancel", msg.CANCEL, "r" * 32)]
    assert m["response_type"] == "ephemeral"
    assert "`codeBranch` = `master`" in m["text"] and "commit `abc1234`" in m["text"]


@pytest.mark.parametrize("value", ["<!channel>", "<@U123>", "a & b", "<https://evil|ok>"])
def test_user_values_are_shown_never_interpreted(value: str) -> None:
    body = {"job_id": "f" * 32, "parameter": [{"name": "x", "value": value}]}
    for m in (msg.confirmation("r", "backend", "", body, minutes=10),
              msg.announcement(build_id="b", user_id="U1", job_name="backend", description="",
                               body=body, daily="1.1", build_no="1", link=None)):
        flat = str(m)
        assert "<!channel>" not in flat and "<https://evil" not in flat and "<@U123>" not in flat


def test_long_values_are_shortened_and_long_lists_cut() -> None:
    params = [{"name": f"p{i}", "value": "v" * 9000} for i in range(30)]
    m = msg.confirmation("r", "backend", "", {"job_id": "f" * 32, "parameter": params}, minutes=10)
    assert len(m["blocks"][0]["text"]["text"]) <= 3000
    assert "…and 10 more" in m["text"]


@pytest.mark.parametrize("ms,words", [(None, "an unknown time"), (0, "0 s"), (59_999, "59 s"),
                                      (61_000, "1 min 1 s"), (3_720_000, "1 h 2 min")])
def test_duration_reads_like_a_person_would_say_it(ms: int | None, words: str) -> None:
    assert msg.duration(ms) == words


def test_failure_reply_mentions_the_requester_and_offers_rebuild() -> None:
    m = msg.result_reply(build_id="b1", user_id="U1", job_name="backend", daily="20261123.4",
                         result="failure", duration_ms=90_000, link="https://x/y")
    assert m["text"].startswith("<@U1> ") and "failed in 1 min 30 s" in m["text"]
    assert buttons(m) == [("Rebuild", msg.REBUILD, "b1")]
    ok = msg.result_reply(build_id="b1", user_id="U1", job_name="backend", daily="d",
                          result="success", duration_ms=1000, link=None)
    assert "<@U1>" not in ok["text"] and "succeeded" in ok["text"]


def test_announcement_offers_stop_and_done_offers_rebuild() -> None:
    a = msg.announcement(build_id="b1", user_id="U1", job_name="backend", description="",
                         body=BODY, daily="20261123.4", build_no="4", link="https://x")
    assert buttons(a) == [("Stop", msg.STOP, "b1")]
    assert "<https://x|20261123.4>" in a["text"] and "(#4)" in a["text"]
    d = msg.announcement_done(build_id="b1", user_id="U1", job_name="backend", daily="d",
                              build_no="4", link=None, result="aborted", duration_ms=None)
    assert buttons(d) == [("Rebuild", msg.REBUILD, "b1")] and "was stopped" in d["text"]


def test_api_error_shows_code_message_hint_and_request_id() -> None:
    m = msg.api_error("backend", status=403, error_code="CB.1", error_msg="no <b>", hint="Ask.",
                      request_id="req-1")
    assert "`CB.1` no &lt;b&gt;" in m["text"] and "Ask." in m["text"]
    assert "HTTP 403, request ID `req-1`" in m["text"] and m["replace_original"] is True


def test_help_lists_only_the_given_jobs() -> None:
    m = msg.help_message([("backend", "Backend CI")])
    assert "`backend` Backend CI" in m["text"] and "/build list" in m["text"]
    assert "None." in msg.help_message([])["text"]
