"""The CodeArts client against the loopback fake: answers, errors, retries, no double builds."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from bot.codearts.answers import BuildState, RunResult, build_state_from, extract_error, parse_time
from bot.codearts.auth import AkSkAuth, IamPasswordAuth, TokenAuth
from bot.codearts.client import RETRIES, CodeArtsClient
from bot.codearts.errors import (
    ApiError,
    AuthError,
    BadResponseError,
    CodeArtsError,
    NotSentError,
    OutcomeUnknownError,
    request_id_in,
    request_id_of,
)
from bot.runtime import client_from_settings
from bot.settings import Settings
from tests.fakes.codearts import FakeCodeArts

JOB = "f9d6c8466d614a9788e9a0acf6c15f46"
RUN = "/v3/jobs/build"
RECORD = f"/v4/jobs/{JOB}/1/record-info"
FAST = httpx.Timeout(2.0, connect=0.5)


@pytest.fixture
def fake() -> Iterator[FakeCodeArts]:
    with FakeCodeArts(build_duration=0.2) as f:
        f.add_job(JOB)
        yield f


@pytest.fixture
def client(fake: FakeCodeArts) -> Iterator[CodeArtsClient]:
    with CodeArtsClient(fake.url, auth=TokenAuth(fake.token), timeout=FAST, backoff=0.01) as c:
        yield c


def body(**params: str) -> dict:
    return {"job_id": JOB, "parameter": [{"name": k, "value": v} for k, v in params.items()],
            "scm": {"build_commit_id": "abc123"}}


def closed_port_url() -> str:
    """A loopback URL nobody listens on: connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------- run


def test_run_returns_build_numbers_as_strings_and_sends_the_body_as_given(fake, client):
    sent = body(codeBranch="master")
    first = client.run_build(sent)
    second = client.run_build(sent)
    today = datetime.now(UTC).strftime("%Y%m%d")
    assert isinstance(first, RunResult)
    assert (first.actual_build_number, second.actual_build_number) == ("1", "2")
    assert second.daily_build_number == f"{today}.2"
    runs = fake.requests_to(RUN, "POST")
    assert [r.body for r in runs] == [sent, sent]
    assert runs[0].headers["x-auth-token"] == fake.token


def test_run_coerces_numbers_to_strings(fake, client):
    fake.fail_next(200, {"octopus_job_name": "j_1", "actual_build_number": 7,
                         "daily_build_number": "20200612.20"})
    result = client.run_build(body())
    assert result.actual_build_number == "7" and result.daily_build_number == "20200612.20"


@pytest.mark.parametrize("answer", [
    {"octopus_job_name": "j_1", "actual_build_number": "3", "daily_build_number": None},
    {"octopus_job_name": None, "actual_build_number": "3", "daily_build_number": None},
    {"octopus_job_name": None, "actual_build_number": "3"},
    {"actual_build_number": 3},
])
def test_a_started_build_is_not_thrown_away_over_a_null(fake, client, answer):
    """Only actual_build_number is needed; a null or missing daily number is read as ''."""
    fake.fail_next(200, answer, path_prefix=RUN)
    result = client.run_build(body())
    assert (result.actual_build_number, result.daily_build_number) == ("3", "")


def test_a_null_octopus_job_name_keeps_the_daily_number(fake, client):
    fake.fail_next(200, {"octopus_job_name": None, "actual_build_number": "4",
                         "daily_build_number": "20261123.4"}, path_prefix=RUN)
    assert client.run_build(body()).daily_build_number == "20261123.4"


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(("raw", "daily"), [
    ('{"actual_build_number": "5", "daily_build_number": 20261123.10}', "20261123.10"),
    ('{"actual_build_number": 5, "daily_build_number": 20261123.100}', "20261123.100"),
    ('{"actual_build_number": "5", "daily_build_number": 20261123}', "20261123"),
    ('{"actual_build_number": "5", "daily_build_number": "20261123.10"}', "20261123.10"),
])
def test_numbers_that_are_identifiers_never_go_through_a_float(fake, client, raw, daily):
    fake.fail_next(200, raw, path_prefix=RUN, headers=JSON)
    result = client.run_build(body())
    assert (result.actual_build_number, result.daily_build_number) == ("5", daily)


