"""Block Kit builders: pure functions, tested without any fake."""

from __future__ import annotations

import re

import pytest

from bot import messages as msg

BODY = {"job_id": "f" * 32, "parameter": [{"name": "codeBranch", "value": "master"}],
        "scm": {"build_commit_id": "abc1234"}}


BROKEN = re.compile(r"&(?!amp;|lt;|gt;)")
TAIL = {"build_commit_id": "abc1234", "build_tag": "v1.2.0"}


def section_texts(message: dict) -> list[str]:
    return [b["text"]["text"] for b in message.get("blocks", []) if b["type"] == "section"]


def shown(message: dict) -> str:
    """Everything the blocks show, in order."""
    out = []
    for b in message.get("blocks", []):
        if b["type"] == "section":
            out.append(b["text"]["text"])
        elif b["type"] == "context":
            out += [e["text"] for e in b["elements"]]
    return "\n".join(out)


def well_formed(text: str) -> bool:
    """No broken entity; every < closed by a > before the next <, and no stray >."""
    return BROKEN.search(text) is None and re.fullmatch(r"(?:[^<>]|<[^<>]*>)*", text) is not None


def buttons(message: dict) -> list[tuple[str, str, str]]:
    return [(e["text"]["text"], e["action_id"], e["value"])
            for b in message.get("blocks", []) if b["type"] == "actions" for e in b["elements"]]


def test_confirmation_has_run_and_cancel_carrying_only_the_request_key() -> None:
    m = msg.confirmation("r" * 32, "backend", "Backend CI", BODY, minutes=10)
    assert buttons(m) == [("Run", msg.RUN, "r" * 32), ("Cancel", msg.CANCEL, "r" * 32),
                          ("Edit parameters", msg.EDIT, "r" * 32)]
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


def test_long_values_are_shortened_and_every_parameter_shown() -> None:
    params = [{"name": f"p{i}", "value": "v" * 9000} for i in range(30)]
    m = msg.confirmation("r", "backend", "", {"job_id": "f" * 32, "parameter": params}, minutes=10)
    assert all(len(t) <= 3000 for t in section_texts(m))
    assert "v" * 119 + "…" in m["text"] and "v" * 120 not in m["text"]
    assert all(f"`p{i}`" in shown(m) for i in range(30)) and "more" not in shown(m)


@pytest.mark.parametrize("ms,words", [(None, "an unknown time"), (0, "0 s"), (59_999, "59 s"),
                                      (61_000, "1 min 1 s"), (3_720_000, "1 h 2 min")])
def test_duration_reads_like_a_person_would_say_it(ms: int | None, words: str) -> None:
    assert msg.duration(ms) == words


def test_failure_reply_mentions_the_requester_and_offers_rebuild() -> None:
    m = msg.result_reply(build_id="b1", user_id="U1", job_name="backend", daily="20261123.4",
                         result="failure", duration_ms=90_000, link="https://x/y")
    assert m["text"].startswith("<@U1> ") and "failed in 1 min 30 s" in m["text"]
    assert buttons(m) == [("Rebuild", msg.REBUILD, "b1"),
                          ("\N{HAPPY PERSON RAISING ONE HAND} I'm on it", msg.ON_IT, "b1")]
    ok = msg.result_reply(build_id="b1", user_id="U1", job_name="backend", daily="d",
                          result="success", duration_ms=1000, link=None)
    assert "<@U1>" not in ok["text"] and "succeeded" in ok["text"]


def test_announcement_offers_stop_and_done_offers_rebuild() -> None:
    a = msg.announcement(build_id="b1", user_id="U1", job_name="backend", description="",
                         body=BODY, daily="20261123.4", build_no="4", link="https://x")
    assert buttons(a) == [("Stop", msg.STOP, "b1"), ("\N{BELL} Notify me", msg.NOTIFY, "b1")]
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


# --- A. the confirmation never hides what the user agrees to ---------------------

