"""The CodeArts errors: the exception tree, the one table of what each error tells the
user, and ``describe``, the one function that turns any of them into the user's words.

Exceptions, all with a ``str()`` a user may read (never a secret)::

    CodeArtsError                 base: anything the client raises on purpose
     ├── ApiError                 CodeArts (or something in front of it) refused: any
     │                            4xx whatever its body, a JSON error on another status,
     │                            or an error inside a 2xx (status, error_code, error_msg,
     │                            request_id, hint); code and message read as the SDK does
     ├── AuthError                IAM login failed or IAM unreachable; the CodeArts
     │                            request was not sent (status may be None)
     ├── BadResponseError         a 2xx/3xx/5xx answer that is not JSON, or a 2xx without
     │                            the fields needed: the outcome is unknown
     ├── NotSentError             the request did not reach CodeArts (or was a read
     │                            that got no answer): nothing changed, safe to retry later
     └── OutcomeUnknownError      a run/stop was sent but its answer was lost: it may or
                                  may not have happened; never re-sent automatically

A new CodeArts error code is one row of ``TABLE`` (and one line of its test). Nothing here
does I/O or imports httpx: the pure core (``bot.lifecycle``) reads these errors without
depending on the transport.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot.masking import mask_text


class Kind(StrEnum):
    """What kind of trouble an error is, for the code that decides what happens next."""

    REFUSED = "refused"  # CodeArts said no: nothing was done
    NOT_FOUND = "not found"  # no such build task or build
    AUTH = "auth"  # the bot's credentials or rights: its operator's to fix
    RETRY_LATER = "retry later"  # busy, throttled or not reached: the same call may work later
    UNREADABLE = "unreadable"  # an answer came but could not be read: the outcome is unknown
    LOST = "lost"  # the request was sent but no answer came: the outcome is unknown


@dataclass(frozen=True)
class Meaning:
    """One row of ``TABLE``: the kind of trouble, and the words that tell the user what to
    do about it (``None``: the words of the answer's HTTP status)."""

    kind: Kind
    words: str | None = None


# The one table: what each CodeArts error code and each kind of answer tells the user.
# An ApiError is looked up by its error code ("code DEVCB.00031006"), then by its HTTP
# status ("HTTP 404"), then by the status's class ("HTTP 5xx": 500 and above), then "HTTP";
# a code's row without words keeps its status's. IAM's answers to the bot's login are the
# "IAM ..." rows, looked up the same way.
TABLE: dict[str, Meaning] = {
    # CodeArts error codes ("code <error_code>")
    "code DEVCB.00031006": Meaning(Kind.NOT_FOUND),  # "build task / build record not found"
    # HTTP statuses of CodeArts' answer (or of the gateway in front of it)
    "HTTP 400": Meaning(Kind.REFUSED, "Check the input and the job's parameters."),
    "HTTP 401": Meaning(Kind.AUTH, "The bot's CodeArts credentials are wrong or expired: "
                                   "tell the bot's operator."),
    "HTTP 403": Meaning(Kind.AUTH, "The bot's account has no permission on this build task."),
    "HTTP 404": Meaning(Kind.NOT_FOUND,
                        "No such build task: check the job ID in the bot's config."),
    "HTTP 413": Meaning(Kind.REFUSED, "The request was too large for CodeArts or a proxy in "
                                      "front of it: use shorter parameter values."),
    "HTTP 429": Meaning(Kind.RETRY_LATER,
                        "CodeArts is throttling requests: try again in a minute."),
    "HTTP 2xx": Meaning(Kind.REFUSED, "CodeArts refused the request."),  # an error in a 2xx
    "HTTP 5xx": Meaning(Kind.RETRY_LATER, "CodeArts is having trouble: try again later."),
    "HTTP": Meaning(Kind.REFUSED, ""),  # any other status: CodeArts' own words say it
    # no answer, or one that could not be read (on a 4xx/5xx: the words of its status)
    "no answer": Meaning(Kind.RETRY_LATER, "CodeArts could not be reached: try again later."),
    "unreadable": Meaning(Kind.UNREADABLE, "CodeArts may have changed its API."),
    "answer lost": Meaning(Kind.LOST, "Check CodeArts before trying again; the bot will not "
                                      "send it again by itself."),
    # IAM's answer to the bot's login (nothing was sent to CodeArts)
    "IAM HTTP 5xx": Meaning(Kind.RETRY_LATER,
                            "IAM is unreachable or having trouble: try again later."),
    "IAM HTTP": Meaning(Kind.AUTH, "The bot's IAM user, password, account or project is "
                                   "wrong: tell the bot's operator."),
    "IAM no answer": Meaning(Kind.RETRY_LATER,
                             "IAM is unreachable or having trouble: try again later."),
    # a CodeArtsError raised without a type of its own
    "other": Meaning(Kind.RETRY_LATER, "Try again later."),
}


def meaning(status: int | None, code: str | None = None, *, iam: bool = False) -> Meaning:
    """The row of ``TABLE`` for an answer (``status`` None: no answer came): its CodeArts
    error code's, else its status's; ``iam`` for IAM's answer to a login (its codes are
    not CodeArts', so only its status counts)."""
    where = "IAM " if iam else ""
    if status is None:
        found = TABLE[f"{where}no answer"]
    else:
        family = "5xx" if status >= 500 else f"{status // 100}xx"
        found = (TABLE.get(f"{where}HTTP {status}") or TABLE.get(f"{where}HTTP {family}")
                 or TABLE[f"{where}HTTP"])
    coded = TABLE.get(f"code {code}") if code and not iam else None
    if coded is None:
        return found
    return coded if coded.words is not None else Meaning(coded.kind, found.words)


def words_for(status: int | None, code: str | None = None, *, iam: bool = False) -> str:
    """What the user is told to do about an answer: its row's words (see ``meaning``)."""
    return meaning(status, code, iam=iam).words or ""


def clip(text: str, limit: int) -> str:
    """One line, printable, at most ``limit`` characters: safe to put in a message."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# --------------------------------------------------------------------------- the tree


class CodeArtsError(Exception):
    """Base of every error the client raises; ``str()`` is safe to show a user: its
    text, and every field below that carries what CodeArts or the connection said, is
    masked (``bot.masking``) when the error is made, the one place CodeArts' words pass
    before any of them can reach Slack."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(mask_text(a) if isinstance(a, str) else a for a in args))


class ApiError(CodeArtsError):
    """CodeArts (or its gateway) answered with an error body or an error status."""

    def __init__(self, status: int, error_code: str, error_msg: str,
                 request_id: str | None = None, hint: str | None = None) -> None:
        self.status = status
        self.error_code = mask_text(error_code)
        self.error_msg = clip(mask_text(error_msg), 300)
        self.request_id = request_id
        self.hint = words_for(status, error_code) if hint is None else hint
        super().__init__(describe(self).sentence)


class AuthError(CodeArtsError):
    """IAM refused the bot's login or could not be reached; nothing was sent to CodeArts."""

    def __init__(self, status: int | None, error_code: str, error_msg: str,
                 request_id: str | None = None) -> None:
        self.status = status
        self.error_code = mask_text(error_code)
        self.error_msg = clip(mask_text(error_msg), 300)
        self.request_id = request_id
        self.hint = words_for(status, error_code, iam=True)
        super().__init__(describe(self).sentence)


class BadResponseError(CodeArtsError):
    """The answer was not JSON, or JSON of an unexpected shape (e.g. a proxy's HTML page)."""

    def __init__(self, status: int, request_id: str | None, snippet: str, what: str = "") -> None:
        self.status = status
        self.request_id = request_id
        self.snippet = clip(mask_text(snippet), 120)
        self.what = what or "an answer that is not valid JSON"
        self.hint = words_for(status) if status >= 400 else TABLE["unreadable"].words or ""
        super().__init__(describe(self).sentence)


class NotSentError(CodeArtsError):
    """The request never reached CodeArts (or, for a read, got no answer): safe to retry later."""

    def __init__(self, method: str, path: str, attempts: int, reason: str) -> None:
        self.method = method
        self.path = path
        self.attempts = attempts
        self.reason = mask_text(reason)
        self.hint = words_for(None)
        super().__init__(describe(self).sentence)


class OutcomeUnknownError(CodeArtsError):
    """A run or stop was sent but its answer was lost: it may or may not have happened."""

    def __init__(self, method: str, path: str, reason: str) -> None:
        self.method = method
        self.path = path
        self.reason = mask_text(reason)
        self.hint = TABLE["answer lost"].words or ""
        super().__init__(describe(self).sentence)


# --------------------------------------------------------------------------- the words


@dataclass(frozen=True)
class Told:
    """What the user is told about one error (``describe``).

    ``why``: what happened in a few plain words, CodeArts' code and message included
    (``CodeArts answered HTTP 404 DEVCB.00031006: Build record not found``); ``brief``:
    the same without them (``CodeArts answered HTTP 404``); ``hint``: what to do about
    it (``""``: nothing to add); ``sentence``: the whole sentence, the error's ``str()``;
    ``detail``: what CodeArts or the connection said (its message, the reason, the start
    of the body), else the sentence. ``may_have_acted``: a run or stop may have taken
    effect (no answer, an unreadable answer, a 5xx), decided by how the call ended, never
    by a code's row.
    """

    kind: Kind
    why: str
    brief: str
    hint: str
    sentence: str
    detail: str
    status: int | None
    error_code: str | None
    error_msg: str | None
    request_id: str | None
    may_have_acted: bool


def _brief(exc: CodeArtsError, status: int | None) -> str:
    """What happened, in the fewest words (no code, no message)."""
    if isinstance(exc, NotSentError):
        return "CodeArts did not answer in time"
    if isinstance(exc, BadResponseError):
        return "CodeArts sent an answer buildbot could not read"
    if status is not None:
        return f"CodeArts answered HTTP {status}"
    return "CodeArts could not be asked"


# Each error type's words: (kind, why, sentence), given the error, its brief words,
# what CodeArts said (": message" or "") and the request ID's note.
_Words = tuple[Kind, str, str]


def _api_words(exc: ApiError, brief: str, said: str, note: str) -> _Words:
    code = exc.error_code
    shown = f" {code}" if code not in ("", str(exc.status)) else ""
    why = f"CodeArts answered HTTP {exc.status}{shown}{said}"
    return (meaning(exc.status, exc.error_code).kind, why,
            f"{why}.{f' {exc.hint}' if exc.hint else ''}{note}")


def _auth_words(exc: AuthError, brief: str, said: str, note: str) -> _Words:
    where = f"HTTP {exc.status}" if exc.status is not None else "no answer"
    code = getattr(exc, "error_code", None)
    shown = f" {code}" if code else ""
    return (meaning(exc.status, exc.error_code, iam=True).kind, brief,
            f"The bot could not log in to Huawei Cloud IAM ({where}{shown}{said}). "
            f"{exc.hint}{note}")


def _bad_response_words(exc: BadResponseError, brief: str, said: str, note: str) -> _Words:
    return (TABLE["unreadable"].kind, brief,
            f"CodeArts sent {exc.what} (HTTP {exc.status}). {exc.hint}{note}")


def _not_sent_words(exc: NotSentError, brief: str, said: str, note: str) -> _Words:
    return (meaning(None).kind, brief,
            f"CodeArts could not be reached ({exc.reason}, {exc.attempts} attempts); "
            "nothing was started. Try again later.")


def _lost_words(exc: OutcomeUnknownError, brief: str, said: str, note: str) -> _Words:
    return (TABLE["answer lost"].kind, brief,
            f"The request to CodeArts was sent but no answer came back ({exc.reason}): "
            f"it may or may not have taken effect. {exc.hint}")


_WORDS: tuple[tuple[type[Any], Callable[..., _Words]], ...] = (
    (ApiError, _api_words), (AuthError, _auth_words), (BadResponseError, _bad_response_words),
    (NotSentError, _not_sent_words), (OutcomeUnknownError, _lost_words))


def describe(exc: CodeArtsError) -> Told:
    """Any error the client raises, in the user's words; the errors' own sentences (their
    ``str()``) are the ``sentence`` this writes."""
    status = getattr(exc, "status", None)
    status = status if isinstance(status, int) else None
    rid = request_id_of(exc)
    brief = _brief(exc, status)
    kind, why, sentence, error_msg = _words(exc, brief, rid)
    return Told(
        kind=kind, why=why, brief=brief, hint=_hint(exc), sentence=sentence,
        detail=_detail(exc, error_msg, sentence),
        status=status, error_code=getattr(exc, "error_code", None), error_msg=error_msg,
        request_id=rid, may_have_acted=_may_have_acted(exc))


def _words(exc: CodeArtsError, brief: str,
           rid: str | None) -> tuple[Kind, str, str, str | None]:
    """The error's kind, why, sentence, and what CodeArts said (its message), by the words
    of its type in ``_WORDS``."""
    error_msg = getattr(exc, "error_msg", None)
    words = next((fn for kind, fn in _WORDS if isinstance(exc, kind)), None)
    if words is None:  # raised without a type of its own: its text is all there is
        return TABLE["other"].kind, brief, str(exc), str(exc)
    kind, why, sentence = words(exc, brief, f": {error_msg}" if error_msg else "",
                                _request_id_note(rid))
    return kind, why, sentence, error_msg


def _hint(exc: CodeArtsError) -> str:
    """What to do about the error: its own hint, else the table's words for any error."""
    hint = getattr(exc, "hint", None)
    return hint if isinstance(hint, str) else TABLE["other"].words or ""


def _detail(exc: CodeArtsError, error_msg: str | None, sentence: str) -> str:
    """What CodeArts or the connection said, else the sentence."""
    return (error_msg or getattr(exc, "reason", None) or getattr(exc, "snippet", None)
            or sentence)


def _may_have_acted(exc: CodeArtsError) -> bool:
    """Whether a run or stop may have taken effect: no answer, an unreadable answer, a 5xx."""
    if isinstance(exc, OutcomeUnknownError | BadResponseError):
        return True
    return isinstance(exc, ApiError) and exc.status >= 500


_REQUEST_ID_NOTE = " (request ID "


def _request_id_note(request_id: str | None) -> str:
    """How an error's sentence ends when the answer had a request ID: `` (request ID x)``."""
    return f"{_REQUEST_ID_NOTE}{request_id})" if request_id else ""


def request_id_of(exc: BaseException) -> str | None:
    """The request ID of the answer an error came from (the ``X-Request-Id`` header of
    CodeArts' answer, or IAM's for an AuthError); None when there was no answer (a
    timeout, a connection reset) or the answer had none."""
    rid = getattr(exc, "request_id", None) if isinstance(exc, CodeArtsError) else None
    return rid if isinstance(rid, str) and rid else None


def request_id_in(text: str | None) -> str | None:
    """The request ID at the end of an error's ``str()`` (kept as text, e.g. the note on a
    request whose run answer was lost); None when it ends without one."""
    if not text or not text.endswith(")"):
        return None
    _head, found, rid = text.rpartition(_REQUEST_ID_NOTE)
    return (rid[:-1] or None) if found else None