def test_the_record_daily_number_keeps_its_text_too(fake, client):
    fake.fail_next(200, '{"result": {"status": "RUNNING", "daily_build_num": 20261123.10, '
                        '"duration": 1500.0, "start_time": 1665477027000.0}, '
                        '"error": null, "status": "success"}', path_prefix=RECORD, headers=JSON)
    state = client.build_state(JOB, 1)
    assert state.daily_build_number == "20261123.10" and state.duration_ms == 1500
    assert state.start_time == datetime(2022, 10, 11, 8, 30, 27, tzinfo=UTC)


@pytest.mark.parametrize(("status", "hint_word"), [
    (400, "input"), (401, "credentials"), (403, "permission"), (404, "job ID"), (500, "later"),
])
def test_each_error_status_becomes_api_error_with_hint_and_request_id(fake, client, status,
                                                                     hint_word):
    fake.fail_next(status, path_prefix=RUN, headers={"X-Request-Id": "req-123"})
    with pytest.raises(ApiError) as info:
        client.run_build(body())
    err = info.value
    assert err.status == status and err.request_id == "req-123"
    assert err.error_code and err.error_msg
    assert hint_word in err.hint and hint_word in str(err) and "req-123" in str(err)
    assert len(fake.requests_to(RUN)) == 1  # not retried, not even a 500


def test_bad_parameter_name_is_the_documented_400(fake, client):
    with pytest.raises(ApiError) as info:
        client.run_build(body(PATH="/tmp"))
    assert (info.value.status, info.value.error_code) == (400, "CB.00060200")
    assert fake.builds(JOB) == []


def test_unknown_job_is_404_with_the_config_hint(fake, client):
    with pytest.raises(ApiError) as info:
        client.run_build({"job_id": "0" * 32})
    assert info.value.status == 404 and "config" in info.value.hint
    assert info.value.request_id  # the fake always sends X-Request-Id


def test_the_request_id_is_the_header_only_as_the_sdk_reads_it(fake, client):
    """The SDK takes X-Request-Id from the headers and nowhere else; so does the client."""
    fake.fail_next(401, {"error_code": "APIGW.0301", "error_msg": "token expires",
                         "request_id": "body-rid"}, headers={"X-Request-Id": None})
    with pytest.raises(ApiError) as info:
        client.run_build(body())
    assert info.value.request_id is None
    fake.fail_next(401, {"error_code": "APIGW.0301", "error_msg": "token expires",
                         "request_id": "body-rid"}, headers={"X-Request-Id": "hdr-rid"})
    with pytest.raises(ApiError) as info:
        client.run_build(body())
    assert info.value.request_id == "hdr-rid"


@pytest.mark.parametrize("payload", [
    {"error_code": "X.1", "error_msg": "boom"},
    {"errorCode": "X.1", "errorMsg": "boom"},
    {"code": "X.1", "message": "boom"},
    {"error": {"code": "X.1", "message": "boom", "title": "Bad Request"}},
    {"result": None, "status": "fail", "error": {"error_code": "X.1", "error_msg": "boom"}},
])
def test_error_fields_are_read_in_every_sdk_spelling(fake, client, payload):
    fake.fail_next(400, payload)
    with pytest.raises(ApiError) as info:
        client.run_build(body())
    assert (info.value.error_code, info.value.error_msg) == ("X.1", "boom")


@pytest.mark.parametrize(("payload", "code", "msg"), [
    # a pair counts only when both of its keys are there, whatever their values
    ({"error_code": "X.1"}, "400", '{"error_code": "X.1"}'),
    ({"error_code": None, "error_msg": None, "code": "X.2", "message": "m"}, "400",
     '{"error_code": null, "error_msg": null, "code": "X.2", "message": "m"}'),
    ({"error_code": "", "error_msg": "only a message"}, "400", "only a message"),
    ({"error_code": 0, "error_msg": "zero"}, "400", "zero"),
    # nested at any depth; with several, the last one found wins
    ({"outer": {"inner": {"code": "X.3", "message": "two down"}}}, "X.3", "two down"),
    ({"a": {"error_code": "A.1", "error_msg": "first"},
      "b": {"error_code": "B.1", "error_msg": "last"}}, "B.1", "last"),
    ({"a": {"x": {"code": "A.2", "message": "deep first"}},
      "b": {"errorCode": "B.2", "errorMsg": "later"}}, "B.2", "later"),
    # the top level wins over anything nested
    ({"code": "T.1", "message": "top", "error": {"code": "N.1", "message": "nested"}},
     "T.1", "top"),
    # nothing recognised: the HTTP status as the code, the body text as the message
    ({"detail": "nope"}, "400", '{"detail": "nope"}'),
    ([1, 2], "400", "[1, 2]"),
    ({"error": {"code": 400, "message": "IAM style", "title": "Bad Request"}}, "400",
     "IAM style"),
])
def test_errors_are_read_exactly_as_the_sdk_reads_them(fake, client, payload, code, msg):
    fake.fail_next(400, payload, path_prefix=RUN)
    with pytest.raises(ApiError) as info:
        client.run_build(body())
    assert (info.value.error_code, info.value.error_msg) == (code, msg)


