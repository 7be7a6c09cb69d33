"""Fuzzing the whole path: property-based slash commands, interaction payloads and raw
bodies, signed like Slack's, into the real HTTP endpoint of one running bot.

Every example must get an HTTP answer without a traceback in it, put no traceback in
anything posted to Slack, start no build, and leave ``/healthz`` answering 200. No
build may start at all here: every job asks to confirm, and no fuzzed click comes
from the one user with a pending request. The last test checks the same bot still
runs a valid, confirmed command, exactly once.

``FUZZ_EXAMPLES=2000 pytest tests/test_fuzz_endpoint.py`` searches longer, with a
random seed; by default the search is small and derandomized, so CI is stable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot import messages as msg
from tests.conftest import BACKENDS, PG_URL, _pg_schema_url
from tests.harness import BACKEND_ID, CONFIG, SECRET, Bot, closed_port_url, running_bot
from tests.slack_requests import signed_headers

_LONG = "FUZZ_EXAMPLES" in os.environ
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "40")), deadline=None,
                derandomize=not _LONG, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])

# Every job asks first here (the harness's docs job does not), so no build may start.
FUZZ_CONFIG = CONFIG.replace("confirm = false", "confirm = true")
PENDING = "<<pending-request-id>>"  # replaced by the id of a real pending confirmation
HOOK = "<<hook>>"  # replaced by a fresh response_url on the fake Slack
FORM = "application/x-www-form-urlencoded"

ANY_CHAR = st.characters(exclude_categories=["Cs"])  # every code point a string can hold
ANY_TEXT = st.text(ANY_CHAR, max_size=80)
HUGE = st.builds(lambda c, n: c * n, ANY_CHAR, st.integers(8_000, 20_000))
CONTROL = st.text(st.characters(max_codepoint=0x1F) | st.sampled_from("\x7f\u202e\u200b\ufeff"),
                  min_size=1, max_size=5)
JOBS = st.sampled_from(["backend", "docs", "BACKEND", "nosuchjob", BACKEND_ID, BACKEND_ID.upper(),
                        "help", "list", "", "<@UADMIN>", "&lt;backend&gt;"])
NAMES = st.sampled_from(["codeBranch", "target", "commit", "tag", "PATH", "Ld_Preload", "path",
                         "bash_env", "x" * 129, "", "a-b", "ä"]) | ANY_TEXT
VALUES = (st.sampled_from(["master", "develop", "staging", "prod", "a;b", "<!channel>", "&amp;",
                           "abc1234", "-rf", "$(id)", "`id`", "\"open", "x" * 8193])
          | ANY_TEXT | CONTROL | HUGE)
QUOTES = st.sampled_from(["", '"', "'", "\u201c", "\u201d"])
PARAM = st.builds(lambda n, v, q: f"{n}={q}{v}{q}", NAMES, VALUES, QUOTES) | ANY_TEXT
SEPARATOR = st.sampled_from([" ", "  ", "\t", "\n", "\u00a0", "\u3000"])
COMMAND_TEXT = (ANY_TEXT | CONTROL | HUGE
                | st.builds(lambda job, params, sep: sep.join([job, *params]),
                            JOBS, st.lists(PARAM, max_size=5), SEPARATOR))
USERS = st.sampled_from(["UALICE", "UADMIN", "UMALLORY", "UBOB", ""]) | ANY_TEXT
CLICK_USERS = st.sampled_from(["UADMIN", "UMALLORY", "UBOB", "", "ualice", "UALICE "]) | ANY_TEXT
CHANNELS = st.sampled_from(["CBUILDS", "CRANDOM", ""]) | ANY_TEXT
# Where the bot answers: the fake Slack, nowhere, or something that fails at once
# (never a host name to resolve: that could wait on DNS).
RESPONSE_URLS = (st.just(HOOK) | st.just("")
                 | st.sampled_from(["http://[::1", "file:///etc/passwd", "ftp://127.0.0.1/x",
                                    "javascript:alert(1)", "http://127.0.0.1:0/x"])
                 | ANY_TEXT.filter(lambda s: not s.lower().startswith("http")))

JSON_LEAF = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
             | ANY_TEXT | st.just(PENDING))
JSON_ANY = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(ANY_TEXT, inner, max_size=3), max_leaves=8)
ACTION_IDS = st.sampled_from([msg.RUN, msg.CANCEL, msg.STOP, msg.REBUILD])
ACTION = st.fixed_dictionaries(
    {"action_id": ACTION_IDS},
    optional={"value": st.just(PENDING) | ANY_TEXT | HUGE | JSON_ANY,
              "type": st.just("button") | JSON_ANY, "block_id": ANY_TEXT | JSON_ANY,
              "action_ts": ANY_TEXT | JSON_ANY})
WELL_SHAPED_CLICK = st.fixed_dictionaries(
    {"type": st.just("block_actions"), "actions": st.lists(ACTION, min_size=1, max_size=3),
     "user": st.fixed_dictionaries({"id": CLICK_USERS}, optional={"team_id": ANY_TEXT})},
    optional={"team": st.fixed_dictionaries({"id": ANY_TEXT}), "response_url": RESPONSE_URLS,
              "channel": st.fixed_dictionaries({"id": CHANNELS}), "api_app_id": ANY_TEXT,
              "container": JSON_ANY, "trigger_id": ANY_TEXT, "token": ANY_TEXT})
ODD_CLICK = st.fixed_dictionaries(
    {"type": st.sampled_from(["block_actions", "interactive_message", "view_submission",
                              "view_closed", "shortcut", "message_action",
                              "block_suggestion"]) | JSON_ANY},
    optional={"actions": st.lists(ACTION | JSON_ANY, max_size=3) | JSON_ANY,
              "user": st.fixed_dictionaries({"id": CLICK_USERS}) | JSON_ANY,
              "team": JSON_ANY, "response_url": RESPONSE_URLS | JSON_ANY, "view": JSON_ANY,
              "callback_id": JSON_ANY, "channel": JSON_ANY, "container": JSON_ANY,
              "enterprise": JSON_ANY, "authorizations": JSON_ANY,
              "is_enterprise_install": JSON_ANY})
SLASH_FIELDS = ["token", "team_id", "team_domain", "channel_id", "channel_name", "user_id",
                "user_name", "command", "text", "api_app_id", "response_url", "trigger_id",
                "enterprise_id", "is_enterprise_install"]
FORM_FIELDS = st.lists(st.tuples(st.sampled_from(SLASH_FIELDS) | ANY_TEXT,
                                 ANY_TEXT | CONTROL | st.just(HOOK) | st.just("/build")),
                       max_size=16)
CONTENT_TYPES = st.sampled_from([FORM, "application/json", "text/plain", "",
                                 "multipart/form-data; boundary=x", "application/xml",
                                 FORM + "; charset=latin-1"])
RAW_BODIES = (st.binary(max_size=600)
              | ANY_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass"))
              | ANY_TEXT.map(lambda t: b"payload=" + t.encode("utf-8", "surrogatepass"))
              | JSON_ANY.map(lambda v: json.dumps(v).encode())
              | JSON_ANY.map(lambda v: urlencode({"payload": json.dumps(v)}).encode()))
# Bodies that used to crash Bolt while it parsed them, before the signature check moved first.
CRASHERS = [b"\xff\xfe", urlencode({"payload": "{not json"}).encode(),
            urlencode({"payload": "[1, 2]"}).encode(), urlencode({"payload": "null"}).encode(),
            urlencode({"payload": '"text"'}).encode()]


@pytest.fixture(scope="module", params=BACKENDS)
def fuzz_bot(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bot]:
    """One bot for every example (starting one per example would take minutes)."""
    tmp = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    if request.param == "sqlite":
        with running_bot(f"sqlite:///{tmp / 'buildbot.db'}", tmp,
                              config=FUZZ_CONFIG) as bot:
            yield bot
        return
    assert PG_URL
    schema = cast(Generator[str, None, None], _pg_schema_url(PG_URL))
    try:
        with running_bot(next(schema), tmp, config=FUZZ_CONFIG) as bot:
            yield bot
    finally:
        schema.close()


@pytest.fixture(scope="module")
def pending(fuzz_bot: Bot) -> str:
    """A real pending confirmation of UALICE's, for fuzzed clicks to aim at."""
    rid, _url = fuzz_bot.confirmation("backend")
    return rid