def many_params(n: int, value: str) -> list[dict[str, str]]:
    return [{"name": f"parameter_number_{i:02d}_xyz", "value": value} for i in range(n)]


@pytest.mark.parametrize("value", ["x" * 120, "&<>" * 40, "a&b<c>" * 20])
def test_confirmation_shows_every_parameter_commit_and_tag(value: str) -> None:
    body = {"job_id": "f" * 32, "parameter": many_params(20, value), "scm": TAIL}
    m = msg.confirmation("r", "backend", "Backend CI", body, minutes=10)
    seen = shown(m)
    assert all(f"`parameter_number_{i:02d}_xyz`" in seen for i in range(20))
    assert "commit `abc1234`" in seen and "tag `v1.2.0`" in seen
    assert "commit `abc1234`" in m["text"] and "tag `v1.2.0`" in m["text"]
    assert all(len(t) <= 3000 for t in section_texts(m)) and len(m["blocks"]) <= 50
    assert well_formed(seen) and well_formed(m["text"])
    assert msg.escape(value) in seen


def test_confirmation_counts_parameters_it_cannot_show_and_keeps_commit_and_tag() -> None:
    params = [{"name": f"n{i}" + "&" * 100, "value": "<>" * 200} for i in range(200)]
    body = {"job_id": "f" * 32, "parameter": params, "scm": TAIL}
    m = msg.confirmation("r", "backend" * 40, "&" * 300, body, minutes=10)
    seen = shown(m)
    assert len(m["blocks"]) <= 50 and all(len(t) <= 3000 for t in section_texts(m))
    hidden = re.search(r"… and (\d+) more parameters", seen)
    assert hidden and 0 < int(hidden.group(1)) < 200
    assert seen.count("• `n") + int(hidden.group(1)) == 200
    assert "\n".join(section_texts(m)).endswith(
        f"• … and {hidden.group(1)} more parameters\n• commit `abc1234`\n• tag `v1.2.0`")
    assert "commit `abc1234`" in m["text"] and "tag `v1.2.0`" in m["text"]
    assert well_formed(seen) and well_formed(m["text"])
    assert buttons(m) == [("Run", msg.RUN, "r"), ("Cancel", msg.CANCEL, "r"),
                          ("Edit parameters", msg.EDIT, "r")]


def test_announcement_shows_every_parameter_commit_and_tag() -> None:
    body = {"job_id": "f" * 32, "parameter": many_params(50, "&<>" * 40), "scm": TAIL}
    a = msg.announcement(build_id="b1", user_id="U1", job_name="backend", description="",
                         body=body, daily="20261123.4", build_no="4", link="https://x/?a=1&b=2")
    seen = shown(a)
    assert all(f"`parameter_number_{i:02d}_xyz`" in seen for i in range(50))
    assert "commit `abc1234`" in seen and "tag `v1.2.0`" in seen
    assert "commit `abc1234`" in a["text"] and "tag `v1.2.0`" in a["text"]
    assert len(a["blocks"]) <= 50 and well_formed(seen) and well_formed(a["text"])
    assert all(len(e["text"]) <= 2000 for b in a["blocks"] if b["type"] == "context"
               for e in b["elements"])
    assert "<https://x/?a=1&amp;b=2|20261123.4>" in seen


def test_cut_never_splits_an_entity_a_mention_or_a_link() -> None:
    for text in ["&amp;" * 1000, "<@U12345> " * 500, "<https://x.io/a|label> " * 200,
                 "line one\n" + "&lt;" * 900]:
        for limit in range(50, 120):
            out = msg.cut(text, limit)
            assert len(out) <= limit and out.endswith("…") and well_formed(out)


def test_problems_are_never_cut_mid_entity() -> None:
    m = msg.problems_message(["&" * 600] * 30)
    assert all(len(t) <= 3000 and well_formed(t) for t in section_texts(m))
    assert shown(m).count("• " + "&amp;" * 599 + "…") == 30 and well_formed(m["text"])


