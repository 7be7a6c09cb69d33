"""The log tail: the pure text work (bot/logtail.py), the code block it is shown in, and
the client's two new reads (steps, real-time log) against the loopback FakeCodeArts."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import messages as msg
from bot.codearts.answers import Step
from bot.codearts.auth import TokenAuth
from bot.codearts.client import CodeArtsClient
from bot.codearts.errors import ApiError, NotSentError
from bot.lifecycle import AnnounceState, decide_progress, progress_delay, progress_line, step_words
from bot.logtail import LINE_CHARS, MASK, TailBuffer, clean, mask_secrets, strip_ansi
from tests.fakes.codearts import FakeCodeArts

JOB = "f9d6c8466d614a9788e9a0acf6c15f46"
LOG = f"/v3/jobs/{JOB}/1/real-time-log"
DETAILS = f"/v3/jobs/{JOB}/1/history-details"


# --- cleaning lines -------------------------------------------------------------------

@pytest.mark.parametrize("raw,expected", [
    ("\x1b[31;1mERROR\x1b[0m: boom", "ERROR: boom"),
    ("\x1b]0;title\x07visible", "visible"),
    ("10%\r50%\r100% done", "100% done"),
    ("tab\there", "tab    here"),
    ("bell\x07 and nul\x00", "bell and nul"),
])
def test_control_codes_are_removed(raw: str, expected: str) -> None:
    assert strip_ansi(raw) == expected


@pytest.mark.parametrize("raw,secret", [
    ("Authorization: Bearer abc.def.ghi", "abc.def"),
    ("authorization=SDK-HMAC-SHA256 Access=HPUAX, Signature=00ff", "Signature"),
    ("curl -H 'X-Auth-Token: MIIfake0123456789' x", "MIIfake0123456789"),
    ("X-Subject-Token: tok_1234567890", "tok_1234567890"),
    ("password=hunter2", "hunter2"),
    ('"db_password": "s3cr3t!"', "s3cr3t!"),
    ("--password hunter2 --user bob", "hunter2"),
    ("token=0123456789abcdef0123", "0123456789abcdef0123"),
    ("GITHUB_TOKEN=ghp_0123456789abcdefghijABCDEFGHIJ", "ghp_0123456789"),
    ("secret: YWJjZGVmZ2hpamtsbW5vcA==", "YWJjZGVmZ2hpamtsbW5vcA"),
    ("api_key=ABCDEFGH12345678", "ABCDEFGH12345678"),
    ("sk=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY12", "wJalrXUtnFEMI"),
    ("using AK HPUAEXAMPLEAK0123456 now", "HPUAEXAMPLEAK0123456"),
    ("secret key wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY12 leaked", "wJalrXUtnFEMI"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig-nature", "eyJzdWIiOiIxMjM0In0"),
    ("iam MII" + "A" * 80, "MIIAAAA"),
    ("slack xoxb-1234-5678-abcdefgh", "xoxb-1234"),
])
def test_secrets_are_masked(raw: str, secret: str) -> None:
    cleaned = clean(raw)
    assert secret not in cleaned and MASK in cleaned


@pytest.mark.parametrize("line", [
    "commit 0123456789abcdef0123456789abcdef01234567",  # a git commit is not a secret
    "task=compile_everything",
    "Incorrect password for user bob",
    "[INFO] Build image: success (12 s)",
    "keyboard_layout=us",  # a name with a secret word inside a harmless one
])
def test_ordinary_lines_are_left_alone(line: str) -> None:
    assert clean(line) == line


def test_the_bots_own_credentials_are_masked_whatever_they_look_like() -> None:
    assert mask_secrets("sent abc-def-ghi to x", ["abc-def-ghi"]) == f"sent {MASK} to x"


def test_a_long_line_keeps_its_end() -> None:
    line = "x" * 5000 + " the error"
    cleaned = clean(line)
    assert len(cleaned) == LINE_CHARS and cleaned.endswith("the error")


# --- the buffer -----------------------------------------------------------------------

def test_only_the_last_lines_are_kept_and_a_line_split_across_pages_is_whole() -> None:
    tail = TailBuffer(3)
    for chunk in ("a\nb\nc", "c\nd\npass", "word=hunter2\n\x1b[3", "1mred\x1b[0m\n\n\n"):
        tail.feed(chunk)
    assert tail.lines() == ["d", f"password={MASK}", "red"]
    assert tail.fed == sum(len(c) for c in ("a\nb\nc", "c\nd\npass", "word=hunter2\n\x1b[3",
                                            "1mred\x1b[0m\n\n\n"))


def test_an_unfinished_last_line_is_shown_and_zero_lines_is_nothing() -> None:
    tail = TailBuffer(2)
    tail.feed("one\ntwo\nthree")
    assert tail.lines() == ["two", "three"]
    none = TailBuffer(0)
    none.feed("x\ny\n")
    assert none.lines() == []


def test_a_line_without_end_does_not_grow_memory() -> None:
    tail = TailBuffer(5)
    for _ in range(200):
        tail.feed("y" * 10_000)
    assert len(tail._partial) <= 64 * LINE_CHARS
    assert tail.lines()[-1].endswith("y")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="ab \n\r\x1b[0m=", max_size=40), max_size=30),
       st.integers(min_value=1, max_value=8))
def test_pages_give_the_same_tail_as_the_whole_log(chunks: list[str], keep: int) -> None:
    """However the log is cut into pages, the tail is that of the whole text."""
    whole = TailBuffer(keep)
    whole.feed("".join(chunks))
    paged = TailBuffer(keep)
    for chunk in chunks:
        paged.feed(chunk)
    assert paged.lines() == whole.lines()
    assert len(paged.lines()) <= keep
    assert all("\x1b" not in line and "\n" not in line for line in paged.lines())


# --- the code block -------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="a`&<>\u00e9 x", max_size=600), min_size=1, max_size=60))
def test_the_code_block_fits_a_section_and_cannot_be_closed_early(lines: list[str]) -> None:
    block = msg._code_block(lines)
    assert len(block) <= msg.SECTION_CHARS
    assert block.startswith("```\n") and block.endswith("\n```")
    inner = block[4:-4]
    assert "``" not in inner and "<" not in inner and ">" not in inner
    if lines[-1].strip() and len(lines[-1]) < 100:  # the end is what is kept
        assert inner.endswith(msg._log_line(lines[-1]))


def test_the_code_block_never_cuts_an_entity() -> None:
    block = msg._code_block(["&" * 3000])
    inner = block[4:-4]
    assert inner.startswith("…&amp;") and "&amp" not in inner.replace("&amp;", "")


# --- progress words -------------------------------------------------------------------

@pytest.mark.parametrize("steps,words", [
    ([], None),
    ([Step(name="a", status=""), Step(name="b", status="")], None),
    ([Step(name="a", status="success"), Step(name="b", status="running")], "step 2 of 2: b"),
    ([Step(name="a", status="success"), Step(name="b", status="error")], "step 2 of 2: b failed"),
    ([Step(name="a", status="success"), Step(name="b", status="")], "step 2 of 2: b"),
    ([Step(name="a", status="success")] * 3, "all 3 steps done"),
    ([Step(name="a", status="queued")], "step 1 of 1: a (queued)"),
    ([Step(name="<!here> & co", status="running")], "step 1 of 1: &lt;!here&gt; &amp; co"),
])
def test_step_words(steps: list[Step], words: str | None) -> None:
    assert step_words(steps) == words


def test_elapsed_time_moves_by_marks_not_every_minute() -> None:
    assert progress_line(59, None) == "Running for less than a minute"
    assert progress_line(61, None) == "Running for over 1 min"
    assert progress_line(4 * 60 + 59, None) == "Running for over 2 min"  # no change at 3, 4
    assert progress_line(95 * 60, None) == "Running for over 1 h 30 min"
    assert progress_line(3 * 3600 + 120, [Step(name="x", status="running")]) == \
        "Running for over 3 h · step 1 of 1: x"
    marks = {progress_line(m * 60, None) for m in range(0, 24 * 60)}
    assert len(marks) < 35  # a day-long build's time is shown at most ~30 ways


def test_a_refused_update_waits_for_retry_after_within_bounds() -> None:
    assert progress_delay(every=10, retry_after=30, permanent=False) == 30
    assert progress_delay(every=10, retry_after=1, permanent=False) == 10
    assert progress_delay(every=10, retry_after=10**6, permanent=False) == 600
    assert progress_delay(every=10, retry_after=None, permanent=True) == 100
    assert progress_delay(every=10, retry_after=None, permanent=False) == 10


def test_decide_progress() -> None:
    from tests.test_lifecycle import build as make_build

    posted = make_build(announce=AnnounceState.POSTED, message_ts="1.2",
                        message_channel="C")
    assert decide_progress(posted, "x", now=100, every=10)
    assert not decide_progress(posted, "x", now=100, every=0)  # progress off
    from dataclasses import replace

    shown = replace(posted, progress_text="x", progress_due_at=90)
    assert not decide_progress(shown, "x", now=100, every=10)  # nothing changed
    assert decide_progress(shown, "y", now=100, every=10)
    assert not decide_progress(replace(shown, progress_due_at=101), "y", now=100, every=10)
    assert not decide_progress(replace(posted, message_ts=None), "x", now=100, every=10)


# --- the client -----------------------------------------------------------------------

@pytest.fixture
def fake() -> Iterator[FakeCodeArts]:
    with FakeCodeArts() as f:
        f.add_job(JOB, duration=3600, steps=["Checkout", "Build"])
        httpx.post(f.url + "/v3/jobs/build", json={"job_id": JOB},
                   headers={"X-Auth-Token": f.token})
        yield f


@pytest.fixture
def client(fake: FakeCodeArts) -> Iterator[CodeArtsClient]:
    with CodeArtsClient(fake.url, auth=TokenAuth(fake.token), timeout=3.0, backoff=0.01) as c:
        yield c


def test_steps_are_read_and_odd_records_skipped(fake: FakeCodeArts,
                                                client: CodeArtsClient) -> None:
    assert [s.name for s in client.build_steps(JOB, 1)] == ["Checkout", "Build"]
    fake.set_steps(JOB, 1, [{"name": "ok", "status": "RUNNING", "build_time": 5},
                            {"status": "success"}, "junk", {"name": "   "},
                            {"name": "n", "status": None, "build_time": "x"},
                            {"name": "neg", "status": "success", "build_time": -1}])
    assert client.build_steps(JOB, 1) == [
        Step(name="ok", status="running", build_time_ms=5), Step(name="n", status=""),
        Step(name="neg", status="success")]


def test_steps_absent_is_no_steps_and_a_failure_is_not_retried(
        fake: FakeCodeArts, client: CodeArtsClient) -> None:
    fake.fail_next(200, {"job_name": "x"}, path_prefix=DETAILS)
    assert client.build_steps(JOB, 1) == []
    fake.fail_next(503, path_prefix=DETAILS, count=3)
    with pytest.raises(ApiError):
        client.build_steps(JOB, 1)
    assert len(fake.requests_to(DETAILS)) == 2  # one each: best effort, never retried


def test_the_log_is_read_in_pages_and_only_its_tail_kept(
        fake: FakeCodeArts, client: CodeArtsClient) -> None:
    text = "".join(f"line {i} password=p{i}\n" for i in range(500))
    fake.set_log(JOB, 1, text)
    tail = client.log_tail(JOB, 1, lines=5, page=1000)
    assert tail.lines == tuple(f"line {i} password={MASK}" for i in range(495, 500))
    assert not tail.truncated and tail.read_chars == len(text)
    pages = fake.requests_to(LOG)
    assert len(pages) == -(-len(text) // 1000)
    assert [p.query for p in pages[:2]] == ["offset=0&length=1000", "offset=1000&length=1000"]


def test_a_log_past_the_size_cap_stops_and_says_so(fake: FakeCodeArts,
                                                   client: CodeArtsClient) -> None:
    fake.set_log(JOB, 1, "x\n" * 100_000)
    tail = client.log_tail(JOB, 1, lines=3, page=4096, max_chars=10_000)
    assert tail.truncated and tail.read_chars == 10_000 and tail.lines == ("x",) * 3
    assert len(fake.requests_to(LOG)) == 3


def test_an_unreadable_log_raises_and_a_later_page_failing_keeps_what_was_read(
        fake: FakeCodeArts, client: CodeArtsClient) -> None:
    fake.set_log(JOB, 1, "a\nb\nc\nd\n")
    fake.fail_next(404, path_prefix=LOG)
    with pytest.raises(ApiError):
        client.log_tail(JOB, 1, lines=2)
    fake.reset()
    first = client.log_tail(JOB, 1, lines=2, page=4)  # pages "a\nb\n", "c\nd\n"
    assert first.lines == ("c", "d") and not first.truncated


def test_the_tail_keeps_to_its_time_budget(fake: FakeCodeArts,
                                           client: CodeArtsClient) -> None:
    fake.set_log(JOB, 1, "a\n")
    fake.hang(5, path_prefix=LOG, count=5)
    began = time.monotonic()
    with pytest.raises(NotSentError):
        client.log_tail(JOB, 1, lines=2, budget=0.5)
    assert time.monotonic() - began < 2.5


def test_a_later_page_failing_keeps_the_lines_already_read(fake: FakeCodeArts,
                                                           client: CodeArtsClient) -> None:
    fake.set_log(JOB, 1, "a\nb\nc\nd\n")
    client.log_tail(JOB, 1, lines=2, page=4)
    fake.reset()
    # the second page is refused: what the first one gave is kept, marked as cut
    fake.fail_next(200, {"result": {"content": "a\nb\n", "offset": 0, "current_offset": 4,
                                    "has_more_data": True}, "status": "success"},
                   path_prefix=LOG)
    fake.fail_next(403, path_prefix=LOG)
    tail = client.log_tail(JOB, 1, lines=5, page=4)
    assert tail.lines == ("a", "b") and tail.truncated
