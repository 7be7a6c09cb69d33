"""How the bot proves who it is to CodeArts: three ``httpx.Auth`` classes.

* ``TokenAuth``: a ready IAM token, sent as ``X-Auth-Token``.
* ``IamPasswordAuth``: logs in to IAM (``POST /v3/auth/tokens``, project scope
  by name), caches the token from ``X-Subject-Token`` until shortly before its
  ``expires_at``, one login at a time, and on a 401 from CodeArts logs in again
  once and re-sends once (the gateway rejected the request, so nothing ran).
* ``AkSkAuth``: ``SDK-HMAC-SHA256`` request signing as huaweicloud-sdk-core's
  ``signer.py`` does it, plus ``X-Project-Id``.

None of them lets a secret reach a repr, a log line or an error message.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from bot.codearts.answers import error_fields, parse_time
from bot.codearts.client import DEFAULT_TIMEOUT, load_json
from bot.codearts.errors import AuthError

log = logging.getLogger(__name__)

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
# Headers we sign: the ones that identify the request. Transport headers
# (Connection, Accept-Encoding, User-Agent, Content-Length) are left out
# because a proxy may rewrite them; the gateway checks only what SignedHeaders lists.
SIGNED_HEADERS = ("content-type", "host", "x-project-id", "x-sdk-date")
# Log in to IAM again this many seconds before the token expires (tokens last 24 hours).
RENEW_BEFORE = 600.0


_SECRET_HEADER = re.compile(
    r"(\(b'(?:x-subject-token|x-auth-token|authorization|proxy-authorization)', b')[^']*(')",
    re.IGNORECASE)
_HTTPCORE_LOGGERS = ("httpcore.http11", "httpcore.http2", "httpcore.connection", "httpcore.proxy")


class RedactSecretHeaders(logging.Filter):
    """Blanks secret header values in httpcore's DEBUG traces.

    httpcore logs every response's headers at DEBUG, and IAM's answer carries
    the token in ``X-Subject-Token``; without this, turning on DEBUG would leak it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "b'" in text and _SECRET_HEADER.search(text):
            record.msg, record.args = _SECRET_HEADER.sub(r"\1[redacted]\2", text), ()
        return True


def install_log_redaction() -> None:
    """Attach the filter to httpcore's loggers once; safe to call many times."""
    for name in _HTTPCORE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecretHeaders) for f in logger.filters):
            logger.addFilter(RedactSecretHeaders())


class TokenAuth(httpx.Auth):
    """A fixed IAM token (``CODEARTS_TOKEN``); a 401 is the operator's to fix."""

    def __init__(self, token: str | SecretStr) -> None:
        self._token = token if isinstance(token, SecretStr) else SecretStr(token)

    def __repr__(self) -> str:
        return "TokenAuth(token='**********')"

    def secret_values(self) -> list[str]:
        """What must never be repeated anywhere (see ``CodeArtsClient`` error scrubbing)."""
        return [self._token.get_secret_value()]

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["X-Auth-Token"] = self._token.get_secret_value()
        yield request


# --------------------------------------------------------------------------- IAM