def test_error_messages_are_never_cut_mid_entity() -> None:
    long = "<!channel> & " * 500
    for m in (msg.api_error(long, status=400, error_code=long, error_msg=long, hint=long,
                            request_id=long),
              msg.login_failed(long, status=None, error_code=long, error_msg=long, hint=long,
                               request_id=long),
              msg.not_sent(long, long), msg.expired(long, long, minutes=10),
              msg.stop_failed(long, long, long, status=500, error_code=long, error_msg=long,
                              request_id=long)):
        assert well_formed(m["text"]) and "<!channel>" not in m["text"] and len(m["text"]) < 5000


def test_result_sent_elsewhere_is_never_cut_mid_entity() -> None:
    reply = {"text": "<@U1> " + "&amp;" * 700 + " <https://x|Open in CodeArts>"}
    m = msg.result_elsewhere(reply, channel="C1", error="&" * 300)
    assert all(len(t) <= 3000 and well_formed(t) for t in section_texts(m))
    assert well_formed(m["text"]) and "<#C1>" in m["text"]


# --- B. help never silently drops jobs ---------------------------------------------

def test_help_is_paginated_and_says_how_to_see_the_next_page() -> None:
    jobs = [(f"job{i:03d}", f"Job number {i} & <friends>") for i in range(200)]
    pages = [msg.help_message(jobs, page=n) for n in range(1, 7)]
    first = shown(pages[0])
    assert first.endswith("160 more jobs: type `/build help 2`") and "*Usage*" in first
    assert shown(pages[1]).endswith("120 more jobs: type `/build help 3`")
    assert "page 5 of 5" in shown(pages[4]) and "more job" not in shown(pages[4])
    assert pages[5] == pages[4]  # past the end: the last page
    listed = "".join(shown(p) for p in pages[:5])
    assert all(listed.count(f"`job{i:03d}`") == 1 for i in range(200))
    for p in pages:
        assert len(p["blocks"]) <= 50 and all(len(t) <= 3000 for t in section_texts(p))
        assert well_formed(shown(p)) and well_formed(p["text"])


def test_help_with_one_job_left_says_job() -> None:
    m = msg.help_message([(f"j{i}", "") for i in range(41)], is_admin=True)
    assert shown(m).endswith("task ID.\n1 more job: type `/build help 2`")


def test_help_keeps_long_descriptions_inside_the_limits() -> None:
    jobs = [("a" * 120 + str(i), "&<>" * 100) for i in range(200)]
    for page in range(1, 6):
        m = msg.help_message(jobs, page=page, is_admin=True)
        assert len(m["blocks"]) <= 50 and all(len(t) <= 3000 for t in section_texts(m))
        assert well_formed(shown(m)) and len(m["text"]) <= 40_000


# --- C. the Stop error reply ---------------------------------------------------------

def test_stop_failed_escapes_and_shows_code_message_and_request_id() -> None:
    m = msg.stop_failed("backend", "20261123.4", "4", status=400, error_code="CB.<!channel>",
                        error_msg="Build <@U999> already ended.", request_id="req-1")
    text = m["text"]
    assert "<!channel>" not in text and "<@U999>" not in text
    assert "`CB.&lt;!channel&gt;` Build &lt;@U999&gt; already ended." in text
    assert "HTTP 400, request ID `req-1`" in text and "backend 20261123.4" in text
    assert ".." not in text and "Check the input" not in text
    assert m["replace_original"] is False and m["response_type"] == "ephemeral"


def test_stop_failed_without_code_or_status() -> None:
    m = msg.stop_failed("backend", "", "4", error_msg="connection refused")
    assert "backend #4" in m["text"] and "\nconnection refused.\n" in m["text"]
    assert "HTTP" not in m["text"] and ".." not in m["text"]


# --- D. a daily build number CodeArts has not told yet -------------------------------