def runs(bot: Bot) -> list[Any]:
    return bot.codearts.requests_to("/v3/jobs/build")


def fill(bot: Bot, raw: str, rid: str) -> str:
    return raw.replace(PENDING, rid).replace(HOOK, bot.slack.response_url())


def send(bot: Bot, body: bytes, content_type: str = FORM, *,
         secret: str = SECRET) -> httpx.Response:
    headers = signed_headers(secret, body)
    headers["Content-Type"] = content_type
    return bot.sender.http.post(bot.sender.url, content=body, headers=headers)


def assert_harmless(bot: Bot, resp: httpx.Response, calls_before: int) -> None:
    """The invariants every fuzzed request must keep, whatever it was."""
    for clue in ("Traceback", 'File "/', "Error:"):
        assert clue not in resp.text, resp.text[:500]
    assert bot.runtime.flow.wait_idle(15), "the bot's worker did not settle"
    posted = repr([c.params for c in bot.slack.all_calls()[calls_before:]])
    assert "Traceback" not in posted and 'File "/' not in posted
    assert runs(bot) == [], "a build was started by fuzzed input"
    assert httpx.get(bot.url + "/healthz").status_code == 200


# --- slash commands -----------------------------------------------------------------------

@FUZZ
@given(text=COMMAND_TEXT, user=USERS, channel=CHANNELS, response_url=RESPONSE_URLS)
@example(text="backend PATH=/tmp", user="UADMIN", channel="CBUILDS", response_url=HOOK)
@example(text=f"{BACKEND_ID} LD_PRELOAD=x", user="UALICE", channel="CBUILDS", response_url=HOOK)
@example(text="backend codeBranch=" + "x" * 20_000, user="UALICE", channel="CBUILDS",
         response_url=HOOK)
