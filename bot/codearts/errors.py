"""The CodeArts errors: the exception tree, and what each HTTP status tells the user.

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

Nothing here does I/O or imports httpx: the pure core (``bot.lifecycle``) reads these
errors without depending on the transport.
"""

from __future__ import annotations

_HINTS = {
    400: "Check the input and the job's parameters.",
    401: "The bot's CodeArts credentials are wrong or expired: tell the bot's operator.",
    403: "The bot's account has no permission on this build task.",
    404: "No such build task: check the job ID in the bot's config.",
    413: "The request was too large for CodeArts or a proxy in front of it: "
         "use shorter parameter values.",
    429: "CodeArts is throttling requests: try again in a minute.",
}
_HINT_5XX = "CodeArts is having trouble: try again later."


def hint_for(status: int | None) -> str:
    """A plain sentence saying what an HTTP status means for the person who asked."""
    if status is None:
        return "CodeArts could not be reached: try again later."
    if status >= 500:
        return _HINT_5XX
    return _HINTS.get(status, "")


def clip(text: str, limit: int) -> str:
    """One line, printable, at most ``limit`` characters: safe to put in a message."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class CodeArtsError(Exception):
    """Base of every error this client raises; ``str()`` is safe to show a user."""


class ApiError(CodeArtsError):
    """CodeArts (or its gateway) answered with an error body or an error status."""

    def __init__(self, status: int, error_code: str, error_msg: str,
                 request_id: str | None = None, hint: str | None = None) -> None:
        self.status = status
        self.error_code = error_code
        self.error_msg = clip(error_msg, 300)
        self.request_id = request_id
        self.hint = hint_for(status) if hint is None else hint
        super().__init__(self._sentence())

    def _sentence(self) -> str:
        code = f" {self.error_code}" if self.error_code not in ("", str(self.status)) else ""
        msg = f": {self.error_msg}" if self.error_msg else ""
        text = f"CodeArts answered HTTP {self.status}{code}{msg}."
        if self.hint:
            text += f" {self.hint}"
        return text + _request_id_note(self.request_id)


class AuthError(CodeArtsError):
    """IAM refused the bot's login or could not be reached; nothing was sent to CodeArts."""

    def __init__(self, status: int | None, error_code: str, error_msg: str,
                 request_id: str | None = None) -> None:
        self.status = status
        self.error_code = error_code
        self.error_msg = clip(error_msg, 300)
        self.request_id = request_id
        self.hint = _auth_hint(status)
        where = f"HTTP {status}" if status is not None else "no answer"
        code = f" {error_code}" if error_code else ""
        msg = f": {self.error_msg}" if self.error_msg else ""
        super().__init__(f"The bot could not log in to Huawei Cloud IAM ({where}{code}{msg}). "
                         f"{self.hint}{_request_id_note(request_id)}")


def _auth_hint(status: int | None) -> str:
    if status is None or status >= 500:
        return "IAM is unreachable or having trouble: try again later."
    return "The bot's IAM user, password, account or project is wrong: tell the bot's operator."


class BadResponseError(CodeArtsError):
    """The answer was not JSON, or JSON of an unexpected shape (e.g. a proxy's HTML page)."""

    def __init__(self, status: int, request_id: str | None, snippet: str, what: str = "") -> None:
        self.status = status
        self.request_id = request_id
        self.snippet = clip(snippet, 120)
        self.hint = hint_for(status) if status >= 400 else "CodeArts may have changed its API."
        what = what or "an answer that is not valid JSON"
        super().__init__(f"CodeArts sent {what} (HTTP {status}). {self.hint}"
                         f"{_request_id_note(request_id)}")


class NotSentError(CodeArtsError):
    """The request never reached CodeArts (or, for a read, got no answer): safe to retry later."""

    def __init__(self, method: str, path: str, attempts: int, reason: str) -> None:
        self.method = method
        self.path = path
        self.attempts = attempts
        self.reason = reason
        self.hint = hint_for(None)
        super().__init__(f"CodeArts could not be reached ({reason}, {attempts} attempts); "
                         "nothing was started. Try again later.")


class OutcomeUnknownError(CodeArtsError):
    """A run or stop was sent but its answer was lost: it may or may not have happened."""

    def __init__(self, method: str, path: str, reason: str) -> None:
        self.method = method
        self.path = path
        self.reason = reason
        self.hint = "Check CodeArts before trying again; the bot will not send it again by itself."
        super().__init__(f"The request to CodeArts was sent but no answer came back ({reason}): "
                         f"it may or may not have taken effect. {self.hint}")


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