def test_a_5xx_json_answer_with_nothing_recognised_uses_the_status_and_text(fake, client):
    fake.fail_next(502, {"upstream": "gone"}, path_prefix=RUN)
    with pytest.raises(ApiError) as info:
        client.run_build(body())
    assert (info.value.error_code, info.value.error_msg) == ("502", '{"upstream": "gone"}')


def test_a_2xx_carrying_error_code_is_an_error(fake, client):
    fake.fail_next(200, {"error_code": "CB.00060211", "error_msg": "too many requests"})
    with pytest.raises(ApiError) as info:
        client.run_build(body())
    assert info.value.status == 200 and info.value.error_code == "CB.00060211"


@pytest.mark.parametrize("status", [200, 502])
def test_html_answer_is_a_bad_response_not_a_crash(fake, client, status):
    fake.html_next(status=status)
    with pytest.raises(BadResponseError) as info:
        client.run_build(body())
    err = info.value
    assert err.status == status and err.request_id and "Bad Gateway" in err.snippet
    assert len(err.snippet) <= 120 and "<html>" not in str(err)
    assert len(fake.requests_to(RUN)) == 1


WAF_PAGE = ("<html><head><title>403 Forbidden</title></head><body><h1>403 Forbidden</h1>"
            "<p>Request blocked by the web application firewall. " + "x" * 400
            + "</p></body></html>")


@pytest.mark.parametrize(("status", "payload", "hint_word"), [
    (401, b"", "credentials"),
    (403, WAF_PAGE, "permission"),
    (404, "404 page not found", "job ID"),
    (413, "<html><body>413 Request Entity Too Large</body></html>", "too large"),
    (429, "<html><body>Too Many Requests</body></html>", "throttl"),
])
def test_a_4xx_without_a_json_body_is_a_refusal_not_an_unknown_outcome(fake, client, status,
                                                                      payload, hint_word):
    """Something in front of CodeArts refused the run: nothing was started."""
    fake.fail_next(status, payload, path_prefix=RUN,
                   headers={"Content-Type": "text/html", "X-Request-Id": "gw-1"})
    with pytest.raises(ApiError) as info:
        client.run_build(body())
    err = info.value
    text = payload.decode() if isinstance(payload, bytes) else payload
    assert (err.status, err.error_code, err.request_id) == (status, str(status), "gw-1")
    flat = " ".join(text.split())
    assert err.error_msg == (flat if len(flat) <= 300 else flat[:299] + "…")
    assert len(err.error_msg) <= 300 and hint_word in err.hint
    assert f"HTTP {status} {status}" not in str(err)
    assert fake.builds(JOB) == [] and len(fake.requests_to(RUN)) == 1


def test_a_waf_page_from_html_next_creates_nothing(fake, client):
    fake.html_next(403, path_prefix=RUN)
    with pytest.raises(ApiError) as info:
        client.run_build(body())
    assert info.value.status == 403 and fake.builds(JOB) == []


def test_a_4xx_page_to_a_read_is_an_api_error_and_not_retried(fake, client):
    client.run_build(body())
    fake.fail_next(404, "<html>Not Found</html>", path_prefix=RECORD)
    with pytest.raises(ApiError) as info:
        client.build_state(JOB, 1)
    assert (info.value.status, info.value.error_code) == (404, "404")
    assert len(fake.requests_to(RECORD)) == 1