def test_any_command_text_is_answered_and_starts_nothing(
        fuzz_bot: Bot, pending: str, text: str, user: str, channel: str,
        response_url: str) -> None:
    bot = fuzz_bot
    before = len(bot.slack.all_calls())
    body = urlencode({"token": "x", "team_id": "T1", "channel_id": channel, "user_id": user,
                      "command": "/build", "text": text,
                      "response_url": fill(bot, response_url, pending),
                      "trigger_id": "1.2.3"}).encode()
    resp = send(bot, body)
    assert resp.status_code == 200, resp.text[:300]
    if resp.content:  # an answer in the ack is a message for the user alone
        answer = resp.json()
        assert answer["response_type"] == "ephemeral" and answer["text"]
    assert_harmless(bot, resp, before)


@FUZZ
@given(fields=FORM_FIELDS)
@example(fields=[("command", "/build"), ("text", "backend")])  # no user, channel or url
@example(fields=[("command", "/build"), ("command", "/build"), ("text", "a"), ("text", "b")])
@example(fields=[("command", "/deploy"), ("text", "backend")])
def test_any_slash_command_form_is_answered_and_starts_nothing(
        fuzz_bot: Bot, pending: str, fields: list[tuple[str, str]]) -> None:
    bot = fuzz_bot
    before = len(bot.slack.all_calls())
    body = urlencode([(k, fill(bot, v, pending)) for k, v in fields]).encode()
    resp = send(bot, body)
    commands = [v for k, v in fields if k == "command"]
    ours = bool(commands) and commands[-1] == "/build"  # Bolt keeps a repeated field's last
    # Bolt answers 404 for a request no listener takes (e.g. another command)
    assert resp.status_code == 200 if ours else resp.status_code in (200, 404), resp.text[:300]
    assert_harmless(bot, resp, before)


# --- clicks ----------------------------------------------------------------------------------

@FUZZ
@given(payload=WELL_SHAPED_CLICK)
@example(payload={"type": "block_actions", "user": {"id": "UMALLORY"},
                  "actions": [{"action_id": msg.RUN, "value": PENDING}], "response_url": HOOK})
@example(payload={"type": "block_actions", "user": {"id": "UMALLORY"},
                  "actions": [{"action_id": msg.CANCEL, "value": PENDING}]})
@example(payload={"type": "block_actions", "user": {"id": "UBOB"},
                  "actions": [{"action_id": msg.RUN, "value": [PENDING]}]})
def test_any_click_on_our_buttons_is_answered_and_starts_nothing(
        fuzz_bot: Bot, pending: str, payload: dict[str, Any]) -> None:
    bot = fuzz_bot
    before = len(bot.slack.all_calls())
    body = urlencode({"payload": fill(bot, json.dumps(payload), pending)}).encode()
    resp = send(bot, body)
    assert resp.status_code == 200, resp.text[:300]
    assert_harmless(bot, resp, before)
    assert bot.store.get_request(pending).state == "pending"  # nobody else can touch it


