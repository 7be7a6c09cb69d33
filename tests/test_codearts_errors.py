"""The error table and ``describe``: what each CodeArts error code, HTTP status and kind of
answer tells the user, word for word. A new row of ``TABLE`` needs a line in ``ROWS``."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from bot.codearts.errors import (
    TABLE,
    ApiError,
    AuthError,
    BadResponseError,
    CodeArtsError,
    Kind,
    NotSentError,
    OutcomeUnknownError,
    describe,
)
from bot.status import build_standing

WRONG_INPUT = "Check the input and the job's parameters."
TOO_LARGE = ("The request was too large for CodeArts or a proxy in front of it: "
             "use shorter parameter values.")
NO_SUCH_TASK = "No such build task: check the job ID in the bot's config."
IAM_DOWN = "IAM is unreachable or having trouble: try again later."
TROUBLE = "CodeArts is having trouble: try again later."

# (the row of TABLE it reads, an error, what kind of trouble it is, the words the user reads)
ROWS: list[tuple[str, CodeArtsError, Kind, str]] = [
    ("code DEVCB.00031006", ApiError(404, "DEVCB.00031006", "Build record not found."),
     Kind.NOT_FOUND, NO_SUCH_TASK),
    ("code DEVCB.00031006", ApiError(400, "DEVCB.00031006", "Build task not found."),
     Kind.NOT_FOUND, WRONG_INPUT),  # a code's row without words keeps its status's
    ("code DEVCB.00031006", ApiError(200, "DEVCB.00031006", "Build record not found."),
     Kind.NOT_FOUND, "CodeArts refused the request."),
    ("HTTP 400", ApiError(400, "CB.00060200", "Invalid parameter."), Kind.REFUSED, WRONG_INPUT),
    ("HTTP 401", ApiError(401, "APIGW.0301", "verify token fail"), Kind.AUTH,
     "The bot's CodeArts credentials are wrong or expired: tell the bot's operator."),
    ("HTTP 403", ApiError(403, "403", ""), Kind.AUTH,
     "The bot's account has no permission on this build task."),
    ("HTTP 404", ApiError(404, "APIGW.0101", "The API does not exist"), Kind.NOT_FOUND,
     NO_SUCH_TASK),
    ("HTTP 413", ApiError(413, "413", "<html>too large</html>"), Kind.REFUSED, TOO_LARGE),
    ("HTTP 429", ApiError(429, "APIGW.0308", "throttled"), Kind.RETRY_LATER,
     "CodeArts is throttling requests: try again in a minute."),
    ("HTTP 2xx", ApiError(200, "CB.1", "refused"), Kind.REFUSED, "CodeArts refused the request."),
    ("HTTP 5xx", ApiError(500, "CB.00060101", "Internal error."), Kind.RETRY_LATER, TROUBLE),
    ("HTTP 5xx", ApiError(503, "CB.00060100", "Network busy"), Kind.RETRY_LATER, TROUBLE),
    ("HTTP 5xx", ApiError(600, "600", "odd"), Kind.RETRY_LATER, TROUBLE),
    ("HTTP", ApiError(409, "CB.2", "conflict"), Kind.REFUSED, ""),
    ("HTTP", ApiError(302, "302", "moved"), Kind.REFUSED, ""),
    ("no answer", NotSentError("GET", "/v4/jobs", 4, "ConnectError"), Kind.RETRY_LATER,
     "CodeArts could not be reached: try again later."),
    ("unreadable", BadResponseError(200, None, "<html>"), Kind.UNREADABLE,
     "CodeArts may have changed its API."),
    ("HTTP 5xx", BadResponseError(502, None, "<html>"), Kind.UNREADABLE, TROUBLE),
    ("answer lost", OutcomeUnknownError("POST", "/v3/jobs/build", "ReadTimeout"), Kind.LOST,
     "Check CodeArts before trying again; the bot will not send it again by itself."),
    ("IAM HTTP 5xx", AuthError(503, "", ""), Kind.RETRY_LATER, IAM_DOWN),
    ("IAM no answer", AuthError(None, "", "IAM could not be reached (ConnectError)"),
     Kind.RETRY_LATER, IAM_DOWN),
    ("IAM HTTP", AuthError(401, "IAM.0001", "The password is wrong"), Kind.AUTH,
     "The bot's IAM user, password, account or project is wrong: tell the bot's operator."),
    ("IAM HTTP", AuthError(401, "DEVCB.00031006", "x"), Kind.AUTH,  # CodeArts' codes: not IAM's
     "The bot's IAM user, password, account or project is wrong: tell the bot's operator."),
    ("other", CodeArtsError("something else"), Kind.RETRY_LATER, "Try again later."),
]


@pytest.mark.parametrize(("row", "exc", "kind", "words"), ROWS,
                         ids=[f"{r[0]}-{type(r[1]).__name__}-{i}" for i, r in enumerate(ROWS)])
def test_each_row_tells_the_user_its_words(row: str, exc: CodeArtsError, kind: Kind,
                                           words: str) -> None:
    told = describe(exc)
    assert (told.kind, told.hint) == (kind, words)
    assert getattr(exc, "hint", words) == words
    if words and type(exc) is not CodeArtsError and not isinstance(exc, NotSentError):
        assert words in told.sentence  # (NotSentError's sentence says it its own way)


def test_every_row_of_the_table_is_in_this_test() -> None:
    assert {row for row, *_ in ROWS} == set(TABLE)


@pytest.mark.parametrize("code", ["HTTP", "other", "unreadable", "no answer", "IAM HTTP",
                                  "code DEVCB.00031006"])
def test_an_error_code_from_the_answer_never_picks_another_kind_of_row(code: str) -> None:
    """Codes come from an untrusted body: only ``code <it>`` rows are theirs."""
    told = describe(ApiError(400, code, "x"))
    assert (told.kind, told.hint) == (Kind.REFUSED, WRONG_INPUT)


# --- describe: the same words everywhere they are shown ---------------------------------

@pytest.mark.parametrize(("exc", "expected"), [
    (ApiError(404, "DEVCB.00031006", "Build record not found.", "rid-1"), {
        "why": "CodeArts answered HTTP 404 DEVCB.00031006: Build record not found.",
        "brief": "CodeArts answered HTTP 404",
        "sentence": "CodeArts answered HTTP 404 DEVCB.00031006: Build record not found.. "
                    f"{NO_SUCH_TASK} (request ID rid-1)",
        "detail": "Build record not found.", "request_id": "rid-1", "may_have_acted": False}),
    (ApiError(409, "409", "", hint=""), {
        "why": "CodeArts answered HTTP 409", "brief": "CodeArts answered HTTP 409",
        "sentence": "CodeArts answered HTTP 409.", "detail": "CodeArts answered HTTP 409.",
        "request_id": None, "may_have_acted": False}),
    (ApiError(503, "CB.00060100", "Network busy"), {
        "why": "CodeArts answered HTTP 503 CB.00060100: Network busy",
        "sentence": f"CodeArts answered HTTP 503 CB.00060100: Network busy. {TROUBLE}",
        "may_have_acted": True}),
    (AuthError(401, "IAM.0001", "wrong", "iam-1"), {
        "why": "CodeArts answered HTTP 401", "brief": "CodeArts answered HTTP 401",
        "sentence": "The bot could not log in to Huawei Cloud IAM (HTTP 401 IAM.0001: wrong). "
                    "The bot's IAM user, password, account or project is wrong: tell the "
                    "bot's operator. (request ID iam-1)",
        "detail": "wrong", "status": 401, "error_code": "IAM.0001", "may_have_acted": False}),
    (AuthError(None, "", "IAM could not be reached (ConnectError)"), {
        "why": "CodeArts could not be asked",
        "sentence": "The bot could not log in to Huawei Cloud IAM (no answer: IAM could not "
                    f"be reached (ConnectError)). {IAM_DOWN}"}),
    (BadResponseError(200, "rid-200", "{}", "a run answer without a usable build number"), {
        "why": "CodeArts sent an answer buildbot could not read",
        "brief": "CodeArts sent an answer buildbot could not read",
        "sentence": "CodeArts sent a run answer without a usable build number (HTTP 200). "
                    "CodeArts may have changed its API. (request ID rid-200)",
        "detail": "{}", "status": 200, "error_code": None, "may_have_acted": True}),
    (NotSentError("POST", "/v3/jobs/build", 4, "ConnectError"), {
        "why": "CodeArts did not answer in time", "brief": "CodeArts did not answer in time",
        "sentence": "CodeArts could not be reached (ConnectError, 4 attempts); nothing was "
                    "started. Try again later.",
        "detail": "ConnectError", "status": None, "request_id": None, "may_have_acted": False}),
    (OutcomeUnknownError("POST", "/v3/jobs/build", "ReadTimeout"), {
        "why": "CodeArts could not be asked",
        "sentence": "The request to CodeArts was sent but no answer came back (ReadTimeout): it "
                    "may or may not have taken effect. Check CodeArts before trying again; the "
                    "bot will not send it again by itself.",
        "detail": "ReadTimeout", "may_have_acted": True}),
    (CodeArtsError("plain words"), {
        "why": "CodeArts could not be asked", "sentence": "plain words",
        "detail": "plain words", "error_msg": "plain words", "hint": "Try again later.",
        "may_have_acted": False}),
])
def test_describe_says_it_in_the_same_words_as_the_error(exc: CodeArtsError,
                                                         expected: dict[str, Any]) -> None:
    told = describe(exc)
    assert told.sentence == str(exc)
    assert {k: getattr(told, k) for k in expected} == expected


class _Refusing:
    def __init__(self, exc: CodeArtsError) -> None:
        self.exc = exc

    def build_state(self, job_id: str, build_no: str) -> Any:
        raise self.exc


@pytest.mark.parametrize(("exc", "kind"), [
    (ApiError(404, "APIGW.0101", "no such API"), "missing"),
    (ApiError(200, "DEVCB.00031006", "Build record not found."), "missing"),
    (ApiError(400, "DEVCB.00031006", "Build task not found."), "missing"),
    (ApiError(400, "CB.00060200", "Invalid parameter."), "unknown"),
    (ApiError(503, "CB.00060100", "Network busy"), "unknown"),
    (AuthError(404, "DEVCB.00031006", "x"), "unknown"),
    (NotSentError("GET", "/v4/jobs", 4, "ConnectError"), "unknown"),
])
def test_a_stop_reads_not_found_from_the_table(exc: CodeArtsError, kind: str) -> None:
    standing = build_standing(_Refusing(exc), "f" * 32, "7")  # type: ignore[arg-type]
    assert (standing.kind, standing.error) == (kind, exc)


def test_the_pure_core_imports_no_transport() -> None:
    """The errors and answers stand without httpx, so the core can use them."""
    core = ["command", "rules", "policy", "lifecycle", "messages", "forms"]
    code = (f"import sys, bot.codearts.errors, bot.codearts.answers, "
            f"{', '.join('bot.' + m for m in core)}; "
            "print(sorted(m for m in ('httpx', 'slack_sdk', 'sqlalchemy', "
            "'bot.codearts.client') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out == "[]\n"