@pytest.mark.parametrize("payload", [
    [1, 2], "not json at all", {"octopus_job_name": "x"}, {"actual_build_number": "abc"},
    {"actual_build_number": None}, {"actual_build_number": True},
])
def test_malformed_200_is_a_bad_response(fake, client, payload):
    fake.fail_next(200, payload)
    with pytest.raises(BadResponseError):
        client.run_build(body())


# --------------------------------------------------------------------------- never twice


def test_connection_refused_on_run_is_retried_then_not_sent():
    url = closed_port_url()
    with (
        CodeArtsClient(url, auth=TokenAuth("t"), timeout=FAST, backoff=0.01) as c,
        pytest.raises(NotSentError) as info,
    ):
        c.run_build(body())
    assert info.value.attempts == 1 + RETRIES and info.value.reason == "ConnectError"
    assert "nothing was started" in str(info.value)


def test_no_run_arrives_while_the_server_refuses(fake):
    url = fake.url
    fake.stop()
    with (
        CodeArtsClient(url, auth=TokenAuth(fake.token), timeout=FAST, backoff=0.01) as c,
        pytest.raises(NotSentError),
    ):
        c.run_build(body())
    assert fake.requests == [] and fake.builds(JOB) == []


def test_read_timeout_on_run_is_outcome_unknown_and_sent_once(fake):
    fake.hang(1.0, path_prefix=RUN)
    timeout = httpx.Timeout(0.2, connect=0.5)
    with (
        CodeArtsClient(fake.url, auth=TokenAuth(fake.token), timeout=timeout, backoff=0.01) as c,
        pytest.raises(OutcomeUnknownError) as info,
    ):
        c.run_build(body())
    assert info.value.reason == "ReadTimeout" and "may or may not" in str(info.value)
    assert len(fake.requests_to(RUN)) == 1


def test_dropped_connection_on_run_is_outcome_unknown_with_one_build(fake, client):
    fake.drop_next(path_prefix=RUN)
    with pytest.raises(OutcomeUnknownError) as info:
        client.run_build(body())
    assert info.value.reason == "RemoteProtocolError"
    assert len(fake.requests_to(RUN)) == 1 and len(fake.builds(JOB)) == 1


@pytest.mark.parametrize("exc", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout])
def test_failures_before_connecting_are_retried_for_a_run(exc):
    """A server cannot produce a connect timeout on loopback: a MockTransport does."""
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            raise exc("nope", request=request)
        return httpx.Response(200, json={"actual_build_number": "5"})

    with CodeArtsClient("https://codearts.test", auth=TokenAuth("t"),
                        http=httpx.Client(transport=httpx.MockTransport(handler)),
                        backoff=0.001) as c:
        assert c.run_build(body()).actual_build_number == "5"
    assert len(calls) == 3


@pytest.mark.parametrize("exc", [httpx.ReadTimeout, httpx.WriteTimeout, httpx.ReadError,
                                 httpx.WriteError, httpx.RemoteProtocolError])
def test_failures_after_sending_began_are_never_retried_for_a_run(exc):
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise exc("lost", request=request)

    with CodeArtsClient("https://codearts.test", auth=TokenAuth("t"),
                        http=httpx.Client(transport=httpx.MockTransport(handler)),
                        backoff=0.001) as c:
        with pytest.raises(OutcomeUnknownError):
            c.run_build(body())
        with pytest.raises(OutcomeUnknownError):
            c.stop_build(JOB, 1)
    assert len(calls) == 2


def test_throttled_run_is_not_retried(fake, client):
    fake.fail_next(429, headers={"Retry-After": "0"})
    with pytest.raises(ApiError) as info:
        client.run_build(body())
    assert info.value.status == 429 and "throttl" in info.value.hint
    assert len(fake.requests_to(RUN)) == 1