class IamPasswordAuth(httpx.Auth):
    """Project-scoped IAM token from a password login, cached and renewed; thread-safe."""

    def __init__(self, endpoint: str, *, user: str, password: str | SecretStr, domain: str,
                 project: str, http: httpx.Client | None = None,
                 timeout: httpx.Timeout | float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        install_log_redaction()  # IAM's answer carries the token in a header
        self.endpoint = endpoint.rstrip("/")
        self.user, self.domain, self.project = user, domain, project
        self._password = password if isinstance(password, SecretStr) else SecretStr(password)
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client()
        self._timeout = DEFAULT_TIMEOUT if timeout is None else httpx.Timeout(timeout)
        self._clock = clock
        self._lock = threading.Lock()
        self._token: SecretStr | None = None
        self._valid_until = 0.0

    def __repr__(self) -> str:
        return (f"IamPasswordAuth(endpoint={self.endpoint!r}, user={self.user!r}, "
                f"domain={self.domain!r}, project={self.project!r}, password='**********')")

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._current_token()
        request.headers["X-Auth-Token"] = token
        response = yield request
        if response.status_code == 401:
            log.info("CodeArts answered 401 to %s %s: logging in to IAM again and retrying once",
                     request.method, request.url.path)
            self._forget(token)
            request.headers["X-Auth-Token"] = self._current_token()
            yield request

    def _current_token(self) -> str:
        """The cached token, or a fresh one; the lock makes concurrent callers share one login."""
        with self._lock:
            if self._token is None or self._clock() >= self._valid_until:
                self._token, self._valid_until = self._login()
            return self._token.get_secret_value()

    def _forget(self, token: str) -> None:
        """Drop the token CodeArts refused, unless another thread has already replaced it."""
        with self._lock:
            if self._token is not None and self._token.get_secret_value() == token:
                self._token = None

    def _login_body(self) -> dict[str, Any]:
        user = {"name": self.user, "password": self._password.get_secret_value(),
                "domain": {"name": self.domain}}
        return {"auth": {"identity": {"methods": ["password"], "password": {"user": user}},
                         "scope": {"project": {"name": self.project}}}}

    def _login(self) -> tuple[SecretStr, float]:
        started = time.monotonic()
        try:
            response = self._http.post(self.endpoint + "/v3/auth/tokens", json=self._login_body(),
                                       timeout=self._timeout)
        except httpx.TransportError as exc:
            log.warning("IAM login for %s failed: %s", self.user, type(exc).__name__)
            raise AuthError(None, "", f"IAM could not be reached ({type(exc).__name__})") from None
        log.info("IAM POST /v3/auth/tokens -> %d in %.0f ms (request id %s)", response.status_code,
                 (time.monotonic() - started) * 1000, response.headers.get("X-Request-Id", "-"))
        token = response.headers.get("X-Subject-Token")
        if not response.is_success or not token:
            raise self._login_error(response)
        return SecretStr(token), self._renew_at(response)

    def _login_error(self, response: httpx.Response) -> AuthError:
        """The error of a failed login, read as the SDK reads errors (``error_fields``)."""
        try:
            data: Any = load_json(response)
        except ValueError:
            data = None
        code, msg = error_fields(response.status_code, response.text, data)
        if response.is_success:
            code, msg = "", "IAM answered without an X-Subject-Token header"
        return AuthError(response.status_code, code, self._scrub(msg),
                         response.headers.get("X-Request-Id") or None)

    def secret_values(self) -> list[str]:
        token = self._token
        return [self._password.get_secret_value()] + ([token.get_secret_value()] if token else [])

    def _scrub(self, text: str) -> str:
        secret = self._password.get_secret_value()
        return text.replace(secret, "**********") if secret else text

    def _renew_at(self, response: httpx.Response) -> float:
        """When to log in again: ``RENEW_BEFORE`` ahead of expiry (at most half the lifetime)."""
        now = self._clock()
        try:
            expires = parse_time(load_json(response)["token"]["expires_at"])
        except (ValueError, KeyError, TypeError):
            expires = None
        if expires is None:
            log.warning("IAM token has no readable expires_at: renewing it within the hour")
            return now + 3600.0
        lifetime = expires.timestamp() - now
        return now + lifetime - min(RENEW_BEFORE, max(lifetime, 0.0) / 2)


# --------------------------------------------------------------------------- AK/SK


def _encode(text: str) -> str:
    return quote(text, safe="~")


def canonical_uri(path: str) -> str:
    """Each path segment percent-encoded, with a trailing slash (as the SDK signer does)."""
    uri = "/".join(_encode(segment) for segment in path.split("/"))
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(params: Iterable[tuple[str, str]]) -> str:
    """Pairs sorted (by key, then value), each side percent-encoded (space as ``%20``, only
    ``~`` and unreserved ASCII left as is), ``k=v`` joined by ``&``: the SDK signer's
    ``_process_canonical_query_string``, which is also the query the SDK sends."""
    return "&".join(f"{_encode(k)}={_encode(str(v))}" for k, v in sorted(params))


def canonical_request(method: str, path: str, params: Iterable[tuple[str, str]],
                      headers: Mapping[str, str], body: bytes) -> tuple[str, list[str]]:
    """The canonical request string and the sorted signed-header names."""
    lowered = {k.lower(): v.strip() for k, v in headers.items() if "_" not in k}
    names = sorted(lowered)
    lines = [method.upper(), canonical_uri(path), canonical_query(params),
             "".join(f"{n}:{lowered[n]}\n" for n in names), ";".join(names),
             hashlib.sha256(body).hexdigest()]
    return "\n".join(lines), names


def signature(method: str, path: str, params: Iterable[tuple[str, str]],
              headers: Mapping[str, str], body: bytes, sk: str) -> tuple[str, list[str]]:
    """Hex HMAC-SHA256 of the string to sign, keyed with the SK; and the signed headers."""
    canonical, names = canonical_request(method, path, params, headers, body)
    date = next(v for k, v in headers.items() if k.lower() == "x-sdk-date")
    to_sign = f"{ALGORITHM}\n{date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    return hmac.new(sk.encode(), to_sign.encode(), hashlib.sha256).hexdigest(), names


class AkSkAuth(httpx.Auth):
    """Signs each request with the AK/SK (``SDK-HMAC-SHA256``) and names the project."""

    requires_request_body = True

    def __init__(self, ak: str | SecretStr, sk: str | SecretStr, project_id: str | None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._ak = ak if isinstance(ak, SecretStr) else SecretStr(ak)
        self._sk = sk if isinstance(sk, SecretStr) else SecretStr(sk)
        self.project_id = project_id
        self._clock = clock

    def __repr__(self) -> str:
        return f"AkSkAuth(ak='****', sk='**********', project_id={self.project_id!r})"

    def secret_values(self) -> list[str]:
        return [self._sk.get_secret_value(), self._ak.get_secret_value()]

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["X-Sdk-Date"] = time.strftime(DATE_FORMAT, time.gmtime(self._clock()))
        if self.project_id:
            request.headers["X-Project-Id"] = self.project_id
        params = request.url.params.multi_items()
        if params:  # send the query exactly as it is signed (httpx would write a space as '+')
            request.url = request.url.copy_with(query=canonical_query(params).encode("ascii"))
        signed = {k: request.headers[k] for k in SIGNED_HEADERS if k in request.headers}
        sig, names = signature(request.method, request.url.path, params, signed,
                               request.content, self._sk.get_secret_value())
        request.headers["Authorization"] = (f"{ALGORITHM} Access={self._ak.get_secret_value()}, "
                                            f"SignedHeaders={';'.join(names)}, Signature={sig}")
        yield request