def test_unknown_daily_number_shows_the_build_number() -> None:
    common = {"build_id": "b1", "user_id": "U1", "job_name": "backend"}
    texts = [
        msg.announcement(**common, description="", body=BODY, daily="", build_no="42",
                         link=None)["text"],
        msg.announcement_done(**common, daily="", build_no="42", link="https://x",
                              result="success", duration_ms=1000)["text"],
        msg.result_reply(**common, daily="", build_no="42", result="failure", duration_ms=None,
                         link=None)["text"],
        msg.gave_up(job_name="backend", daily="", build_no="42", hours=24, link=None)["text"],
        msg.stop_requested("U1", "backend", "", "42")["text"],
        msg.started_unrecorded("backend", "", "42", "e1")["text"],
        msg.started_unannounced("backend", "", "42", "e1")["text"],
    ]
    for text in texts:
        assert "#42" in text and "build ," not in text and "build  " not in text
        assert "  " not in text and "()" not in text and "(#42)" not in text
    assert "build <https://x|#42>" in texts[1]
    ack = msg.started_ack("backend", "", "C1", build_no="42")["text"]
    assert "#42" in ack and "not known yet" in ack and "build ." not in ack
    assert "not known yet" in msg.started_ack("backend", "", None)["text"]
    assert "not known" not in msg.started_ack("backend", "2026.1", None)["text"]


# --- E. results that are not one of ours -----------------------------------------------

def test_unknown_end_status_is_shown_neutrally_and_mentions_the_requester() -> None:
    r = msg.result_reply(build_id="b1", user_id="U1", job_name="backend", daily="2026.1",
                         result="ended:TIMEOUT", duration_ms=61_000, link=None)
    assert r["text"].startswith("<@U1> ") and "ended: TIMEOUT in 1 min 1 s." in r["text"]
    assert ":x:" not in r["text"] and ":white_check_mark:" not in r["text"]
    d = msg.announcement_done(build_id="b1", user_id="U1", job_name="backend", daily="2026.1",
                              build_no="1", link=None, result="ended:<!here>&",
                              duration_ms=None)
    assert "ended: &lt;!here&gt;&amp;" in d["text"] and "<!here>" not in d["text"]
    assert well_formed(d["text"])


def test_names_commit_and_tag_are_shown_whole() -> None:
    name, tag = "n" * 128, "t" * 255
    body = {"job_id": "f" * 32, "parameter": [{"name": name, "value": "1"}],
            "scm": {"build_commit_id": "a" * 64, "build_tag": tag}}
    for m in (msg.confirmation("r", "backend", "", body, minutes=10),
              msg.announcement(build_id="b", user_id="U1", job_name="backend", description="",
                               body=body, daily="1.1", build_no="1", link=None)):
        for text in (shown(m), m["text"]):
            assert f"`{name}` = `1`" in text and f"commit `{'a' * 64}`" in text
            assert f"tag `{tag}`" in text


# --- F. the request ID of CodeArts' answer, in every message that comes from one -------

CHECKING_503 = (":hourglass_flowing_sand: CodeArts answered HTTP 503 `CB.00060100` (Network "
                "busy), so backend *may* have started. buildbot is checking the task's build "
                "history and will tell you here; it will not send it again by itself.")
UNKNOWN = (":warning: CodeArts did not answer in time: backend *may or may not* have "
           "started. buildbot will not send it again by itself. Check the task's build "
           "history in CodeArts before running it again.")
NOT_STARTED = (":x: CodeArts' build history has no build of backend from this request: "
               "nothing was started. buildbot asks you again below.")
AMBIGUOUS = (":warning: CodeArts' answer to backend was lost, and its build history has "
             "several builds that may be it (#1, #2); buildbot does not follow any of them "
             "and will not send it again. Check them in CodeArts.")
STATUS_FAILED = (":warning: buildbot could not read the builds of `backend`: CodeArts "
                 "answered HTTP 500. Try again in a minute.")