def test_concurrent_runs_from_many_threads_get_distinct_builds(fake, client):
    results: list[RunResult] = []
    lock = threading.Lock()

    def run() -> None:
        r = client.run_build(body())
        with lock:
            results.append(r)

    threads = [threading.Thread(target=run) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(int(r.actual_build_number) for r in results) == list(range(1, 11))


# --------------------------------------------------------------------------- follow


def test_build_runs_then_succeeds_with_times_and_duration():
    now = [1000.0]  # the stand-in's clock, moved by hand
    with FakeCodeArts(build_duration=0.2, clock=lambda: now[0]) as fake, \
            CodeArtsClient(fake.url, auth=TokenAuth(fake.token), timeout=FAST,
                           backoff=0.01) as client:
        fake.add_job(JOB)
        client.run_build(body())
        running = client.build_state(JOB, 1)
        now[0] += 0.125
        still = client.build_state(JOB, 1)
        now[0] += 0.125  # past the 0.2 s it runs
        done = client.build_state(JOB, "1")
    for state in (running, still):
        assert (state.status, state.finished, state.outcome) == ("RUNNING", False, None)
    assert (done.status, done.finished, done.outcome) == ("SUCCESS", True, "success")
    assert done.start_time and done.finish_time and done.finish_time >= done.start_time
    assert done.finish_time - done.start_time == timedelta(milliseconds=200)
    assert done.duration_ms == 200 and done.daily_build_number.endswith(".1")


def test_job_outcome_is_configurable(fake, client):
    fake.add_job(JOB, outcome="FAILURE", duration=0.0)
    client.run_build(body())
    assert client.build_state(JOB, 1).outcome == "failure"


def test_status_reads_retry_through_500_503_and_429(fake, client):
    client.run_build(body())
    fake.fail_next(500, path_prefix=RECORD)
    fake.fail_next(503, path_prefix=RECORD)
    fake.fail_next(429, path_prefix=RECORD, headers={"Retry-After": "0"})
    assert client.build_state(JOB, 1).status == "RUNNING"
    assert len(fake.requests_to(RECORD)) == 4


def test_status_reads_retry_through_html_and_dropped_connections(fake, client):
    client.run_build(body())
    fake.html_next(503, path_prefix=RECORD)
    fake.drop_next(path_prefix=RECORD)
    assert client.build_state(JOB, 1).status == "RUNNING"


def test_status_reads_give_up_with_the_last_error(fake, client):
    client.run_build(body())
    fake.fail_next(503, count=10, path_prefix=RECORD)
    with pytest.raises(ApiError) as info:
        client.build_state(JOB, 1)
    assert info.value.status == 503 and "later" in info.value.hint
    assert len(fake.requests_to(RECORD)) == 1 + RETRIES == 4


def test_long_retry_after_is_not_waited_for(fake, client):
    client.run_build(body())
    fake.fail_next(429, path_prefix=RECORD, headers={"Retry-After": "3600"})
    started = time.monotonic()
    with pytest.raises(ApiError):
        client.build_state(JOB, 1)
    assert time.monotonic() - started < 1


def test_unreachable_status_read_is_not_sent():
    with CodeArtsClient(closed_port_url(), auth=TokenAuth("t"), timeout=FAST,
                        backoff=0.001) as c, pytest.raises(NotSentError) as info:
        c.build_state(JOB, 1)
    assert info.value.attempts == 1 + RETRIES


def test_unknown_build_is_404(fake, client):
    with pytest.raises(ApiError) as info:
        client.build_state(JOB, 99)
    assert info.value.status == 404 and info.value.error_code == "DEVCB.00031006"


def test_unseen_status_spelling_is_still_running_and_logged_once(fake, client, caplog):
    fake.add_job(JOB, duration=30.0)  # no finish time while it is read
    client.run_build(body())
    fake.set_status(JOB, 1, "queued_for_agent")
    caplog.set_level(logging.INFO, logger="bot.codearts.client")
    states = [client.build_state(JOB, 1) for _ in range(3)]
    assert {(s.status, s.finished, s.outcome) for s in states} == {
        ("QUEUED_FOR_AGENT", False, None)}
    assert len([r for r in caplog.records if "QUEUED_FOR_AGENT" in r.getMessage()]) == 1


@pytest.mark.parametrize(("raw", "outcome"), [
    ("SUCCESS", "success"), ("success", "success"), ("Failure", "failure"),
    ("aborted", "aborted"), ("SCHEDULE_FAILURE", "failure"), ("schedule_failure", "failure"),
    ("UNKNOWN", "unknown"), (" unknown ", "unknown"),
])
def test_final_states_in_any_case(fake, client, raw, outcome):
    client.run_build(body())
    fake.set_status(JOB, 1, raw)
    state = client.build_state(JOB, 1)
    assert state.finished and state.outcome == outcome and state.status == raw.strip().upper()


@pytest.mark.parametrize(("raw", "outcome"), [
    ("FAILED", "failure"), ("failed", "failure"), ("CANCELED", "aborted"),
    ("cancelled", "aborted"),
])
def test_more_final_words(fake, client, raw, outcome):
    fake.add_job(JOB, duration=30.0)  # still running by the clock: the word alone decides
    client.run_build(body())
    fake.set_status(JOB, 1, raw)
    state = client.build_state(JOB, 1)
    assert (state.finished, state.outcome, state.status) == (True, outcome, raw.upper())


@pytest.mark.parametrize("raw", ["TIMEOUT", "partial_success", "RUNNING", "Stopped by admin"])
def test_a_build_with_a_finish_time_has_ended_whatever_its_word(fake, client, raw):
    fake.add_job(JOB, duration=0.0)  # over at once: the record carries a finish time
    client.run_build(body())
    fake.set_status(JOB, 1, raw)
    state = client.build_state(JOB, 1)
    assert (state.finished, state.outcome, state.status) == (True, "ended", raw.upper())
    assert state.finish_time is not None


def test_an_unknown_word_without_a_finish_time_is_still_running(fake, client):
    fake.add_job(JOB, duration=30.0)
    client.run_build(body())
    fake.set_status(JOB, 1, "TIMEOUT")
    state = client.build_state(JOB, 1)
    assert (state.finished, state.outcome, state.status) == (False, None, "TIMEOUT")


@pytest.mark.parametrize("key", ["finish_time", "finishTime", "end_time", "endTime"])
def test_every_spelling_of_the_finish_time_ends_a_build(key):
    state = build_state_from({"status": "WEIRD", key: "2025-09-12T08:30:27.000+00:00"})
    assert (state.finished, state.outcome) == (True, "ended")
    assert state.finish_time == datetime(2025, 9, 12, 8, 30, 27, tzinfo=UTC)


@pytest.mark.parametrize("finish", [None, "", "yesterday", 0, "0", [], {}, True])
def test_an_unreadable_or_empty_finish_time_does_not_end_a_build(finish):
    state = build_state_from({"status": "WEIRD", "finish_time": finish, "end_time": None})
    assert (state.finished, state.outcome, state.finish_time) == (False, None, None)


def test_a_later_spelling_is_used_when_the_first_is_null():
    state = build_state_from({"status": "WEIRD", "finish_time": None, "endTime": 1665477027000})
    assert state.finished and state.finish_time == datetime(2022, 10, 11, 8, 30, 27, tzinfo=UTC)


@pytest.mark.parametrize(("raw", "word"), [
    ("a" * 40, "A" * 24),
    ("bad\x00word\nhere", "BAD WORD HERE"),
    (7, "7"),
    (None, ""),
])
def test_the_status_word_is_printable_and_short(raw, word):
    state = build_state_from({"status": raw, "finish_time": "2025-09-12T08:30:27Z"})
    assert (state.finished, state.outcome, state.status) == (True, "ended", word)
    assert len(state.status) <= 24


def test_malformed_record_fields_become_none(fake, client):
    fake.fail_next(200, {"result": {"status": "SUCCESS", "start_time": "yesterday",
                                    "finish_time": 12, "duration": "long",
                                    "daily_build_num": {"x": 1}},
                         "error": None, "status": "success"})
    state = client.build_state(JOB, 1)
    assert state.outcome == "success" and state.start_time is None
    assert state.duration_ms is None and state.daily_build_number is None


def test_record_without_result_is_a_bad_response(fake, client):
    fake.fail_next(200, {"result": None, "error": None, "status": "success"})
    with pytest.raises(BadResponseError):
        client.build_state(JOB, 1)


@pytest.mark.parametrize(("value", "expected"), [
    ("2022-10-11T08:30:27.000+00:00", datetime(2022, 10, 11, 8, 30, 27, tzinfo=UTC)),
    ("2022-10-11T16:30:27.123+08:00",
     datetime(2022, 10, 11, 8, 30, 27, 123000, tzinfo=UTC)),
    ("2022-10-11T08:30:27Z", datetime(2022, 10, 11, 8, 30, 27, tzinfo=UTC)),
    ("2022-10-11T08:30:27", datetime(2022, 10, 11, 8, 30, 27, tzinfo=UTC)),
    (1665477027000, datetime(2022, 10, 11, 8, 30, 27, tzinfo=UTC)),
    (None, None), ("", None), ("not a date", None), (True, None), ([], None), (1e30, None),
])
def test_parse_time_is_tolerant(value, expected):
    assert parse_time(value) == expected


def test_build_state_from_an_empty_record_is_running():
    assert build_state_from({}) == BuildState(status="", finished=False)


def test_extract_error_returns_none_without_error_fields():
    assert extract_error({"result": 1}) is None and extract_error([1]) is None
    assert extract_error({"error_code": None, "error_msg": None}) == ("", "")
    assert extract_error({"a": {"b": {"c": {"code": 7, "message": "deep"}}}}) == ("7", "deep")


def test_extract_error_does_not_recurse_itself_to_death():
    data: dict = {"code": "X", "message": "bottom"}
    for _ in range(5000):
        data = {"k": data}
    assert extract_error(data) == ("X", "bottom")


@pytest.mark.parametrize("bad", [0, -1, "x", "1/2", "", True])
def test_build_numbers_are_checked_before_they_reach_a_path(client, bad):
    with pytest.raises(ValueError):
        client.build_state(JOB, bad)


# --------------------------------------------------------------------------- stop


def test_stop_aborts_a_running_build(fake, client):
    fake.add_job(JOB, duration=5.0)
    client.run_build(body())
    client.stop_build(JOB, 1)
    state = client.build_state(JOB, 1)
    assert (state.status, state.outcome) == ("ABORTED", "aborted")
    assert fake.requests_to(f"/v3/jobs/{JOB}/1/stop", "POST")[0].raw == b""


def test_stop_answered_with_success_false_is_an_error(fake, client):
    client.run_build(body())
    fake.fail_next(200, {"success": False, "result": "The build has already finished."})
    with pytest.raises(ApiError) as info:
        client.stop_build(JOB, 1)
    assert "already finished" in str(info.value)


def test_stop_without_success_field_is_a_bad_response(fake, client):
    fake.fail_next(200, {"result": "?"})
    with pytest.raises(BadResponseError):
        client.stop_build(JOB, 1)


def test_stop_is_not_retried_on_5xx(fake, client):
    fake.fail_next(503)
    with pytest.raises(ApiError):
        client.stop_build(JOB, 1)
    assert len(fake.requests) == 1


# --------------------------------------------------------------------------- surface


def test_every_error_is_a_codearts_error():
    for cls in (ApiError, BadResponseError, NotSentError, OutcomeUnknownError):
        assert issubclass(cls, CodeArtsError)


def test_one_info_line_per_request(fake, client, caplog):
    caplog.set_level(logging.INFO, logger="bot.codearts.client")
    client.run_build(body())
    lines = [r for r in caplog.records if r.name == "bot.codearts.client"]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert "POST /v3/jobs/build -> 200" in lines[0].getMessage()
    assert isinstance(lines[0].args, tuple)  # %-style arguments


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("CODEARTS_TOKEN", "IAM_USER", "IAM_PASSWORD", "IAM_DOMAIN", "IAM_PROJECT",
                 "IAM_ENDPOINT", "CLOUD_SDK_AK", "CLOUD_SDK_SK", "CODEARTS_PROJECT_ID",
                 "CODEARTS_ENDPOINT", "SLACK_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("extra", "auth_type"), [
    ({"codearts_token": FakeCodeArts.token}, TokenAuth),
    ({"iam_user": FakeCodeArts.user, "iam_password": FakeCodeArts.password,
      "iam_domain": FakeCodeArts.domain, "iam_project": FakeCodeArts.project_name},
     IamPasswordAuth),
    ({"cloud_sdk_ak": FakeCodeArts.ak, "cloud_sdk_sk": FakeCodeArts.sk,
      "codearts_project_id": FakeCodeArts.project_id}, AkSkAuth),
])
def test_client_from_settings_builds_the_chosen_auth_and_works(fake, clean_env, extra, auth_type):
    settings = Settings(slack_bot_token="xoxb-test", codearts_endpoint=fake.url,
                        iam_endpoint=fake.url, **extra)
    with client_from_settings(settings, timeout=FAST) as c:
        assert isinstance(c._auth, auth_type)
        assert c.run_build(body()).actual_build_number == "1"