@FUZZ
@given(payload=ODD_CLICK)
def test_any_interaction_payload_is_answered_without_a_traceback(
        fuzz_bot: Bot, pending: str, payload: dict[str, Any]) -> None:
    bot = fuzz_bot
    before = len(bot.slack.all_calls())
    resp = send(bot, urlencode({"payload": fill(bot, json.dumps(payload), pending)}).encode())
    assert_harmless(bot, resp, before)


# --- bodies that are not what Slack sends ----------------------------------------------------

@FUZZ
@given(body=RAW_BODIES, content_type=CONTENT_TYPES, signed=st.booleans())
def test_any_body_is_answered_without_a_traceback_and_starts_nothing(
        fuzz_bot: Bot, pending: str, body: bytes, content_type: str, signed: bool) -> None:
    bot = fuzz_bot
    before = len(bot.slack.all_calls())
    body = fill(bot, body.decode("latin-1"), pending).encode("latin-1")
    resp = send(bot, body, content_type, secret=SECRET if signed else "not-the-secret")
    if not signed:  # never past the signature check
        assert resp.status_code == 401, resp.text[:300]
    assert_harmless(bot, resp, before)


@FUZZ
@given(body=RAW_BODIES, content_type=CONTENT_TYPES)
@example(body=CRASHERS[0], content_type=FORM)
@example(body=CRASHERS[1], content_type=FORM)
@example(body=CRASHERS[2], content_type=FORM)
def test_any_signed_body_gets_an_answer_slack_accepts(
        fuzz_bot: Bot, pending: str, body: bytes, content_type: str) -> None:
    resp = send(fuzz_bot, body, content_type)
    assert resp.status_code in (200, 400, 401, 404), resp.text[:300]


@FUZZ
@given(payload=ODD_CLICK)
@example(payload={"type": "block_actions", "actions": {"a": 1}, "user": {"id": "UBOB"}})
@example(payload={"type": "view_submission", "view": 5})
def test_any_signed_interaction_payload_gets_an_answer_slack_accepts(
        fuzz_bot: Bot, pending: str, payload: dict[str, Any]) -> None:
    resp = send(fuzz_bot, urlencode({"payload": json.dumps(payload)}).encode())
    assert resp.status_code in (200, 400, 404), resp.text[:300]


def test_response_url_that_cannot_be_reached_does_not_stall_the_bot(
        fuzz_bot: Bot, pending: str) -> None:
    bot = fuzz_bot
    body = urlencode({"command": "/build", "text": "backend", "user_id": "UALICE",
                      "channel_id": "CBUILDS", "team_id": "T1",
                      "response_url": closed_port_url() + "/hooks/1"}).encode()
    assert send(bot, body).status_code == 200
    bot.wait_idle(timeout=20)
    assert runs(bot) == []
    assert httpx.get(bot.url + "/healthz").status_code == 200


# --- and the bot still works -----------------------------------------------------------------

def test_after_the_fuzzing_a_valid_confirmed_command_starts_exactly_one_build(
        fuzz_bot: Bot, pending: str) -> None:
    bot = fuzz_bot
    bot.wait_idle()
    assert runs(bot) == []
    rid, url = bot.confirmation("backend codeBranch=develop")
    bot.click(msg.RUN, rid, response_url=url)
    bot.click(msg.RUN, rid, response_url=url)
    bot.wait_idle()
    assert len(runs(bot)) == 1
    assert httpx.get(bot.url + "/healthz").status_code == 200


@pytest.mark.parametrize("missing", ["user_id", "channel_id"])
def test_a_command_without_user_or_channel_starts_nothing(
        db_url: str, tmp_path: Path, missing: str) -> None:
    with running_bot(db_url, tmp_path) as bot:  # the harness's docs job: no confirm
        fields = {"command": "/build", "text": "docs", "user_id": "UANYONE",
                  "channel_id": "CRANDOM", "response_url": bot.slack.response_url()}
        del fields[missing]
        resp = send(bot, urlencode(fields).encode())
        assert resp.status_code == 200
        bot.wait_idle()
        assert runs(bot) == []