def test_without_a_request_id_the_words_are_as_they_were() -> None:
    assert msg.checking("backend", status=503, error_code="CB.00060100",
                        error_msg="Network busy")["text"] == CHECKING_503
    assert msg.outcome_unknown("backend")["text"] == UNKNOWN
    assert msg.not_started_after_restart("backend")["text"] == NOT_STARTED
    assert msg.outcome_ambiguous("backend", ["1", "2"])["text"] == AMBIGUOUS
    assert msg.status_failed("backend", "CodeArts answered HTTP 500")["text"] == STATUS_FAILED
    line = msg.jobs_status([("backend", None, True)])["text"].splitlines()[1]
    assert line == "• `backend` :grey_question: unknown (CodeArts did not answer)"
    for m in (msg.checking("backend"), msg.checking("backend", status=502, unreadable=True)):
        assert "request ID" not in m["text"].lower()


def test_a_request_id_is_said_as_every_other_error_says_it() -> None:
    rid = "0f3c9b2e-req"
    line = f"Request ID `{rid}`"
    assert msg.checking("backend", status=503, error_code="CB.00060100",
                        error_msg="Network busy", request_id=rid)["text"] == \
        f"{CHECKING_503}\n{line}"
    unreadable = msg.checking("backend", status=502, unreadable=True, request_id=rid)["text"]
    assert "could not read" in unreadable and unreadable.endswith(f"\n{line}")
    assert msg.outcome_unknown("backend", request_id=rid)["text"] == f"{UNKNOWN}\n{line}"
    assert msg.not_started_after_restart("backend", request_id=rid)["text"] == \
        f"{NOT_STARTED}\n{line}"
    assert msg.outcome_ambiguous("backend", ["1", "2"], request_id=rid)["text"] == \
        f"{AMBIGUOUS}\n{line}"
    assert msg.status_failed("backend", "CodeArts answered HTTP 500",
                             request_id=rid)["text"] == f"{STATUS_FAILED}\n{line}"
    status = msg.jobs_status([("backend", None, True), ("docs", None, True)],
                             request_ids={"backend": rid})["text"].splitlines()
    assert status[1] == f"• `backend` :grey_question: unknown (CodeArts did not answer, " \
                        f"request ID `{rid}`)"
    assert status[2] == "• `docs` :grey_question: unknown (CodeArts did not answer)"
    # the same words as a refusal and a failed stop give it
    assert f"HTTP 503, request ID `{rid}`" in msg.api_error(
        "backend", status=503, error_code="", error_msg="", hint="", request_id=rid)["text"]
    assert msg.request_id_text(rid) == f"request ID `{rid}`"


def test_the_history_answer_and_the_run_answer_each_have_their_line() -> None:
    m = msg.outcome_unknown("backend", request_id="run-1", history_request_id="hist-2")
    assert m["text"] == (f"{UNKNOWN}\nRequest ID `run-1`\n"
                         "The build history could not be read, request ID `hist-2`")
    only = msg.outcome_unknown("backend", history_request_id="hist-2")["text"]
    assert only == f"{UNKNOWN}\nThe build history could not be read, request ID `hist-2`"


def test_a_request_id_is_shown_escaped_shortened_and_in_one_piece() -> None:
    rid = "<!channel>&`x`" + "9" * 200
    texts = [msg.checking("backend", status=500, request_id=rid)["text"],
             msg.outcome_unknown("backend", request_id=rid, history_request_id=rid)["text"],
             msg.status_failed("backend", "x", request_id=rid)["text"],
             msg.jobs_status([("backend", None, True)], request_ids={"backend": rid})["text"]]
    for text in texts:
        assert "<!channel>" not in text and "&lt;!channel&gt;&amp;ˋxˋ" in text
        assert well_formed(text) and "9" * 100 not in text and "…`" in text
    # the raw words, escaped where they are shown, are the words of the line
    assert f"could not be read, {msg.escape(msg.request_id_text(rid))}" in texts[1]