def test_timestamps_are_timezone_aware(fake, client):
    client.run_build(body())
    state = client.build_state(JOB, 1)
    assert state.start_time.tzinfo is not None
    assert abs(datetime.now(UTC) - state.start_time) < timedelta(seconds=5)


def test_the_client_does_not_import_the_auth_module() -> None:
    """bot.codearts.auth uses the client (its timeout, its JSON reading); the client takes
    any httpx.Auth (no import circle)."""
    code = "import sys, bot.codearts.client; print('bot.codearts.auth' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out == "False\n"


# --- the request ID an error carries, and the one kept in its text ----------------------

def test_a_run_answer_without_a_build_number_keeps_its_status_and_request_id(fake, client):
    fake.fail_next(202, {"octopus_job_name": "x"}, path_prefix=RUN,
                   headers={"X-Request-Id": "run-rid"})
    with pytest.raises(BadResponseError) as info:
        client.run_build(body())
    assert (info.value.status, info.value.request_id) == (202, "run-rid")
    assert str(info.value).endswith("(request ID run-rid)")


@pytest.mark.parametrize("exc", [
    ApiError(503, "CB.00060100", "Network busy (request ID fake)", "rid-1"),
    ApiError(409, "X", "no hint for this status", "rid-1", hint=""),
    BadResponseError(502, "rid-1", "<html>"),
    AuthError(401, "x", "wrong (request ID fake)", "rid-1"),
])
def test_the_request_id_of_an_error_is_found_again_in_its_text(exc):
    assert request_id_of(exc) == "rid-1"
    assert request_id_in(str(exc)) == "rid-1"
    assert request_id_in("answer lost: " + str(exc)) == "rid-1"  # the note kept on a request


@pytest.mark.parametrize("exc", [
    ApiError(503, "CB.00060100", "Network busy (request ID fake)"),
    ApiError(409, "X", "ends with a bracket)", hint=""),
    BadResponseError(502, None, "<html>"),
    AuthError(None, "", "connection refused"),
    NotSentError("GET", "/v3/jobs/x/history", 4, "ReadTimeout"),
    OutcomeUnknownError("POST", RUN, "ReadTimeout"),
])
def test_an_error_without_an_answer_or_a_request_id_has_none(exc):
    assert request_id_of(exc) is None
    assert request_id_in(str(exc)) is None


def test_no_text_has_no_request_id():
    assert request_id_in(None) is None and request_id_in("") is None
    assert request_id_of(ValueError("request_id")) is None


# --------------------------------------------------------------------------- history


def test_the_history_pages_up_to_the_documented_100_lines_and_refuses_more(fake, client):
    for _ in range(120):
        client.run_build(body())
    records, total = client.history(JOB, offset=0, limit=100)
    assert (len(records), total) == (100, 120)
    assert [r.build_no for r in records[:2]] == ["120", "119"]  # newest first
    rest, _ = client.history(JOB, offset=100, limit=100)
    assert [r.build_no for r in rest] == [str(n) for n in range(20, 0, -1)]
    for offset, limit in ((0, 101), (-1, 10)):
        with pytest.raises(ApiError) as info:
            client.history(JOB, offset=offset, limit=limit)
        assert (info.value.status, info.value.error_code) == (400, "CB.00060200")


@pytest.mark.parametrize("word", ["RUNNING", "success", " Failed ", "WEIRD", "", "aborted"])
@pytest.mark.parametrize("end", [None, "2025-09-12T08:30:27.123+08:00", "1970-01-01T00:00:00Z"])
def test_a_history_line_is_decided_as_its_record_would_be(word, end):
    from bot.codearts.answers import history_record_from, state_from_times

    item = {"build_number": 7, "result": word, "start_time": "2025-09-12T08:00:00.5Z",
            "end_time": end}
    line = history_record_from(item)
    assert line is not None
    assert state_from_times(line.result, line.start_time, line.end_time) == build_state_from(
        {"status": word, "start_time": item["start_time"], "end_time": end})
